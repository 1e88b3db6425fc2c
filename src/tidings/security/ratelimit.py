"""Rate limits for the unauthenticated endpoints, with the limits library (moving window).

In-memory by default (per process); point TIDINGS_RATE_LIMIT_STORAGE at Redis to share the
counts between processes.
"""

from __future__ import annotations

import time

from limits import RateLimitItem, parse_many
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string


class RateLimits:
    def __init__(self, storage_uri: str) -> None:
        self._limiter = MovingWindowRateLimiter(storage_from_string(storage_uri))

    async def retry_after(self, rules: str, *identifiers: str) -> int | None:
        """Count one hit against every rule; None if allowed, else seconds until it would be."""
        for item in parse_many(rules):
            if not await self._limiter.hit(item, *identifiers):
                return await self._wait(item, identifiers)
        return None

    async def _wait(self, item: RateLimitItem, identifiers: tuple[str, ...]) -> int:
        stats = await self._limiter.get_window_stats(item, *identifiers)
        return max(1, int(stats.reset_time - time.time()))
