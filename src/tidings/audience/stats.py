"""Audience statistics (seed 002's GET /subscribers/stats), each figure one grouped query."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Date, Select, cast, func, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from tidings.audience.models import Subscriber, SubscriberStatus, Topic, TopicSubscription
from tidings.db.types import utcnow

CHURNED = (SubscriberStatus.unsubscribed, SubscriberStatus.bounced, SubscriberStatus.complained)


@dataclass(frozen=True)
class DayCount:
    day: date
    joined: int
    left: int


@dataclass(frozen=True)
class AudienceStats:
    total: int
    by_status: dict[str, int]
    growth: list[DayCount]
    by_topic: list[dict[str, Any]]
    by_tag: dict[str, int]
    churn_days: int
    churned: dict[str, int]
    churn_rate: float
    generated_at: datetime


def _day(column: Any, dialect: str) -> Any:
    """The UTC calendar day of a timestamp column."""
    if dialect == "postgresql":
        return cast(func.timezone("UTC", column), Date)
    return func.date(column)


async def audience_stats(session: AsyncSession, days: int = 30) -> AudienceStats:
    dialect = session.get_bind().dialect.name
    now = utcnow()
    since = now - timedelta(days=days)
    by_status = {s.value: 0 for s in SubscriberStatus}
    for status, count in await session.execute(
        select(Subscriber.status, func.count()).group_by(Subscriber.status)
    ):
        by_status[status] = count
    churned = {s.value: 0 for s in CHURNED}
    for status, count in await session.execute(
        select(Subscriber.status, func.count())
        .where(
            Subscriber.status.in_([s.value for s in CHURNED]), Subscriber.status_changed_at >= since
        )
        .group_by(Subscriber.status)
    ):
        churned[status] = count
    left_total = sum(churned.values())
    base = by_status[SubscriberStatus.active] + left_total
    return AudienceStats(
        total=sum(v for k, v in by_status.items() if k != SubscriberStatus.erased),
        by_status=by_status,
        growth=await _growth(session, dialect, since, days),
        by_topic=await _by_topic(session),
        by_tag=await _by_tag(session, dialect),
        churn_days=days,
        churned=churned,
        churn_rate=round(left_total / base, 4) if base else 0.0,
        generated_at=now,
    )


async def _growth(
    session: AsyncSession, dialect: str, since: datetime, days: int
) -> list[DayCount]:
    joined_day = _day(Subscriber.created_at, dialect)
    joined = await _per_day(
        session,
        select(joined_day, func.count()).where(Subscriber.created_at >= since).group_by(joined_day),
    )
    left_day = _day(Subscriber.status_changed_at, dialect)
    left = await _per_day(
        session,
        select(left_day, func.count())
        .where(
            Subscriber.status.in_([s.value for s in CHURNED]), Subscriber.status_changed_at >= since
        )
        .group_by(left_day),
    )
    first = since.date()
    series = [first + timedelta(days=i) for i in range(days + 1)]
    return [DayCount(d, _at(joined, d), _at(left, d)) for d in series]


async def _per_day(session: AsyncSession, query: Select[Any, int]) -> dict[Any, int]:
    return {day: count for day, count in await session.execute(query)}


def _at(counts: dict[Any, int], day: date) -> int:
    # SQLite returns days as text, PostgreSQL as dates.
    return counts.get(day, counts.get(day.isoformat(), 0))


async def _by_topic(session: AsyncSession) -> list[dict[str, Any]]:
    rows = await session.execute(
        select(Topic.id, Topic.name, TopicSubscription.status, func.count(TopicSubscription.id))
        .outerjoin(TopicSubscription, TopicSubscription.topic_id == Topic.id)
        .group_by(Topic.id, Topic.name, TopicSubscription.status)
        .order_by(Topic.id)
    )
    topics: dict[int, dict[str, Any]] = {}
    for topic_id, name, status, count in rows:
        entry = topics.setdefault(
            topic_id,
            {"topic_id": topic_id, "name": name, "active": 0, "pending": 0, "unsubscribed": 0},
        )
        if status is not None:
            entry[status] = count
    return list(topics.values())


async def _by_tag(session: AsyncSession, dialect: str) -> dict[str, int]:
    if dialect == "postgresql":
        tag = func.unnest(Subscriber.tags).label("tag")
        inner = select(tag).where(Subscriber.status != SubscriberStatus.erased).subquery()
    else:
        each = func.json_each(Subscriber.tags).table_valued("value")
        inner = (
            select(each.c.value.label("tag"))
            .select_from(Subscriber)
            .join(each, true())
            .where(Subscriber.status != SubscriberStatus.erased)
            .subquery()
        )
    rows = await session.execute(
        select(inner.c.tag, func.count()).group_by(inner.c.tag).order_by(inner.c.tag)
    )
    return {str(t): int(c) for t, c in rows}
