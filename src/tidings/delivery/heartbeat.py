"""Worker heartbeats: each delivery worker process writes where it runs, how fast it has been
sending and the state of its circuit breakers every few seconds (``GET /system/status`` lists
the workers seen in the last minute)."""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections import deque
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from tidings.providers.models import WorkerBeat

RATE_WINDOW = 60.0  # seconds the reported rate is averaged over
FORGET_AFTER_DAYS = 7  # rows of workers not seen for this long are removed


class Heartbeat:
    def __init__(self, started_at: datetime) -> None:
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.id = f"{self.host}:{self.pid}:{secrets.token_hex(3)}"
        self.started_at = started_at
        self.sent = 0
        self._recent: deque[tuple[float, int]] = deque()

    def count_sent(self, number: int) -> None:
        self.sent += number
        self._recent.append((time.monotonic(), number))

    @property
    def rate_per_second(self) -> float:
        horizon = time.monotonic() - RATE_WINDOW
        while self._recent and self._recent[0][0] < horizon:
            self._recent.popleft()
        return round(sum(n for _, n in self._recent) / RATE_WINDOW, 1)

    async def beat(self, session: AsyncSession, circuits: dict[str, str], now: datetime) -> None:
        """Write this worker's row (and forget long-gone workers). Commits."""
        dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
        values = {
            "seen_at": now,
            "sent": self.sent,
            "rate_per_second": self.rate_per_second,
            "circuits": circuits,
        }
        await session.execute(
            dialect.insert(WorkerBeat)
            .values(id=self.id, host=self.host, pid=self.pid, started_at=self.started_at, **values)
            .on_conflict_do_update(index_elements=["id"], set_=values)
        )
        forgotten = now - timedelta(days=FORGET_AFTER_DAYS)
        await session.execute(delete(WorkerBeat).where(WorkerBeat.seen_at < forgotten))
        await session.commit()
