"""Batched event ingestion: tracking endpoints and webhooks hand events to an ``EventSink``,
which answers at once and writes them in bulk every ``interval`` seconds (or sooner, once
``batch`` events wait), so a burst of opens costs the database a few statements, not one
transaction per request.

Nothing is lost on a graceful shutdown: ``close`` writes what is left. Events that cannot be
written (the database is down) stay buffered and are tried again, up to ``capacity``; past that
the newest are refused (``add`` returns False) so that memory stays bounded and the caller can
answer 503 instead of pretending.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence

from tidings.logs import get_logger
from tidings.tracking.events import InboundEvent

log = get_logger(__name__)

Writer = Callable[[Sequence[InboundEvent]], Awaitable[None]]


class EventSink:
    def __init__(
        self,
        write: Writer,
        interval: float = 0.2,
        batch: int = 1000,
        capacity: int = 200_000,
    ) -> None:
        self._write, self._interval, self._batch, self._capacity = write, interval, batch, capacity
        self._pending: list[InboundEvent] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def add(self, event: InboundEvent) -> bool:
        """Buffer one event; False if the buffer is full (the database has been away a while)."""
        if len(self._pending) >= self._capacity:
            return False
        self._pending.append(event)
        if len(self._pending) >= self._batch:
            self._wake.set()
        return True

    async def write_now(self, events: Sequence[InboundEvent]) -> None:
        """Write these events before returning, unbuffered: for webhooks, whose providers
        retry what was not acknowledged, so an answer must mean "stored"."""
        for start in range(0, len(events), self._batch):
            await self._write(events[start : start + self._batch])

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        """Stop the flusher and write everything still buffered."""
        self._closing = True
        if self._task is not None:
            self._wake.set()
            await self._task
            self._task = None
        await self.flush()

    async def flush(self) -> None:
        """Write what is buffered now; on failure it stays buffered, and the error is raised."""
        while self._pending:
            taken, self._pending = self._pending[: self._batch], self._pending[self._batch :]
            try:
                await self._write(taken)
            except BaseException:
                self._pending[:0] = taken
                raise

    async def _run(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            try:
                await self.flush()
            except Exception:  # kept buffered; the next round tries again
                log.exception("events.flush_failed", waiting=len(self._pending))
                await asyncio.sleep(min(self._interval * 10, 5.0))
