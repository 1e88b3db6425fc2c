"""The outbox: claiming batches of deliveries, recording their results, releasing them.

A claim is one statement: the next ``limit`` pending deliveries of runs that are sending, locked
with ``FOR UPDATE SKIP LOCKED`` (so concurrent workers on any host take disjoint batches), are
marked ``sending`` with a lease. While a delivery is sending, ``next_attempt_at`` is the end of
its lease, so a batch whose worker died is claimed again by the same query once its lease ends,
and one partial index (pending deliveries by run and time) serves every claim.

Each claim counts an attempt. Results are recorded only for the attempt that was claimed (the
row's ``attempts`` still equals the claimed one), so a worker that outlived its lease cannot
overwrite what the worker that took over recorded. On PostgreSQL all results of a batch and the
run's progress counters are written by one statement.

Renewing a batch's lease and recording its results can run at once (a worker renews every
batch it holds while one of them is being recorded). Both first lock the batch's rows in id
order, so they queue behind each other instead of deadlocking: a deadlock that aborted the
record would leave a sent batch to be sent again when its lease ends.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from tidings.audience.models import Subscriber, SubscriberStatus, Suppression, SuppressionReason
from tidings.campaigns.models import PENDING, CampaignRun, Delivery, DeliveryStatus, RunStatus
from tidings.db.types import utcnow

FINAL = (DeliveryStatus.sent, DeliveryStatus.failed, DeliveryStatus.suppressed)


@dataclass(frozen=True, slots=True)
class Claimed:
    id: int
    run_id: int
    subscriber_id: int
    attempts: int  # this attempt's number, from 1


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one claimed delivery: sent, failed, suppressed, or queued (a retry)."""

    delivery: Claimed
    status: DeliveryStatus
    error: str | None = None
    provider: str | None = None
    provider_message_id: str | None = None
    retry_at: datetime | None = None  # when queued again
    route: str | None = None  # why that provider (a routing rule's name, "weighted"...)
    uncounted: bool = False  # deferred before any provider tried it: the attempt is given back


async def claim_batch(
    session: AsyncSession, limit: int, lease_seconds: float, now: datetime
) -> list[Claimed]:
    """Claim up to ``limit`` deliveries due at ``now``, leased for ``lease_seconds``. Commits."""
    lease_end = now + timedelta(seconds=lease_seconds)
    claimable = (
        select(Delivery.id)
        .join(CampaignRun, CampaignRun.id == Delivery.run_id)
        .where(
            CampaignRun.status == RunStatus.sending.value,
            PENDING,
            Delivery.next_attempt_at <= now,
        )
        .limit(limit)
        .with_for_update(of=Delivery, skip_locked=True)
        .cte("claimable")
    )
    rows = await session.execute(
        update(Delivery)
        .where(Delivery.id == claimable.c.id)
        .values(
            status=DeliveryStatus.sending.value,
            attempts=Delivery.attempts + 1,
            lease_until=lease_end,
            next_attempt_at=lease_end,
            last_attempt_at=now,
        )
        .returning(Delivery.id, Delivery.run_id, Delivery.subscriber_id, Delivery.attempts)
    )
    claimed = [Claimed(*row) for row in rows]
    await session.commit()
    return claimed


async def record_outcomes(
    session: AsyncSession, outcomes: Sequence[Outcome], now: datetime
) -> None:
    """Write every outcome of a batch and advance the runs' progress counters. Commits."""
    if outcomes:
        if session.get_bind().dialect.name == "postgresql":
            await _lock_in_order(session, [o.delivery.id for o in outcomes])
            await _record_postgresql(session, outcomes, now)
        else:
            await _record_each(session, outcomes, now)
    await session.commit()


async def release(session: AsyncSession, claimed: Sequence[Claimed], now: datetime) -> None:
    """Give unsent deliveries back (a graceful shutdown): queued, due now, attempt not counted."""
    await _lock_in_order(session, [d.id for d in claimed])
    for attempts, ids in _by_attempt(claimed).items():
        await session.execute(
            update(Delivery)
            .where(_held(ids, attempts))
            .values(
                status=DeliveryStatus.queued.value,
                attempts=Delivery.attempts - 1,
                next_attempt_at=now,
                lease_until=None,
            )
        )
    await session.commit()


async def renew(
    session: AsyncSession, claimed: Sequence[Claimed], lease_seconds: float, now: datetime
) -> set[int]:
    """Extend the lease of the deliveries still ours; returns their ids. Commits.

    A worker renews what it holds (a batch waiting to be sent, or being sent), so a slow server
    never lets a lease run out under it; one that did run out was claimed by another worker
    and is no longer in the answer, and must not be sent.
    """
    lease_end = now + timedelta(seconds=lease_seconds)
    held: set[int] = set()
    await _lock_in_order(session, [d.id for d in claimed])
    for attempts, ids in _by_attempt(claimed).items():
        rows = await session.execute(
            update(Delivery)
            .where(_held(ids, attempts))
            .values(lease_until=lease_end, next_attempt_at=lease_end)
            .returning(Delivery.id)
        )
        held.update(rows.scalars())
    await session.commit()
    return held


async def _lock_in_order(session: AsyncSession, ids: list[int]) -> None:
    """PostgreSQL: lock these deliveries' rows in id order (SQLite has one writer anyway)."""
    if ids and session.get_bind().dialect.name == "postgresql":
        await session.execute(
            select(Delivery.id).where(Delivery.id.in_(ids)).order_by(Delivery.id).with_for_update()
        )


def _by_attempt(claimed: Sequence[Claimed]) -> dict[int, list[int]]:
    """Delivery ids by attempt number: one statement each (a batch mostly shares one)."""
    groups: dict[int, list[int]] = {}
    for delivery in claimed:
        groups.setdefault(delivery.attempts, []).append(delivery.id)
    return groups


def _held(ids: list[int], attempts: int) -> ColumnElement[bool]:
    """Those of ``ids`` still in the attempt this worker claimed."""
    return and_(
        Delivery.id.in_(ids),
        Delivery.attempts == attempts,
        Delivery.status == DeliveryStatus.sending.value,
    )


_STATUS_FOR = {
    SuppressionReason.bounced: SubscriberStatus.bounced,
    SuppressionReason.complained: SubscriberStatus.complained,
    SuppressionReason.unsubscribed: SubscriberStatus.unsubscribed,
    SuppressionReason.erased: SubscriberStatus.erased,
    SuppressionReason.manual: SubscriberStatus.unsubscribed,
}


async def suppress_addresses(
    session: AsyncSession, email_hashes: Sequence[str], reason: SuppressionReason
) -> None:
    """Never mail these addresses again; their active subscribers become bounced, complained
    or unsubscribed, after the reason. Does not commit."""
    if not email_hashes:
        return
    hashes = sorted(set(email_hashes))
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    await session.execute(
        dialect.insert(Suppression).on_conflict_do_nothing(index_elements=["email_hash"]),
        [{"email_hash": h, "reason": reason.value} for h in hashes],
    )
    await session.execute(
        update(Subscriber)
        .where(
            Subscriber.email_hash.in_(hashes),
            Subscriber.status == SubscriberStatus.active.value,
        )
        .values(status=_STATUS_FOR[reason].value, status_changed_at=utcnow())
    )


_RECORD_POSTGRESQL = text("""
WITH outcome AS (
    SELECT * FROM unnest(
        CAST(:ids AS bigint[]), CAST(:attempts AS integer[]), CAST(:statuses AS text[]),
        CAST(:errors AS text[]), CAST(:providers AS text[]), CAST(:message_ids AS text[]),
        CAST(:retry_at AS timestamptz[]), CAST(:routes AS text[]), CAST(:uncounted AS boolean[])
    ) AS o(id, attempts, status, error, provider, message_id, retry_at, route, uncounted)
), written AS (
    UPDATE deliveries AS d
    SET status = o.status, error = o.error, provider = o.provider,
        provider_message_id = o.message_id, lease_until = NULL, route = o.route,
        attempts = d.attempts - CASE WHEN o.uncounted THEN 1 ELSE 0 END,
        next_attempt_at = COALESCE(o.retry_at, d.next_attempt_at),
        sent_at = CASE WHEN o.status = 'sent' THEN CAST(:now AS timestamptz) ELSE d.sent_at END
    FROM outcome AS o
    WHERE d.id = o.id AND d.attempts = o.attempts AND d.status = 'sending'
    RETURNING d.run_id, d.status
), progress AS (
    SELECT run_id,
           count(*) FILTER (WHERE status = 'sent') AS sent,
           count(*) FILTER (WHERE status = 'failed') AS failed,
           count(*) FILTER (WHERE status = 'suppressed') AS suppressed
    FROM written GROUP BY run_id
)
UPDATE campaign_runs AS r
SET sent = r.sent + p.sent, failed = r.failed + p.failed, suppressed = r.suppressed + p.suppressed,
    queued = r.queued - (p.sent + p.failed + p.suppressed)
FROM progress AS p
WHERE r.id = p.run_id
""")


async def _record_postgresql(
    session: AsyncSession, outcomes: Sequence[Outcome], now: datetime
) -> None:
    await session.execute(
        _RECORD_POSTGRESQL,
        {
            "ids": [o.delivery.id for o in outcomes],
            "attempts": [o.delivery.attempts for o in outcomes],
            "statuses": [o.status.value for o in outcomes],
            "errors": [o.error for o in outcomes],
            "providers": [o.provider for o in outcomes],
            "message_ids": [o.provider_message_id for o in outcomes],
            "retry_at": [o.retry_at for o in outcomes],
            "routes": [o.route for o in outcomes],
            "uncounted": [o.uncounted for o in outcomes],
            "now": now,
        },
    )


async def _record_each(session: AsyncSession, outcomes: Sequence[Outcome], now: datetime) -> None:
    """SQLite: one statement per delivery (a local file, one writer: cheap), then the counters."""
    progress: dict[int, Counter[str]] = {}
    for outcome in outcomes:
        written = await session.execute(
            update(Delivery)
            .where(_held([outcome.delivery.id], outcome.delivery.attempts))
            .values(_written_values(outcome, now))
            .returning(Delivery.run_id)
        )
        if written.first() is not None:
            progress.setdefault(outcome.delivery.run_id, Counter())[outcome.status.value] += 1
    for run_id, counts in progress.items():
        finished = sum(counts[s.value] for s in FINAL)
        await session.execute(
            update(CampaignRun)
            .where(CampaignRun.id == run_id)
            .values(
                sent=CampaignRun.sent + counts[DeliveryStatus.sent.value],
                failed=CampaignRun.failed + counts[DeliveryStatus.failed.value],
                suppressed=CampaignRun.suppressed + counts[DeliveryStatus.suppressed.value],
                queued=CampaignRun.queued - finished,
            )
        )


def _written_values(outcome: Outcome, now: datetime) -> dict[str, object]:
    values: dict[str, object] = {
        "status": outcome.status.value,
        "error": outcome.error,
        "provider": outcome.provider,
        "provider_message_id": outcome.provider_message_id,
        "lease_until": None,
        "route": outcome.route,
    }
    if outcome.uncounted:
        values["attempts"] = Delivery.attempts - 1
    if outcome.retry_at is not None:
        values["next_attempt_at"] = outcome.retry_at
    if outcome.status == DeliveryStatus.sent:
        values["sent_at"] = now
    return values
