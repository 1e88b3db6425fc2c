"""IP warming: a new provider (or sending IP or domain) gets a daily cap that grows along a plan,
by default 50 → 3,000 messages a day over 30 days, and the next day's step depends on how the
last day went.

The rule, applied once at the start of each local day of the provider (the first grant asks):
- nothing was sent over the last day: the plan waits (same step, same cap);
- complaint rate ≥ ``complaint_pause`` (0.3%): sending through the provider **pauses** (no more
  grants until an admin resumes it) and an alert is written to the audit log;
- bounce rate > ``bounce_cut`` (10%) or complaint rate > ``complaint_cut`` (0.2%): the cap is
  **cut** in half (never below the first step) and the plan stays on its day;
- bounce rate > ``bounce_hold`` (5%) or complaint rate > ``complaint_hold`` (0.1%): **hold**:
  the same cap again, the plan stays on its day;
- otherwise the plan **advances** one step.
After its last step the plan is done and no warming cap applies. Every decision is a
``warming_adjustments`` row with its reason, shown by ``GET /system/warming``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy.ext.asyncio import AsyncSession

from tidings.delivery.provider_stats import Tally, last_day
from tidings.logs import get_logger
from tidings.providers.models import ProviderState, WarmingAdjustment
from tidings.security.audit import SYSTEM_ACTOR, record_audit

log = get_logger(__name__)
Volume = Field(ge=1, le=100_000_000)


class WarmingPlan(BaseModel):
    """Either explicit daily volumes (``steps``, like seed 002's warming_schedule.json) or a
    ramp from ``start_volume`` to ``target_volume`` over ``days`` (exponential or linear)."""

    model_config = ConfigDict(extra="forbid")

    steps: list[int] | None = Field(default=None, min_length=1, max_length=366)
    start_volume: int = Field(default=50, ge=1, le=100_000_000)
    target_volume: int = Field(default=3000, ge=1, le=100_000_000)
    days: int = Field(default=30, ge=1, le=366)
    curve: Literal["exponential", "linear"] = "exponential"
    bounce_hold: float = Field(default=0.05, ge=0, le=1)
    complaint_hold: float = Field(default=0.001, ge=0, le=1)
    bounce_cut: float = Field(default=0.10, ge=0, le=1)
    complaint_cut: float = Field(default=0.002, ge=0, le=1)
    complaint_pause: float = Field(default=0.003, ge=0, le=1)

    @model_validator(mode="after")
    def _ramp_rises(self) -> WarmingPlan:
        if self.steps is None and self.target_volume < self.start_volume:
            raise ValueError("target_volume must be at least start_volume")
        if self.steps is not None and any(step < 1 for step in self.steps):
            raise ValueError("every step is a volume of at least 1")
        if not self.bounce_hold <= self.bounce_cut:
            raise ValueError("bounce_hold must be at most bounce_cut")
        if not self.complaint_hold <= self.complaint_cut <= self.complaint_pause:
            raise ValueError("complaint_hold <= complaint_cut <= complaint_pause, in that order")
        return self

    @property
    def length(self) -> int:
        return len(self.steps) if self.steps is not None else self.days

    def volume(self, day: int) -> int | None:
        """The cap of the plan's ``day`` (from 1); None once the plan is over."""
        if day > self.length:
            return None
        if self.steps is not None:
            return self.steps[day - 1]
        if self.days == 1:
            return self.target_volume
        progress = (day - 1) / (self.days - 1)
        start, target = self.start_volume, self.target_volume
        if self.curve == "linear":
            return round(start + (target - start) * progress)
        growth: float = (target / start) ** progress
        return round(start * growth)


@dataclass(frozen=True)
class Decision:
    action: Literal["start", "advance", "hold", "cut", "pause", "done"]
    plan_day: int
    cap: int | None
    reason: str


def decide(plan: WarmingPlan, plan_day: int, cap: int, last: Tally) -> Decision:
    """The next day's step from the last day's figures (the rule in the module docstring)."""
    bounce, complaint = last.bounce_rate, last.complaint_rate
    figures = (
        f"last day: {last.sent} sent, bounce rate {bounce:.2%}, complaint rate {complaint:.3%}"
    )
    if last.sent == 0:
        return Decision("hold", plan_day, cap, "nothing was sent over the last day: the plan waits")
    if complaint >= plan.complaint_pause:
        reason = f"{figures} ≥ {plan.complaint_pause:.1%} complaints: sending paused"
        return Decision("pause", plan_day, cap, reason)
    if bounce > plan.bounce_cut or complaint > plan.complaint_cut:
        first = plan.volume(1) or 1
        reason = (
            f"{figures} (cut above {plan.bounce_cut:.0%} bounces or {plan.complaint_cut:.1%} "
            "complaints): cap halved"
        )
        return Decision("cut", plan_day, max(first, cap // 2), reason)
    if bounce > plan.bounce_hold or complaint > plan.complaint_hold:
        reason = (
            f"{figures} (hold above {plan.bounce_hold:.0%} bounces or "
            f"{plan.complaint_hold:.1%} complaints): same cap again"
        )
        return Decision("hold", plan_day, cap, reason)
    following = plan.volume(plan_day + 1)
    if following is None:
        return Decision("done", plan_day + 1, None, f"{figures}: the plan is complete")
    return Decision("advance", plan_day + 1, following, f"{figures}: next step")


async def todays_cap(
    session: AsyncSession, plan: WarmingPlan, state: ProviderState, today: date, now: datetime
) -> int | None:
    """Today's warming cap of the provider whose state row the caller holds locked; on the
    first call of a new day it decides the step (and may pause the provider). Does not commit."""
    if state.warming_date == today:
        return state.warming_cap
    if state.warming_date is None:
        first = plan.volume(1)
        decision = Decision("start", 1, first, f"warming starts at {first} a day")
    elif state.warming_cap is None and state.warming_day is not None:
        return None  # the plan was completed earlier
    else:
        last = await last_day(session, state.provider_id, now)
        decision = decide(plan, state.warming_day or 1, state.warming_cap or 1, last)
    state.warming_day, state.warming_date, state.warming_cap = (
        decision.plan_day, today, decision.cap,
    )  # fmt: skip
    session.add(
        WarmingAdjustment(
            provider_id=state.provider_id,
            day=today,
            plan_day=decision.plan_day,
            cap=decision.cap or 0,
            action=decision.action,
            reason=decision.reason,
            created_at=now,
        )
    )
    if decision.action == "pause":
        pause(session, state, decision.reason, now)
    return decision.cap


def pause(session: AsyncSession, state: ProviderState, reason: str, now: datetime) -> None:
    """Stop all sending through the provider, and raise the alert (audit log and error log)."""
    state.paused_at, state.paused_reason = now, reason
    record_audit(
        session, SYSTEM_ACTOR, "provider.paused", "provider", state.provider_id, {"reason": reason}
    )
    log.error("warming.provider_paused", provider=state.provider_id, reason=reason)
