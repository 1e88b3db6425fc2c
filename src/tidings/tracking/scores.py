"""Keeping engagement scores current: a score only rises when events arrive, so once an hour
every subscriber's sum is decayed to the present in one statement, and segments and routing on
``engagement_score`` see today's value (see ``engagement`` for the formula)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import Numeric, cast, func, literal, update
from sqlalchemy.ext.asyncio import AsyncSession

from tidings.audience.models import Subscriber
from tidings.db.engine import Database
from tidings.db.types import UTCDateTime, utcnow
from tidings.logs import get_logger
from tidings.tracking.engagement import HALF_LIFE, SCALE

log = get_logger(__name__)
REFRESH_SECONDS = 3600.0


async def refresh_scores(session: AsyncSession, now: datetime) -> int:
    """Decay every positive sum to ``now`` and recompute the scores; returns how many
    subscribers changed. Commits. Running it twice at once is harmless: the second finds
    nothing elapsed."""
    elapsed = _seconds_between(session, Subscriber.engaged_at, now)
    decayed = Subscriber.engagement_sum * func.power(0.5, elapsed / HALF_LIFE.total_seconds())
    score = func.round(cast(100.0 * (1.0 - func.exp(-decayed / SCALE)), Numeric), 1)
    result = await session.execute(
        update(Subscriber)
        .where(Subscriber.engagement_sum > 0, Subscriber.engaged_at < now)
        .values(engagement_sum=decayed, engagement_score=score, engaged_at=now)
        .execution_options(synchronize_session=False)
    )
    await session.commit()
    return int(getattr(result, "rowcount", 0) or 0)


def _seconds_between(session: AsyncSession, column: Any, now: datetime) -> Any:
    moment = literal(now, UTCDateTime())
    if session.get_bind().dialect.name == "postgresql":
        return func.extract("epoch", moment - column)
    return (func.julianday(moment) - func.julianday(column)) * 86400.0


async def run_score_refresh(
    database: Database, stop: asyncio.Event, clock: Callable[[], datetime] = utcnow
) -> None:
    """Refresh the scores every hour until ``stop`` is set."""
    while not stop.is_set():
        try:
            async with database.sessions() as session:
                changed = await refresh_scores(session, clock())
            log.info("engagement.scores_refreshed", subscribers=changed)
        except Exception:
            log.exception("engagement.refresh_failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), REFRESH_SECONDS)
