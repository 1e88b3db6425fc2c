"""Campaign statistics, a subscriber's history and daily trends, read from ``deliveries``,
``campaign_runs`` and ``events``.

Counts of people are unique per message (delivery): a message opened five times is one open,
and one that only a prefetcher or a scanner opened is not an open at all (it is counted in
``opened_by_machines``). Rates are over messages sent.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Date, String, case, cast, distinct, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from tidings.audience.subscribers import find_subscriber
from tidings.campaigns.models import PENDING, Campaign, CampaignRun, Delivery, DeliveryStatus
from tidings.campaigns.service import get_campaign
from tidings.tracking.events import BounceKind, EventType
from tidings.tracking.models import Event

E = EventType


async def campaign_stats(session: AsyncSession, campaign_id: int) -> dict[str, Any]:
    campaign = await get_campaign(session, campaign_id)
    return (await _stats_of(session, [campaign]))[0]


async def all_campaign_stats(
    session: AsyncSession, *, limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    total = int(await session.scalar(select(func.count()).select_from(Campaign)) or 0)
    campaigns = list(
        await session.scalars(select(Campaign).order_by(Campaign.id).limit(limit).offset(offset))
    )
    return await _stats_of(session, campaigns), total


async def _stats_of(session: AsyncSession, campaigns: list[Campaign]) -> list[dict[str, Any]]:
    ids = [c.id for c in campaigns]
    if not ids:
        return []
    runs = await _run_totals(session, ids)
    events = await _event_counts(session, ids)
    pending = await _pending(session, ids)
    return [_stats(c, runs.get(c.id, {}), events.get(c.id, Counter()), pending) for c in campaigns]


async def _run_totals(session: AsyncSession, ids: list[int]) -> dict[int, dict[str, int]]:
    rows = await session.execute(
        select(
            CampaignRun.campaign_id,
            func.count(),
            func.coalesce(func.sum(CampaignRun.total), 0),
            func.coalesce(func.sum(CampaignRun.sent), 0),
            func.coalesce(func.sum(CampaignRun.failed), 0),
            func.coalesce(func.sum(CampaignRun.suppressed), 0),
        )
        .where(CampaignRun.campaign_id.in_(ids))
        .group_by(CampaignRun.campaign_id)
    )
    return {
        campaign_id: {
            "runs": int(runs), "recipients": int(total), "sent": int(sent),
            "failed": int(failed), "suppressed": int(suppressed),
        }
        for campaign_id, runs, total, sent, failed, suppressed in rows
    }  # fmt: skip


async def _pending(session: AsyncSession, ids: list[int]) -> dict[int, int]:
    rows = await session.execute(
        select(CampaignRun.campaign_id, func.count())
        .select_from(Delivery)
        .join(CampaignRun, CampaignRun.id == Delivery.run_id)
        .where(CampaignRun.campaign_id.in_(ids), PENDING)
        .group_by(CampaignRun.campaign_id)
    )
    return {campaign_id: int(count) for campaign_id, count in rows}


async def _event_counts(session: AsyncSession, ids: list[int]) -> dict[int, Counter[str]]:
    """Per campaign: messages (distinct deliveries) and totals per event type, people and
    machines apart; unsubscribes are counted by subscriber."""
    human = Event.machine.is_(False)
    rows = await session.execute(
        select(
            Event.campaign_id,
            Event.type,
            func.count(),
            func.count(distinct(case((human, Event.delivery_id)))),
            func.count(distinct(Event.delivery_id)),
            func.count(distinct(Event.subscriber_id)),
            func.count(distinct(case((Event.bounce == BounceKind.hard.value, Event.delivery_id)))),
        )
        .where(Event.campaign_id.in_(ids))
        .group_by(Event.campaign_id, Event.type)
    )
    counts: dict[int, Counter[str]] = {}
    for campaign_id, kind, total, by_people, messages, subscribers, hard in rows:
        if campaign_id is None:
            continue
        counter = counts.setdefault(campaign_id, Counter())
        counter[f"{kind}:total"] = int(total)
        counter[f"{kind}:people"] = int(by_people)
        counter[f"{kind}:messages"] = int(messages)
        counter[f"{kind}:subscribers"] = int(subscribers)
        counter[f"{kind}:hard"] = int(hard)
    return counts


def _stats(
    campaign: Campaign, runs: dict[str, int], events: Counter[str], pending: dict[int, int]
) -> dict[str, Any]:
    sent = runs.get("sent", 0)
    opened, clicked = events["opened:people"], events["clicked:people"]
    counts = {
        "delivered": events["delivered:messages"],
        "opened": opened,
        "opened_total": events["opened:total"],
        "opened_by_machines": events["opened:messages"] - opened,
        "clicked": clicked,
        "clicks_total": events["clicked:total"],
        "bounced": events["bounced:messages"],
        "bounced_hard": events["bounced:hard"],
        "complained": events["complained:messages"],
        "unsubscribed": events["unsubscribed:subscribers"],
    }
    return {
        "campaign_id": campaign.id,
        "name": campaign.name,
        "status": campaign.status,
        "runs": runs.get("runs", 0),
        "recipients": runs.get("recipients", 0),
        "sent": sent,
        "failed": runs.get("failed", 0),
        "suppressed": runs.get("suppressed", 0),
        "queued": pending.get(campaign.id, 0),
        **counts,
        "delivery_rate": _rate(counts["delivered"], sent),
        "open_rate": _rate(opened, sent),
        "click_rate": _rate(clicked, sent),
        "click_to_open_rate": _rate(clicked, opened),
        "bounce_rate": _rate(counts["bounced"], sent),
        "complaint_rate": _rate(counts["complained"], sent),
        "unsubscribe_rate": _rate(counts["unsubscribed"], sent),
    }


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


@dataclass(frozen=True)
class HistoryPage:
    items: list[dict[str, Any]]
    total: int


async def subscriber_history(
    session: AsyncSession, ref: str | int, *, limit: int, offset: int
) -> HistoryPage:
    """Every delivery to the subscriber and every event about them, newest first."""
    subscriber = await find_subscriber(session, ref)
    wanted = offset + limit  # the newest ``wanted`` of each list hold the page
    deliveries = await session.execute(
        select(Delivery, CampaignRun.campaign_id)
        .join(CampaignRun, CampaignRun.id == Delivery.run_id)
        .where(Delivery.subscriber_id == subscriber.id)
        .order_by(func.coalesce(Delivery.sent_at, Delivery.created_at).desc(), Delivery.id.desc())
        .limit(wanted)
    )
    events = await session.scalars(
        select(Event)
        .where(Event.subscriber_id == subscriber.id)
        .order_by(Event.occurred_at.desc(), Event.id.desc())
        .limit(wanted)
    )
    items = [_delivery_item(d, campaign_id) for d, campaign_id in deliveries]
    items += [_event_item(e) for e in events]
    items.sort(key=lambda item: item["at"], reverse=True)
    total = await _count(session, Delivery, Delivery.subscriber_id == subscriber.id)
    total += await _count(session, Event, Event.subscriber_id == subscriber.id)
    return HistoryPage(items[offset : offset + limit], total)


async def _count(
    session: AsyncSession, model: type[Delivery] | type[Event], condition: ColumnElement[bool]
) -> int:
    return int(await session.scalar(select(func.count()).select_from(model).where(condition)) or 0)


def _delivery_item(delivery: Delivery, campaign_id: int) -> dict[str, Any]:
    return {
        "kind": "delivery",
        "at": delivery.sent_at or delivery.last_attempt_at or delivery.created_at,
        "campaign_id": campaign_id,
        "delivery_id": delivery.id,
        "status": delivery.status,
        "type": None,
        "provider": delivery.provider,
        "reason": delivery.error,
    }


def _event_item(event: Event) -> dict[str, Any]:
    return {
        "kind": "event",
        "at": event.occurred_at,
        "campaign_id": event.campaign_id,
        "delivery_id": event.delivery_id,
        "status": None,
        "type": event.type,
        "source": event.source,
        "provider": event.provider,
        "bounce": event.bounce,
        "reason": event.reason,
        "url": event.url,
        "machine": event.machine,
    }


TREND_TYPES = (E.opened, E.clicked, E.bounced, E.complained, E.unsubscribed)


async def trends(session: AsyncSession, days: int, now: datetime) -> list[dict[str, Any]]:
    """Per day of the last ``days`` (UTC): messages sent, and messages opened and clicked by
    people, bounced, complained, and unsubscribes."""
    start = (now - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    dialect = session.get_bind().dialect.name
    sent_day = _day(Delivery.sent_at, dialect)
    sent = await session.execute(
        select(sent_day, func.count())
        .where(Delivery.sent_at >= start, Delivery.status == DeliveryStatus.sent.value)
        .group_by(sent_day)
    )
    event_day = _day(Event.occurred_at, dialect)
    events = await session.execute(
        select(event_day, Event.type, func.count(distinct(Event.delivery_id)))
        .where(
            Event.occurred_at >= start,
            Event.type.in_([t.value for t in TREND_TYPES]),
            Event.machine.is_(False),
        )
        .group_by(event_day, Event.type)
    )
    table: dict[date, Counter[str]] = {}
    for day, count in sent:
        table.setdefault(_as_date(day), Counter())["sent"] = int(count)
    for day, kind, count in events:
        table.setdefault(_as_date(day), Counter())[kind] = int(count)
    first = start.date()
    return [
        {"day": first + timedelta(days=n), **_trend_counts(table.get(first + timedelta(days=n)))}
        for n in range(days)
    ]


def _day(column: Any, dialect: str) -> ColumnElement[Any]:
    """The UTC day of a timestamp column (SQLite keeps timestamps as text)."""
    if dialect == "postgresql":
        return cast(func.timezone("UTC", column), Date)
    return func.date(column, type_=String)


def _trend_counts(counts: Counter[str] | None) -> dict[str, int]:
    counts = counts or Counter()
    return {"sent": counts["sent"], **{t.value: counts[t.value] for t in TREND_TYPES}}


def _as_date(value: date | str) -> date:
    """SQLite gives the day as text."""
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])
