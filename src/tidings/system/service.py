"""What the instance is doing, for operators (seed 002's /system endpoints): is it healthy, how
do its providers perform, where are they in their warming plans. Read-only and cheap: each
report is a few indexed queries, whatever the size of the outbox.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from tidings.campaigns.models import PENDING, CampaignRun, Delivery, DeliveryStatus, RunStatus
from tidings.db.types import utcnow
from tidings.delivery.circuit import CircuitState
from tidings.delivery.provider_pool import FALLBACK_ID
from tidings.delivery.provider_stats import COUNTERS, Tally, window_totals
from tidings.providers.models import (
    Provider,
    ProviderState,
    WorkerBeat,
)
from tidings.providers.service import states_of
from tidings.system.schemas import (
    Circuit,
    DatabaseOut,
    LatencyOut,
    ProviderReportOut,
    ProvidersReportOut,
    ProviderStatusOut,
    QueueOut,
    StatusOut,
    WorkerOut,
)

Window = Literal["1h", "24h", "7d"]
WINDOWS: dict[str, timedelta] = {
    "1h": timedelta(hours=1),
    "24h": timedelta(days=1),
    "7d": timedelta(days=7),
}
LIVE_WITHIN = timedelta(minutes=1)  # a worker seen this recently is alive (it beats every few s)
SEVERITY: tuple[Circuit, ...] = (
    CircuitState.closed.value,
    CircuitState.half_open.value,
    CircuitState.open.value,
)


# -- workers and circuits --------------------------------------------------------------------


async def live_workers(session: AsyncSession, now: datetime) -> list[WorkerBeat]:
    rows = await session.scalars(
        select(WorkerBeat)
        .where(WorkerBeat.seen_at >= now - LIVE_WITHIN)
        .order_by(WorkerBeat.started_at, WorkerBeat.id)
    )
    return list(rows)


def fleet_circuits(workers: Sequence[WorkerBeat]) -> dict[str, Circuit]:
    """Each provider's circuit across the fleet, by provider name. Every process keeps its own
    breakers, so the worst state any live worker reports is what some of the traffic sees."""
    worst: dict[str, int] = {}
    for worker in workers:
        for name, state in (worker.circuits or {}).items():
            if state in SEVERITY:  # else a state a newer worker knows and this reader does not
                worst[name] = max(worst.get(name, 0), SEVERITY.index(state))
    return {name: SEVERITY[index] for name, index in worst.items()}


def circuit_of(name: str, circuits: dict[str, Circuit], any_live: bool) -> Circuit:
    if not any_live:
        return "unknown"
    return circuits.get(name, "closed")


# -- /system/providers ------------------------------------------------------------------------


async def provider_report(
    session: AsyncSession, window: Window, default_transport: str, now: datetime | None = None
) -> ProvidersReportOut:
    """Per provider, over the rolling ``window``: its settings, pause and circuit, and what
    happened to its mail. The instance's own transport (id 0) is listed when it sent any."""
    now = now or utcnow()
    since = now - WINDOWS[window]
    providers = await all_providers(session)
    states = await states_of(session, [p.id for p in providers])
    workers = await live_workers(session, now)
    circuits = fleet_circuits(workers)
    totals = await window_totals(session, since)
    live = bool(workers)
    rows = [
        _provider_row(
            _identity(p), states.get(p.id), circuit_of(p.name, circuits, live),
            totals.get(p.id, Tally()),
        )
        for p in providers
    ]  # fmt: skip
    if FALLBACK_ID in totals:
        default = Identity(FALLBACK_ID, default_transport, default_transport)
        circuit = circuit_of(default_transport, circuits, live)
        rows.append(_provider_row(default, None, circuit, totals[FALLBACK_ID]))
    return ProvidersReportOut(window=window, since=since, providers=rows)


@dataclass(frozen=True)
class Identity:
    """Who a report row is about: a provider, or the instance's own transport (no priority or
    weight: it is used only while no provider is configured)."""

    id: int
    name: str
    kind: str
    enabled: bool = True
    priority: int | None = None
    weight: int | None = None


def _identity(provider: Provider) -> Identity:
    return Identity(
        provider.id, provider.name, provider.kind, provider.enabled, provider.priority,
        provider.weight,
    )  # fmt: skip


def _provider_row(
    who: Identity, state: ProviderState | None, circuit: Circuit, tally: Tally
) -> ProviderReportOut:
    return ProviderReportOut(
        **asdict(who),
        paused=is_paused(state),
        paused_reason=paused_reason_of(state),
        paused_at=state.paused_at if state is not None else None,
        circuit=circuit,
        **{name: getattr(tally, name) for name in COUNTERS},
        error_rate=round(tally.error_rate, 6),
        bounce_rate=round(tally.bounce_rate, 6),
        complaint_rate=round(tally.complaint_rate, 6),
        latency_ms=_latency(tally),
        reputation=tally.reputation,
    )


def _latency(tally: Tally) -> LatencyOut:
    def bound(fraction: float) -> float | None:
        value = tally.latency_percentile(fraction)
        # JSON has no infinity: "slower than the largest bucket" is null, with calls > 0.
        return value if value is not None and value != float("inf") else None

    return LatencyOut(calls=sum(tally.latency), p50=bound(0.5), p95=bound(0.95), p99=bound(0.99))


# -- /system/status ----------------------------------------------------------------------------


async def system_status(
    session: AsyncSession, default_transport: str, now: datetime | None = None
) -> StatusOut:
    """Overall health: ``down`` when the database cannot be reached; ``degraded`` when mail is
    queued and no worker is live, or a provider is paused or has an open circuit."""
    now = now or utcnow()
    dialect = session.get_bind().dialect.name
    try:
        latency_ms = await _probe(session)
    except (SQLAlchemyError, OSError) as exc:
        return StatusOut(
            status="down",
            problems=[f"the database is unreachable ({type(exc).__name__})"],
            checked_at=now,
            database=DatabaseOut(dialect=dialect, reachable=False, latency_ms=None),
            workers=[],
            queue=None,
            providers=[],
        )
    workers = await live_workers(session, now)
    queue = await queue_depth(session, now)
    providers = await _provider_statuses(session, workers, default_transport)
    problems = _problems(workers, queue, providers)
    return StatusOut(
        status="degraded" if problems else "ok",
        problems=problems,
        checked_at=now,
        database=DatabaseOut(dialect=dialect, reachable=True, latency_ms=latency_ms),
        workers=[WorkerOut.model_validate(w, from_attributes=True) for w in workers],
        queue=queue,
        providers=providers,
    )


async def _probe(session: AsyncSession) -> float:
    """One round trip to the database, in milliseconds."""
    started = time.perf_counter()
    await session.execute(select(1))
    return round((time.perf_counter() - started) * 1000, 2)


async def queue_depth(session: AsyncSession, now: datetime) -> QueueOut:
    """The outbox's backlog. Both queries keep to the pending deliveries (the ``PENDING``
    condition is the predicate of the work-queue's partial index), never the sent history."""
    sending_only = func.count().filter(Delivery.status == DeliveryStatus.sending.value)
    pending, sending = (
        await session.execute(select(func.count(), sending_only).where(PENDING))
    ).one()
    oldest = await session.scalar(
        select(func.min(Delivery.next_attempt_at)).where(
            PENDING,
            Delivery.status == DeliveryStatus.queued.value,
            Delivery.next_attempt_at <= now,
        )
    )
    runs = await session.scalar(
        select(func.count())
        .select_from(CampaignRun)
        .where(CampaignRun.status == RunStatus.sending.value)
    )
    return QueueOut(
        queued=int(pending) - int(sending),
        sending=int(sending),
        oldest_due_age_seconds=(
            round((now - oldest).total_seconds(), 3) if oldest is not None else None
        ),
        runs_sending=int(runs or 0),
    )


async def _provider_statuses(
    session: AsyncSession, workers: Sequence[WorkerBeat], default_transport: str
) -> list[ProviderStatusOut]:
    """Each provider's pause and circuit; with none configured, the instance's own transport
    (the one the workers then send through)."""
    circuits, live = fleet_circuits(workers), bool(workers)
    providers = await all_providers(session)
    states = await states_of(session, [p.id for p in providers])
    rows = [_identity(p) for p in providers] or [
        Identity(FALLBACK_ID, default_transport, default_transport)
    ]
    return [
        ProviderStatusOut(
            id=row.id,
            name=row.name,
            enabled=row.enabled,
            paused=is_paused(states.get(row.id)),
            paused_reason=paused_reason_of(states.get(row.id)),
            circuit=circuit_of(row.name, circuits, live),
        )
        for row in rows
    ]


def _problems(
    workers: Sequence[WorkerBeat], queue: QueueOut, providers: Sequence[ProviderStatusOut]
) -> list[str]:
    problems = []
    waiting = queue.queued + queue.sending
    if waiting and not workers:
        problems.append(f"no worker seen in the last minute while {waiting} deliveries wait")
    # A disabled provider gets no traffic: its pause or circuit does not hold mail back.
    for provider in providers:
        if not provider.enabled:
            continue
        if provider.paused:
            problems.append(f"provider {provider.name!r} is paused: {provider.paused_reason}")
        if provider.circuit == "open":
            problems.append(f"provider {provider.name!r} has an open circuit")
    return problems


# -- shared ------------------------------------------------------------------------------------


async def all_providers(session: AsyncSession) -> list[Provider]:
    rows = await session.scalars(select(Provider).order_by(Provider.priority, Provider.name))
    return list(rows)


def is_paused(state: ProviderState | None) -> bool:
    return state is not None and state.paused_at is not None


def paused_reason_of(state: ProviderState | None) -> str | None:
    return state.paused_reason if state is not None else None
