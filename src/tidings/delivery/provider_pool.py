"""The providers a worker sends through, as lanes: each with its transport (one pooled client),
its limits, its circuit breaker and whether its quota is spent for now. Reloaded from the
database every few seconds, so a provider added, changed or disabled takes effect without a
restart; a lane whose provider did not change keeps its transport and its breaker. With no
provider configured, the instance's transport (``TIDINGS_MAIL_TRANSPORT``) is the only lane.

Times here are monotonic seconds (``time.monotonic``), except where a wall-clock instant is
stored (a deferred delivery's ``next_attempt_at``).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select

from tidings.db.engine import Database
from tidings.db.types import utcnow
from tidings.delivery.circuit import BreakerPolicy, CircuitBreaker, CircuitState
from tidings.delivery.provider_stats import counter_totals
from tidings.delivery.quota import Limits
from tidings.delivery.routing import Candidate, Router, Rule
from tidings.delivery.warming import WarmingPlan
from tidings.logs import get_logger
from tidings.providers.models import Provider, RoutingRule
from tidings.transports.base import Transport

log = get_logger(__name__)
FALLBACK_ID = 0  # the lane of the instance's transport when no provider is configured


@dataclass
class Lane:
    id: int
    name: str
    transport: Transport
    limits: Limits
    breaker: CircuitBreaker
    version: datetime | None = None  # the provider's updated_at: rebuilt when it changes
    saturated_until: float = 0.0  # the quota grants nothing before this
    saturated_at: datetime | None = None  # the same instant on the wall clock
    saturated_by: str = ""

    def usable(self) -> bool:
        return time.monotonic() >= self.saturated_until and self.breaker.available() > 0

    def busy_not_broken(self) -> bool:
        """Not usable now only for a while (its quota, a Retry-After), not for failing."""
        return self.breaker.state != CircuitState.open

    def saturate(self, until: datetime | None, limited_by: str, now: datetime) -> None:
        if until is None:
            return
        self.saturated_until = time.monotonic() + max(0.0, (until - now).total_seconds())
        self.saturated_at, self.saturated_by = until, limited_by

    def blocked_until(self) -> float | None:
        """When (monotonic) the lane may take mail again, if it cannot now: once its quota
        frees up and its circuit may be tried again, whichever is later."""
        mono = time.monotonic()
        ends = [t for t in (self.saturated_until, self.breaker.opens_at()) if t and t > mono]
        return max(ends, default=None)

    def free_at(self, now: datetime) -> datetime | None:
        """``blocked_until`` on the wall clock (the quota's own instant where it binds)."""
        until = self.blocked_until()
        if until is None:
            return None
        if until == self.saturated_until and self.saturated_at is not None:
            return self.saturated_at
        return now + timedelta(seconds=until - time.monotonic())


class ProviderPool:
    def __init__(
        self,
        database: Database,
        fallback: Transport,
        open_transport: Callable[[Provider], Transport],
        policy: BreakerPolicy | None = None,
        reload_seconds: float = 5.0,
        rng: random.Random | None = None,
    ) -> None:
        self.database, self._fallback, self._open = database, fallback, open_transport
        self._policy = policy or BreakerPolicy()
        self._reload_seconds = reload_seconds
        self._rng = rng or random.Random()
        self._reload_at = 0.0
        self.lanes: dict[int, Lane] = {FALLBACK_ID: self._fallback_lane()}
        self.router = Router([Candidate(FALLBACK_ID, fallback.name)], rng=self._rng)

    async def refresh(self, force: bool = False) -> None:
        """Reload providers, rules and reputations, if the last load is a few seconds old."""
        if not force and time.monotonic() < self._reload_at:
            return
        self._reload_at = time.monotonic() + self._reload_seconds
        async with self.database.sessions() as session:
            providers = list(
                await session.scalars(
                    select(Provider).where(Provider.enabled).order_by(Provider.id)
                )
            )
            rules = list(await session.scalars(select(RoutingRule).where(RoutingRule.enabled)))
            reputations = await counter_totals(
                session, utcnow() - timedelta(days=1), [p.id for p in providers]
            )
        lanes = {}
        for provider in providers:
            lane = self._lane_for(provider)
            if lane is not None:
                lanes[provider.id] = lane
        for lane_id, old in self.lanes.items():
            if lane_id != FALLBACK_ID and lanes.get(lane_id) is not old:
                await old.transport.close()
        self.lanes = lanes or {FALLBACK_ID: self.lanes.get(FALLBACK_ID) or self._fallback_lane()}
        # (the fallback lane keeps its breaker while no provider is configured)
        candidates = [
            Candidate(
                p.id, p.name, p.priority, p.weight, frozenset(p.domains),
                reputations[p.id].reputation if p.id in reputations else 100.0,
            )
            for p in providers if p.id in self.lanes
        ] or [Candidate(FALLBACK_ID, self._fallback.name)]  # fmt: skip
        self.router = Router(candidates, [_rule(r) for r in rules], self._rng)

    @property
    def needs_parts(self) -> bool:
        """Does some provider take a message's parts rather than its MIME bytes?"""
        return any(lane.transport.needs_parts for lane in self.lanes.values())

    def next_change(self) -> float | None:
        """The next moment (monotonic) a lane that is not usable now may become usable."""
        moments = [lane.blocked_until() for lane in self.lanes.values()]
        return min((t for t in moments if t is not None), default=None)

    def earliest_free(self, tried: Iterable[int], now: datetime) -> tuple[datetime | None, str]:
        """When some provider not in ``tried`` may take mail again, and why it cannot now."""
        skip = set(tried)
        best: tuple[datetime, str] | None = None
        for lane in self.lanes.values():
            free = lane.free_at(now) if lane.id not in skip else None
            if free is not None and (best is None or free < best[0]):
                reason = lane.saturated_by or f"circuit {lane.breaker.state}"
                best = (free, f"waiting for {lane.name}: {reason}")
        return best if best is not None else (None, "no provider can send this message now")

    def any_usable(self, tried: Iterable[int]) -> bool:
        skip = set(tried)
        return any(lane.usable() for lane in self.lanes.values() if lane.id not in skip)

    def circuits(self) -> dict[str, str]:
        return {lane.name: lane.breaker.state.value for lane in self.lanes.values()}

    async def close(self) -> None:
        for lane in self.lanes.values():
            if lane.id != FALLBACK_ID:
                await lane.transport.close()
        await self._fallback.close()

    def _lane_for(self, provider: Provider) -> Lane | None:
        current = self.lanes.get(provider.id)
        if current is not None and current.version == provider.updated_at:
            return current
        try:
            transport = self._open(provider)
            limits = _limits(provider)
        except Exception as exc:  # a provider we cannot use must not stop the others
            log.error("providers.unusable", provider=provider.name, error=str(exc))
            return None
        breaker = current.breaker if current is not None else self._breaker()
        return Lane(provider.id, provider.name, transport, limits, breaker, provider.updated_at)

    def _fallback_lane(self) -> Lane:
        return Lane(
            FALLBACK_ID, self._fallback.name, self._fallback, Limits(FALLBACK_ID), self._breaker()
        )

    def _breaker(self) -> CircuitBreaker:
        return CircuitBreaker(self._policy)


def _limits(provider: Provider) -> Limits:
    plan = provider.warming_plan
    return Limits(
        provider.id,
        provider.per_second,
        provider.per_minute,
        provider.per_hour,
        provider.per_day,
        provider.timezone,
        WarmingPlan.model_validate(plan) if plan is not None else None,
    )


def _rule(rule: RoutingRule) -> Rule:
    return Rule(
        rule.name,
        rule.position,
        frozenset(rule.recipient_domains),
        rule.min_engagement_score,
        rule.provider_id,
    )
