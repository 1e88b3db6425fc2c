"""The warming report (``GET /system/warming``): where each provider with a warming plan is in
it, today's cap and use, and the adjustments the plan made and why."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Literal

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from tidings.db.types import utcnow
from tidings.delivery.quota import day_bounds, local_date
from tidings.delivery.warming import WarmingPlan
from tidings.providers.models import Provider, ProviderState, ProviderUsage, WarmingAdjustment
from tidings.providers.service import states_of
from tidings.system.schemas import AdjustmentOut, WarmingOut, WarmingReportOut
from tidings.system.service import all_providers, is_paused, paused_reason_of

ADJUSTMENTS_SHOWN = 30


async def warming_report(session: AsyncSession, now: datetime | None = None) -> WarmingReportOut:
    """Each provider with a warming plan: where it is in the plan, today's cap and use, and the
    adjustments the plan made (newest first)."""
    now = now or utcnow()
    providers = [p for p in await all_providers(session) if p.warming_plan is not None]
    ids = [p.id for p in providers]
    states = await states_of(session, ids)
    used = await _used_today(session, providers, now)
    adjustments = await _recent_adjustments(session, ids)
    return WarmingReportOut(
        providers=[
            _warming_row(p, states.get(p.id), used.get(p.id, 0), adjustments.get(p.id, []), now)
            for p in providers
        ]
    )


def _warming_row(
    provider: Provider,
    state: ProviderState | None,
    used: int,
    adjustments: list[AdjustmentOut],
    now: datetime,
) -> WarmingOut:
    plan = provider.warming_plan or {}
    today = local_date(now, provider.timezone)
    cap = state.warming_cap if state is not None and state.warming_date == today else None
    return WarmingOut(
        provider_id=provider.id,
        provider=provider.name,
        plan=plan,
        plan_length=_plan_length(plan),
        phase=_phase(state),
        plan_day=state.warming_day if state is not None else None,
        timezone=provider.timezone,
        today=today,
        cap=cap,
        used=used,
        remaining=max(0, cap - used) if cap is not None else None,
        paused=is_paused(state),
        paused_reason=paused_reason_of(state),
        adjustments=adjustments,
    )


def _plan_length(plan: dict[str, object]) -> int | None:
    # Plans stored before they were validated on the way in may not parse: report, not fail.
    try:
        return WarmingPlan.model_validate(plan).length
    except ValidationError:
        return None


def _phase(state: ProviderState | None) -> Literal["not_started", "warming", "done"]:
    if state is None or state.warming_date is None:
        return "not_started"
    if state.warming_cap is None and state.warming_day is not None:
        return "done"
    return "warming"


async def _used_today(
    session: AsyncSession, providers: Sequence[Provider], now: datetime
) -> dict[int, int]:
    """Messages granted in each provider's current local day. A usage row of an earlier day
    has not been reset yet (the next grant resets it), so it counts as nothing used today."""
    if not providers:
        return {}
    rows = await session.scalars(
        select(ProviderUsage).where(
            ProviderUsage.period == "day",
            ProviderUsage.provider_id.in_([p.id for p in providers]),
        )
    )
    by_id = {row.provider_id: row for row in rows}
    used: dict[int, int] = {}
    for provider in providers:
        row = by_id.get(provider.id)
        start = day_bounds(local_date(now, provider.timezone), provider.timezone)[0]
        used[provider.id] = row.used if row is not None and row.window_start == start else 0
    return used


async def _recent_adjustments(
    session: AsyncSession, ids: Iterable[int]
) -> dict[int, list[AdjustmentOut]]:
    """The last ``ADJUSTMENTS_SHOWN`` adjustments of each provider, newest first, in one query."""
    wanted = list(ids)
    if not wanted:
        return {}
    newest = (
        func.row_number()
        .over(partition_by=WarmingAdjustment.provider_id, order_by=WarmingAdjustment.id.desc())
        .label("newest")
    )
    ranked = (
        select(WarmingAdjustment.id, newest)
        .where(WarmingAdjustment.provider_id.in_(wanted))
        .subquery()
    )
    rows = await session.scalars(
        select(WarmingAdjustment)
        .join(ranked, ranked.c.id == WarmingAdjustment.id)
        .where(ranked.c.newest <= ADJUSTMENTS_SHOWN)
        .order_by(WarmingAdjustment.provider_id, WarmingAdjustment.id.desc())
    )
    found: dict[int, list[AdjustmentOut]] = {}
    for row in rows:
        adjustment = AdjustmentOut.model_validate(row, from_attributes=True)
        found.setdefault(row.provider_id, []).append(adjustment)
    return found
