"""Provider statistics in minute buckets: workers add what each send call did, feedback
(provider webhooks) adds deliveries, bounces, complaints, opens and clicks. Reports sum the
minutes of a rolling window; reputation and the warming plan's adjustments read them."""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from tidings.providers.models import ProviderStats

# Upper bounds of the latency buckets, in milliseconds; one more bucket holds the slower calls.
BUCKETS_MS = (10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000)
COUNTERS = (
    "sent", "deferred", "failed", "delivered", "bounced_hard", "bounced_soft", "complained",
    "opened", "clicked",
)  # fmt: skip


@dataclass
class Tally:
    """What happened to a provider's mail: counters and send-call latencies."""

    sent: int = 0
    deferred: int = 0
    failed: int = 0
    delivered: int = 0
    bounced_hard: int = 0
    bounced_soft: int = 0
    complained: int = 0
    opened: int = 0
    clicked: int = 0
    latency: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS_MS) + 1))

    def add_latency(self, seconds: float) -> None:
        self.latency[bisect.bisect_left(BUCKETS_MS, seconds * 1000)] += 1

    def merge(self, other: Tally | ProviderStats) -> None:
        for name in COUNTERS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for index, count in enumerate(other.latency or []):
            self.latency[index] += count

    @property
    def attempts(self) -> int:
        return self.sent + self.deferred + self.failed

    @property
    def error_rate(self) -> float:
        return _ratio(self.deferred + self.failed, self.attempts)

    @property
    def bounce_rate(self) -> float:
        return _ratio(self.bounced_hard + self.bounced_soft, self.sent)

    @property
    def complaint_rate(self) -> float:
        return _ratio(self.complained, self.sent)

    @property
    def reputation(self) -> float:
        """0..100: 100 less 2 points per % of errors, 10 per % of bounces and 300 per % of
        complaints (a 0.1% complaint rate costs 30: the mailbox providers' own threshold)."""
        penalty = 2 * self.error_rate + 10 * self.bounce_rate + 300 * self.complaint_rate
        return round(max(0.0, 100.0 * (1.0 - penalty)), 1)

    def latency_percentile(self, fraction: float) -> float | None:
        """The bucket bound below which ``fraction`` of the send calls finished, in ms."""
        total = sum(self.latency)
        if not total:
            return None
        running = 0
        for index, count in enumerate(self.latency):
            running += count
            if running >= fraction * total:
                return float(BUCKETS_MS[index]) if index < len(BUCKETS_MS) else float("inf")
        return None

    def is_empty(self) -> bool:
        return not any(getattr(self, name) for name in COUNTERS)


def _ratio(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


async def record(session: AsyncSession, tallies: dict[int, Tally], now: datetime) -> None:
    """Add each provider's tally to the current minute. Does not commit.

    The minute's row is created if missing and then locked, so concurrent workers add up."""
    minute = now.replace(second=0, microsecond=0)
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    for provider_id, tally in sorted(tallies.items()):  # sorted: no deadlock between workers
        if tally.is_empty() and not any(tally.latency):
            continue
        await session.execute(
            dialect.insert(ProviderStats)
            .values(
                provider_id=provider_id,
                minute=minute,
                latency=[0] * (len(BUCKETS_MS) + 1),
                **dict.fromkeys(COUNTERS, 0),
            )
            .on_conflict_do_nothing(index_elements=["provider_id", "minute"])
        )
        row = await session.scalar(
            select(ProviderStats)
            .where(ProviderStats.provider_id == provider_id, ProviderStats.minute == minute)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        assert row is not None
        for name in COUNTERS:
            setattr(row, name, getattr(row, name) + getattr(tally, name))
        previous = row.latency or [0] * len(tally.latency)
        row.latency = [a + b for a, b in zip(previous, tally.latency, strict=True)]
    await session.flush()


async def window_totals(
    session: AsyncSession, since: datetime, provider_ids: Iterable[int] | None = None
) -> dict[int, Tally]:
    """Each provider's tally over the minutes since ``since``."""
    query = select(ProviderStats).where(
        ProviderStats.minute >= since.replace(second=0, microsecond=0)
    )
    if provider_ids is not None:
        query = query.where(ProviderStats.provider_id.in_(list(provider_ids)))
    totals: dict[int, Tally] = {}
    for row in await session.scalars(query):
        totals.setdefault(row.provider_id, Tally()).merge(row)
    return totals


async def counter_totals(
    session: AsyncSession, since: datetime, provider_ids: Iterable[int]
) -> dict[int, Tally]:
    """The counters alone (no latency), summed by the database: what routing's reputations and
    warming's daily decision need, read every few seconds by every worker."""
    ids = list(provider_ids)
    if not ids:
        return {}
    sums = [func.sum(getattr(ProviderStats, name)) for name in COUNTERS]
    rows = await session.execute(
        select(ProviderStats.provider_id, *sums)
        .where(
            ProviderStats.minute >= since.replace(second=0, microsecond=0),
            ProviderStats.provider_id.in_(ids),
        )
        .group_by(ProviderStats.provider_id)
    )
    totals: dict[int, Tally] = {}
    for provider_id, *values in rows:
        tally = totals[provider_id] = Tally()
        for name, value in zip(COUNTERS, values, strict=True):
            setattr(tally, name, int(value or 0))
    return totals


async def last_day(session: AsyncSession, provider_id: int, now: datetime) -> Tally:
    totals = await counter_totals(session, now - timedelta(days=1), [provider_id])
    return totals.get(provider_id, Tally())
