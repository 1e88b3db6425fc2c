"""The base of the fake provider APIs: a Starlette app on a free local port, served by uvicorn in
a thread of its own (so that worker subprocesses reach it as well as the test), recording what it
accepted and when, and answering with injected faults when a test asks for them.

A fake checks what the real provider checks (authentication, body schema, batch limits) and
answers as the provider documents it; a subclass gives the routes (``routes``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from tests.live_server import free_port


@dataclass(frozen=True)
class Accepted:
    """One message the fake took: who it was for, the id it gave, when (monotonic seconds)."""

    recipient: str
    message_id: str
    at: float
    payload: Any = None  # what the provider got for this message (its JSON, or the MIME)


@dataclass
class Fault:
    status: int = 503
    retry_after: str | None = None
    delay: float = 0.0  # seconds to hold the request before answering (a timeout test)
    body: Any = field(default_factory=lambda: {"message": "injected fault"})


class FakeProvider:
    """Start with ``with FakeX() as fake:``; ``fake.url`` is its base URL."""

    def __init__(self) -> None:
        self.accepted: list[Accepted] = []
        self.requests = 0  # every request that reached a route, faults included
        self._faults: deque[Fault] = deque()
        self._always: Fault | None = None
        self._lock = threading.Lock()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def routes(self) -> list[BaseRoute]:
        raise NotImplementedError

    # Faults -----------------------------------------------------------------------------------

    def fail_next(
        self,
        status: int = 503,
        times: int = 1,
        *,
        retry_after: str | None = None,
        delay: float = 0.0,
        body: Any = None,
    ) -> None:
        """Answer the next ``times`` requests with ``status`` (after ``delay`` seconds)."""
        fault = Fault(status, retry_after, delay, body or {"message": f"injected {status}"})
        with self._lock:
            self._faults.extend([fault] * times)

    def fail_always(self, status: int = 503, *, delay: float = 0.0) -> None:
        """Answer every request from now on with ``status`` (until ``recover``)."""
        self._always = Fault(status, None, delay, {"message": f"injected {status}"})

    def recover(self) -> None:
        self._always = None
        with self._lock:
            self._faults.clear()

    def reset(self) -> None:
        """Forget every fault, acceptance and request: one server can serve a module's tests."""
        self.recover()
        with self._lock:
            self.accepted.clear()
            self.requests = 0

    async def injected_fault(self) -> Response | None:
        """The fault to answer this request with, if one is due (call first in a handler)."""
        with self._lock:
            self.requests += 1
            fault = self._faults.popleft() if self._faults else self._always
        if fault is None:
            return None
        if fault.delay:
            await asyncio.sleep(fault.delay)
        headers = {"Retry-After": fault.retry_after} if fault.retry_after else None
        return JSONResponse(fault.body, status_code=fault.status, headers=headers)

    def record(self, recipient: str, message_id: str, payload: Any = None) -> None:
        with self._lock:
            self.accepted.append(Accepted(recipient, message_id, time.monotonic(), payload))

    # What was received ------------------------------------------------------------------------

    def recipients(self) -> list[str]:
        with self._lock:
            return [a.recipient for a in self.accepted]

    def most_in_any_window(self, seconds: float = 1.0) -> int:
        """The most messages accepted within any window of ``seconds`` (a sliding window)."""
        with self._lock:
            times = sorted(a.at for a in self.accepted)
        most, start = 0, 0
        for end, moment in enumerate(times):
            while moment - times[start] >= seconds:
                start += 1
            most = max(most, end - start + 1)
        return most

    # Serving ----------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        config = uvicorn.Config(
            Starlette(routes=self.routes()),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="off",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"{type(self).__name__} did not start on port {self.port}")
            time.sleep(0.01)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)


def error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"message": message, **extra}, status_code=status)
