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

import json
import math
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ARRAY,
    BigInteger,
    ColumnElement,
    any_,
    cast,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from tidings.audience.models import Subscriber, SubscriberStatus, SuppressionReason
from tidings.campaigns.models import CampaignRun, Delivery
from tidings.db.types import utcnow
from tidings.delivery import provider_stats
from tidings.delivery.outbox import suppress_addresses
from tidings.hooks.service import enqueue_for_events
from tidings.providers.models import Provider
from tidings.security.crypto import InvalidEmail, active_cipher
from tidings.tracking.engagement import HALF_LIFE, SCALE, WEIGHTS, add_engagement, score
from tidings.tracking.events import BounceKind, EventType, InboundEvent, RecordedEvent
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
    placements: PlacementCache | None = None,
) -> list[RecordedEvent]:
    """Write the events not seen before and apply their effects; returns those written.
    Commits."""
    now = now or utcnow()
    unique = _without_repeats(events)
    if not unique:
        return []
    deliveries = await _deliveries(
        session, {e.delivery_id for e in unique if e.delivery_id}, placements
    )
    addresses = await _subscribers_by_address(
        session, {e.recipient for e in unique if e.recipient and e.delivery_id not in deliveries}
    )
    rows = [_row(e, deliveries, addresses, policy, now) for e in unique]
    written = await _insert_new(session, rows)
    await _apply(session, written, policy, now)
    await enqueue_for_events(session, written, now)
    await session.commit()
    return written


def _among(
    session: AsyncSession, column: InstrumentedAttribute[int], ids: list[int]
) -> ColumnElement[bool]:
    """``column`` in ``ids``: on PostgreSQL one array parameter (``= ANY``), not thousands of
    parameters that each cost compiling and binding."""
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(cast(ids, ARRAY(BigInteger)))
    return column.in_(ids)


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


class PlacementCache:
    """Placements of sent deliveries, kept by a process that records many events (a message
    draws its opens and clicks in bursts): a sent delivery's campaign, subscriber, provider and
    send time never change. Bounded; past ``size`` it starts again."""

    def __init__(self, size: int = 50_000) -> None:
        self.size = size
        self._known: dict[int, Placement] = {}

    def get(self, delivery_id: int) -> Placement | None:
        return self._known.get(delivery_id)

    def keep(self, placements: Iterable[Placement]) -> None:
        if len(self._known) > self.size:
            self._known.clear()
        self._known.update((p.delivery_id, p) for p in placements if p.sent_at is not None)


async def _deliveries(
    session: AsyncSession, ids: set[int | None], cache: PlacementCache | None
) -> dict[int, Placement]:
    found: dict[int, Placement] = {}
    wanted = []
    for delivery_id in sorted(i for i in ids if i is not None):
        known = cache.get(delivery_id) if cache is not None else None
        if known is not None:
            found[delivery_id] = known
        else:
            wanted.append(delivery_id)
    if wanted:
        read = await _read_placements(session, wanted)
        found.update(read)
        if cache is not None:
            cache.keep(read.values())
    return found


async def _read_placements(session: AsyncSession, wanted: list[int]) -> dict[int, Placement]:
    rows = await session.execute(
        select(
            Delivery.id,
            CampaignRun.campaign_id,
            Delivery.subscriber_id,
            Delivery.provider,
            Delivery.sent_at,
        )
        .join(CampaignRun, CampaignRun.id == Delivery.run_id)
        .where(_among(session, Delivery.id, wanted))
    )
    return {row[0]: Placement(*row) for row in rows}


async def _subscribers_by_address(
    session: AsyncSession, addresses: set[str | None]
) -> dict[str, int]:
    """Subscriber ids by address, through the blind index (addresses are stored encrypted)."""
    hashes = {h: a for a in addresses if a and (h := _address_hash(a)) is not None}
    if not hashes:
        return {}
    rows = await session.execute(
        select(Subscriber.email_hash, Subscriber.id).where(Subscriber.email_hash.in_(list(hashes)))
    )
    return {hashes[h]: subscriber_id for h, subscriber_id in rows}


def _address_hash(address: str) -> str | None:
    """The blind index of an address, or None for one that is not an address (a provider's or
    a client's garbage names nobody)."""
    try:
        return active_cipher().email_hash(address)
    except InvalidEmail:
        return None


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
        "source_event_id": _storable(event.source_event_id),
        "delivery_id": placed.delivery_id if placed else None,
        "campaign_id": placed.campaign_id if placed else None,
        "subscriber_id": subscriber_id,
        "provider": placed.provider if placed else None,
        "bounce": event.bounce.value if event.bounce else None,
        "reason": _storable(event.reason[:REASON_CHARS]) if event.reason else None,
        "url": _storable(event.url),
        "machine": event.machine or _scanner_click(event, placed, policy),
        "user_agent": _storable(event.user_agent[:AGENT_CHARS]) if event.user_agent else None,
        "raw": _storable(event.raw),
    }


def _storable(value: Any) -> Any:
    """``value`` without what no database stores (NUL characters, lone surrogates, NaN), which
    an authentic provider payload may still carry: it is stored, not refused."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, dict):
        return {_storable(k): _storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_storable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON's NaN and Infinity, which Python reads and PostgreSQL refuses
    return value


def _scanner_click(event: InboundEvent, placed: Placement | None, policy: FeedbackPolicy) -> bool:
    if event.type != EventType.clicked or placed is None or placed.sent_at is None:
        return False
    after = (event.occurred_at - placed.sent_at).total_seconds()
    return 0 <= after < policy.scanner_seconds


async def _insert_new(session: AsyncSession, rows: list[dict[str, Any]]) -> list[RecordedEvent]:
    """Insert the rows, skipping those whose (source, source_event_id) exists; returns the
    rows inserted."""
    if session.get_bind().dialect.name == "postgresql":
        return await _insert_postgresql(session, rows)
    return await _insert_sqlite(session, rows)


async def _insert_sqlite(session: AsyncSession, rows: list[dict[str, Any]]) -> list[RecordedEvent]:
    """Rows without a source event id cannot conflict: one multi-row insert whose ids come back
    in order; the others report which of them went in."""
    plain = [row for row in rows if row["source_event_id"] is None]
    keyed = [row for row in rows if row["source_event_id"] is not None]
    written: list[RecordedEvent] = []
    if plain:
        new_ids = await session.scalars(
            insert(Event).returning(Event.id, sort_by_parameter_order=True), plain
        )
        written += [RecordedEvent.of(i, row) for i, row in zip(new_ids, plain, strict=True)]
    if keyed:
        inserted = await session.execute(
            sqlite.insert(Event)
            .on_conflict_do_nothing(index_elements=["source", "source_event_id"])
            .returning(Event.id, Event.source, Event.source_event_id),
            keyed,
        )
        by_key = {(source, key): event_id for event_id, source, key in inserted}
        for row in keyed:
            event_id = by_key.get((row["source"], row["source_event_id"]))
            if event_id is not None:
                written.append(RecordedEvent.of(event_id, row))
    return written


# PostgreSQL: the ids are drawn first, then every row goes in as one statement over arrays
# (an ORM multi-row insert spends more in Python per row than the database spends storing it).
_NEXT_IDS = text(
    "SELECT nextval(pg_get_serial_sequence('events', 'id')) FROM generate_series(1, :n)"
)
EVENT_COLUMNS = [
    "id", "type", "occurred_at", "received_at", "source", "source_event_id", "delivery_id",
    "campaign_id", "subscriber_id", "provider", "bounce", "reason", "url", "machine",
    "user_agent", "raw",
]  # fmt: skip
_INSERT_POSTGRESQL = text("""
INSERT INTO events (id, type, occurred_at, received_at, source, source_event_id, delivery_id,
                    campaign_id, subscriber_id, provider, bounce, reason, url, machine,
                    user_agent, raw)
SELECT * FROM unnest(
    CAST(:id AS bigint[]), CAST(:type AS text[]), CAST(:occurred_at AS timestamptz[]),
    CAST(:received_at AS timestamptz[]), CAST(:source AS text[]),
    CAST(:source_event_id AS text[]), CAST(:delivery_id AS bigint[]),
    CAST(:campaign_id AS bigint[]), CAST(:subscriber_id AS bigint[]), CAST(:provider AS text[]),
    CAST(:bounce AS text[]), CAST(:reason AS text[]), CAST(:url AS text[]),
    CAST(:machine AS boolean[]), CAST(:user_agent AS text[]), CAST(:raw AS jsonb[])
)
ON CONFLICT (source, source_event_id) DO NOTHING
RETURNING id
""")


async def _insert_postgresql(
    session: AsyncSession, rows: list[dict[str, Any]]
) -> list[RecordedEvent]:
    """Rows without a source event id (our own opens and clicks: most of them) cannot conflict
    and go in by COPY; the others through ``ON CONFLICT DO NOTHING``, which says which went in."""
    ids = list(await session.scalars(_NEXT_IDS, {"n": len(rows)}))
    plain: list[tuple[Any, ...]] = []
    keyed: list[tuple[Any, ...]] = []
    for event_id, row in zip(ids, rows, strict=True):
        (plain if row["source_event_id"] is None else keyed).append(_record(event_id, row))
    if plain:
        await _copy_events(session, plain)
    inserted: set[int] = set()
    if keyed:
        columns = dict(zip(EVENT_COLUMNS, map(list, zip(*keyed, strict=True)), strict=True))
        inserted = set(await session.scalars(_INSERT_POSTGRESQL, columns))
    return [
        RecordedEvent.of(i, row)
        for i, row in zip(ids, rows, strict=True)
        if row["source_event_id"] is None or i in inserted
    ]


_VALUES = operator.itemgetter(*EVENT_COLUMNS[1:-1])  # all but the id and the raw payload


def _record(event_id: int, row: dict[str, Any]) -> tuple[Any, ...]:
    """A row as the values of ``EVENT_COLUMNS``, the payload as JSON text."""
    raw = row["raw"]
    return (event_id, *_VALUES(row), None if raw is None else json.dumps(raw))


async def _copy_events(session: AsyncSession, records: list[tuple[Any, ...]]) -> None:
    """COPY the records into ``events``, in the session's transaction (its connection has
    begun one: the ids were drawn through it)."""
    connection = await (await session.connection()).get_raw_connection()
    driver = connection.driver_connection
    assert driver is not None
    await driver.copy_records_to_table("events", records=records, columns=EVENT_COLUMNS)


async def _apply(
    session: AsyncSession, written: list[RecordedEvent], policy: FeedbackPolicy, now: datetime
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


def _is(event: RecordedEvent, kind: EventType, bounce: BounceKind) -> bool:
    return event.type == kind and event.bounce == bounce and event.subscriber_id is not None


async def _raise_engagement(session: AsyncSession, written: list[RecordedEvent]) -> None:
    human: dict[int, list[tuple[str, datetime]]] = {}
    for event in written:
        if event.type in WEIGHTS and not event.machine and event.subscriber_id is not None:
            human.setdefault(event.subscriber_id, []).append((event.type, event.occurred_at))
    if not human:
        return
    if session.get_bind().dialect.name == "postgresql":
        await _raise_postgresql(session, human)
    else:
        await _raise_each(session, human)


async def _raise_postgresql(
    session: AsyncSession, human: dict[int, list[tuple[str, datetime]]]
) -> None:
    """One statement adds every subscriber's new events to their decayed sum, the events of one
    flush (a fraction of a second) taken at its latest: no read first, and no lost update when
    two processes add to the same subscriber (the UPDATE reads the row it changes)."""
    ids = sorted(human)
    await session.execute(
        _RAISE_POSTGRESQL,
        {
            "id": ids,
            "weight": [sum(WEIGHTS[kind] for kind, _ in human[i]) for i in ids],
            "at": [max(at for _, at in human[i]) for i in ids],
            "opened": [
                max((at for kind, at in human[i] if kind == EventType.opened), default=None)
                for i in ids
            ],
            "half_life": HALF_LIFE.total_seconds(),
            "scale": SCALE,
        },
    )


# The formula of ``tracking.engagement`` in SQL: sum * 2^-(elapsed / half-life) + weight.
_RAISE_POSTGRESQL = text("""
WITH v AS (
    SELECT v.id, v.weight, v.at, v.opened,
           s.engagement_sum * power(0.5, greatest(0, extract(epoch FROM
               v.at - coalesce(s.engaged_at, v.at))) / :half_life) + v.weight AS total
    FROM unnest(CAST(:id AS bigint[]), CAST(:weight AS float8[]),
                CAST(:at AS timestamptz[]), CAST(:opened AS timestamptz[]))
         AS v(id, weight, at, opened)
    JOIN subscribers AS s ON s.id = v.id
)
UPDATE subscribers AS s
SET engagement_sum = v.total,
    engaged_at = greatest(v.at, s.engaged_at),
    engagement_score = round(CAST(100 * (1 - exp(-v.total / :scale)) AS numeric), 1),
    last_opened_at = greatest(v.opened, s.last_opened_at)
FROM v
WHERE s.id = v.id
""")


async def _raise_each(session: AsyncSession, human: dict[int, list[tuple[str, datetime]]]) -> None:
    """SQLite (one writer): read the sums, add in Python, write them back."""
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


async def _count_for_providers(
    session: AsyncSession, written: list[RecordedEvent], now: datetime
) -> None:
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


def _counter(event: RecordedEvent) -> str | None:
    if event.type == EventType.bounced:
        return "bounced_hard" if event.bounce == BounceKind.hard else "bounced_soft"
    return _TALLIED.get(EventType(event.type))
