"""Recording events and what follows from them, for a batch at a time.

Each event is placed (its delivery, campaign and subscriber, from our delivery id or else the
recipient's address), written once (``(source, source_event_id)`` is unique: a replay inserts
nothing and so changes nothing), and only the events actually written take effect:

- a human open or click raises the subscriber's engagement score (see ``engagement``);
- a hard bounce suppresses the address and marks the subscriber bounced; ``soft_bounce_limit``
  soft bounces within ``soft_bounce_days`` do the same; a policy bounce (5.7.x) does neither;
- a complaint suppresses the address from all bulk mail and marks the subscriber complained;
- an unsubscribe reported by a provider unsubscribes the subscriber from everything;
- delivered, bounced, complained, opened and clicked count in the provider's statistics.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from tidings.audience.models import Subscriber, SubscriberStatus, SuppressionReason
from tidings.campaigns.models import CampaignRun, Delivery
from tidings.db.types import utcnow
from tidings.delivery import provider_stats
from tidings.delivery.outbox import suppress_addresses
from tidings.providers.models import Provider
from tidings.security.crypto import active_cipher
from tidings.tracking.engagement import WEIGHTS, add_engagement, score
from tidings.tracking.events import BounceKind, EventType, InboundEvent
from tidings.tracking.models import Event

REASON_CHARS = 2000
AGENT_CHARS = 512


@dataclass(frozen=True)
class FeedbackPolicy:
    scanner_seconds: float = 10.0  # a click sooner than this after sending is a scanner's
    soft_bounce_limit: int = 3
    soft_bounce_days: int = 7


@dataclass(frozen=True, slots=True)
class Placement:
    delivery_id: int
    campaign_id: int
    subscriber_id: int
    provider: str | None
    sent_at: datetime | None


async def record_events(
    session: AsyncSession,
    events: Sequence[InboundEvent],
    policy: FeedbackPolicy,
    now: datetime | None = None,
) -> list[Event]:
    """Write the events not seen before and apply their effects; returns those written.
    Commits."""
    now = now or utcnow()
    unique = _without_repeats(events)
    if not unique:
        return []
    deliveries = await _deliveries(session, {e.delivery_id for e in unique if e.delivery_id})
    addresses = await _subscribers_by_address(
        session, {e.recipient for e in unique if e.recipient and e.delivery_id not in deliveries}
    )
    rows = [_row(e, deliveries, addresses, policy, now) for e in unique]
    written = await _insert_new(session, rows)
    await _apply(session, written, policy, now)
    await session.commit()
    return written


def _without_repeats(events: Sequence[InboundEvent]) -> list[InboundEvent]:
    seen: set[tuple[str, str]] = set()
    unique = []
    for event in events:
        if event.source_event_id is not None:
            key = (event.source, event.source_event_id)
            if key in seen:
                continue
            seen.add(key)
        unique.append(event)
    return unique


async def _deliveries(session: AsyncSession, ids: set[int | None]) -> dict[int, Placement]:
    wanted = sorted(i for i in ids if i is not None)
    if not wanted:
        return {}
    rows = await session.execute(
        select(
            Delivery.id,
            CampaignRun.campaign_id,
            Delivery.subscriber_id,
            Delivery.provider,
            Delivery.sent_at,
        )
        .join(CampaignRun, CampaignRun.id == Delivery.run_id)
        .where(Delivery.id.in_(wanted))
    )
    return {row[0]: Placement(*row) for row in rows}


async def _subscribers_by_address(
    session: AsyncSession, addresses: set[str | None]
) -> dict[str, int]:
    """Subscriber ids by address, through the blind index (addresses are stored encrypted)."""
    cipher = active_cipher()
    hashes = {cipher.email_hash(a): a for a in addresses if a}
    if not hashes:
        return {}
    rows = await session.execute(
        select(Subscriber.email_hash, Subscriber.id).where(Subscriber.email_hash.in_(list(hashes)))
    )
    return {hashes[h]: subscriber_id for h, subscriber_id in rows}


def _row(
    event: InboundEvent,
    deliveries: dict[int, Placement],
    addresses: dict[str, int],
    policy: FeedbackPolicy,
    now: datetime,
) -> dict[str, Any]:
    placed = deliveries.get(event.delivery_id) if event.delivery_id else None
    subscriber_id = placed.subscriber_id if placed else addresses.get(event.recipient or "")
    return {
        "type": event.type.value,
        "occurred_at": event.occurred_at,
        "received_at": now,
        "source": event.source,
        "source_event_id": event.source_event_id,
        "delivery_id": placed.delivery_id if placed else None,
        "campaign_id": placed.campaign_id if placed else None,
        "subscriber_id": subscriber_id,
        "provider": placed.provider if placed else None,
        "bounce": event.bounce.value if event.bounce else None,
        "reason": event.reason[:REASON_CHARS] if event.reason else None,
        "url": event.url,
        "machine": event.machine or _scanner_click(event, placed, policy),
        "user_agent": event.user_agent[:AGENT_CHARS] if event.user_agent else None,
        "raw": event.raw,
    }


def _scanner_click(event: InboundEvent, placed: Placement | None, policy: FeedbackPolicy) -> bool:
    if event.type != EventType.clicked or placed is None or placed.sent_at is None:
        return False
    return event.occurred_at - placed.sent_at < timedelta(seconds=policy.scanner_seconds)


async def _insert_new(session: AsyncSession, rows: list[dict[str, Any]]) -> list[Event]:
    """Insert the rows, skipping those whose (source, source_event_id) exists; returns the
    rows inserted."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    statement = (
        dialect.insert(Event)
        .on_conflict_do_nothing(index_elements=["source", "source_event_id"])
        .returning(Event)
    )
    result = await session.scalars(statement, rows)
    return list(result.all())


async def _apply(
    session: AsyncSession, written: list[Event], policy: FeedbackPolicy, now: datetime
) -> None:
    await _raise_engagement(session, written)
    hard = {e.subscriber_id for e in written if _is(e, EventType.bounced, BounceKind.hard)}
    soft = {e.subscriber_id for e in written if _is(e, EventType.bounced, BounceKind.soft)}
    hard |= await _too_many_soft_bounces(session, soft - hard, policy, now)
    complained = {e.subscriber_id for e in written if e.type == EventType.complained}
    unsubscribed = {e.subscriber_id for e in written if e.type == EventType.unsubscribed}
    await _suppress(session, complained, SuppressionReason.complained)
    await _suppress(session, hard - complained, SuppressionReason.bounced)
    await _unsubscribe_everywhere(session, unsubscribed - complained - hard)
    await _count_for_providers(session, written, now)


def _is(event: Event, kind: EventType, bounce: BounceKind) -> bool:
    return event.type == kind and event.bounce == bounce and event.subscriber_id is not None


async def _raise_engagement(session: AsyncSession, written: list[Event]) -> None:
    human: dict[int, list[tuple[str, datetime]]] = {}
    for event in written:
        if event.type in WEIGHTS and not event.machine and event.subscriber_id is not None:
            human.setdefault(event.subscriber_id, []).append((event.type, event.occurred_at))
    if not human:
        return
    rows = await session.execute(
        select(
            Subscriber.id, Subscriber.engagement_sum, Subscriber.engaged_at,
            Subscriber.last_opened_at,
        ).where(Subscriber.id.in_(sorted(human)))
    )  # fmt: skip
    changes = []
    for subscriber_id, total, since, last_opened in rows:
        events = human[subscriber_id]
        total, since = add_engagement(total or 0.0, since, events)
        opens = [at for kind, at in events if kind == EventType.opened]
        if opens:
            last_opened = max([*opens, *([last_opened] if last_opened else [])])
        changes.append(
            {
                "id": subscriber_id,
                "engagement_sum": total,
                "engaged_at": since,
                "engagement_score": score(total),
                "last_opened_at": last_opened,
            }
        )
    await session.execute(update(Subscriber), changes)


async def _too_many_soft_bounces(
    session: AsyncSession, subscribers: set[int | None], policy: FeedbackPolicy, now: datetime
) -> set[int | None]:
    wanted = sorted(s for s in subscribers if s is not None)
    if not wanted:
        return set()
    since = now - timedelta(days=policy.soft_bounce_days)
    rows = await session.execute(
        select(Event.subscriber_id)
        .where(
            Event.subscriber_id.in_(wanted),
            Event.type == EventType.bounced.value,
            Event.bounce == BounceKind.soft.value,
            Event.occurred_at >= since,
        )
        .group_by(Event.subscriber_id)
        .having(func.count() >= policy.soft_bounce_limit)
    )
    return set(rows.scalars())


async def _suppress(
    session: AsyncSession, subscribers: set[int | None], reason: SuppressionReason
) -> None:
    wanted = sorted(s for s in subscribers if s is not None)
    if wanted:
        hashes = await session.scalars(
            select(Subscriber.email_hash).where(Subscriber.id.in_(wanted))
        )
        await suppress_addresses(session, list(hashes), reason)


async def _unsubscribe_everywhere(session: AsyncSession, subscribers: set[int | None]) -> None:
    wanted = sorted(s for s in subscribers if s is not None)
    if wanted:
        now = utcnow()
        await session.execute(
            update(Subscriber)
            .where(Subscriber.id.in_(wanted), Subscriber.status == SubscriberStatus.active.value)
            .values(
                status=SubscriberStatus.unsubscribed.value,
                status_changed_at=now,
                unsubscribed_at=now,
            )
        )


_TALLIED = {
    EventType.delivered: "delivered",
    EventType.complained: "complained",
    EventType.opened: "opened",
    EventType.clicked: "clicked",
}


async def _count_for_providers(session: AsyncSession, written: list[Event], now: datetime) -> None:
    names = {e.provider for e in written if e.provider}
    if not names:
        return
    rows = await session.execute(select(Provider.name, Provider.id).where(Provider.name.in_(names)))
    ids: dict[str, int] = {name: provider_id for name, provider_id in rows}
    tallies: dict[int, provider_stats.Tally] = {}
    for event in written:
        provider_id = ids.get(event.provider or "")
        counter = _counter(event)
        if provider_id is not None and counter is not None:
            tally = tallies.setdefault(provider_id, provider_stats.Tally())
            setattr(tally, counter, getattr(tally, counter) + 1)
    await provider_stats.record(session, tallies, now)


def _counter(event: Event) -> str | None:
    if event.type == EventType.bounced:
        return "bounced_hard" if event.bounce == BounceKind.hard else "bounced_soft"
    return _TALLIED.get(EventType(event.type))
