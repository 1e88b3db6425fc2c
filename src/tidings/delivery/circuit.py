"""A circuit breaker per provider, in each worker process: a provider that keeps failing stops
getting traffic at once, and gets a probe after a cool-down instead of the whole queue.

closed ──(``failures_in_row`` transient failures in a row, or an error rate of at least
``error_rate`` over the last ``window`` results)──▶ open ──(``cool_down`` seconds)──▶ half-open
half-open ──(a probe succeeds)──▶ closed;  half-open ──(a probe fails)──▶ open again.

A provider's ``Retry-After`` (HTTP 429) rests it for that long without counting as a failure.
Each process keeps its own breakers: a failing provider fails for every worker alike, so each
notices within one batch, and no shared state is needed on the hot path.
"""

from __future__ import annotations

import enum
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


class CircuitState(enum.StrEnum):
    closed = "closed"
    open = "open"
    half_open = "half_open"


@dataclass(frozen=True)
class BreakerPolicy:
    failures_in_row: int = 5
    error_rate: float = 0.5
    window: int = 20  # results the error rate is computed over (and the least it needs)
    cool_down: float = 30.0  # seconds open before a probe
    probes: int = 1  # messages let through while half-open


class CircuitBreaker:
    def __init__(self, policy: BreakerPolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy, self._clock = policy, clock
        self._state = CircuitState.closed
        self._in_row = 0
        self._recent: deque[bool] = deque(maxlen=policy.window)  # True: a failure
        self._opened_at = 0.0
        self._probes_out = 0
        self._resting_until = 0.0

    @property
    def state(self) -> CircuitState:
        if (
            self._state == CircuitState.open
            and self._clock() >= self._opened_at + self.policy.cool_down
        ):
            self._state, self._probes_out = CircuitState.half_open, 0
        return self._state

    def available(self) -> int:
        """How many messages may go to the provider now (0: none; a large number: no limit)."""
        if self._clock() < self._resting_until:
            return 0
        state = self.state
        if state == CircuitState.open:
            return 0
        if state == CircuitState.half_open:
            return max(0, self.policy.probes - self._probes_out)
        return 1 << 30

    def taken(self, count: int) -> None:
        """``count`` messages were handed to the provider (counts the probes while half-open)."""
        if self.state == CircuitState.half_open:
            self._probes_out += count

    def opens_at(self) -> float | None:
        """When the provider can be tried again (monotonic seconds), if it cannot now."""
        if self._clock() < self._resting_until:
            return self._resting_until
        if self.state == CircuitState.open:
            return self._opened_at + self.policy.cool_down
        return None

    def record(self, succeeded: int, failed: int) -> None:
        """The results of one send call: messages accepted (or refused for their own reasons)
        and messages that failed transiently (the provider's fault)."""
        if self.state == CircuitState.half_open:
            if failed:
                self._open()
            elif succeeded:
                self._close()
            return
        self._recent.extend([False] * succeeded + [True] * failed)
        self._in_row = 0 if succeeded else self._in_row + failed
        window_full = len(self._recent) >= self.policy.window
        rate = sum(self._recent) / len(self._recent) if self._recent else 0.0
        if self._in_row >= self.policy.failures_in_row or (
            window_full and rate >= self.policy.error_rate
        ):
            self._open()

    def rest(self, seconds: float) -> None:
        """The provider asked us to wait (Retry-After): no traffic for that long."""
        self._resting_until = max(self._resting_until, self._clock() + seconds)

    def _open(self) -> None:
        self._state, self._opened_at = CircuitState.open, self._clock()
        self._in_row = 0
        self._recent.clear()

    def _close(self) -> None:
        self._state, self._in_row = CircuitState.closed, 0
        self._recent.clear()
