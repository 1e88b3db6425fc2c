"""Sending a composed batch through the providers.

Each message is routed (routing.Router) among the providers that are usable now; each provider's
share is granted by the fleet-wide quota (quota.acquire) and sent through its transport, all
providers at once. A transient failure is tried again at once on the next usable provider
(failover), and counts against the failing provider's circuit breaker. What no provider can
take within ``max_wait`` seconds (quotas spent, circuits open) is deferred: queued again for
when a provider frees up, without counting an attempt. So when no provider is healthy,
deliveries wait; they do not fail.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from tidings.db.engine import Database
from tidings.delivery.provider_pool import FALLBACK_ID, Lane, ProviderPool
from tidings.delivery.provider_stats import Tally
from tidings.delivery.quota import acquire
from tidings.delivery.routing import Route
from tidings.transports.base import Outcome, OutgoingMessage, SendResult

NO_PROVIDER_RECHECK = timedelta(seconds=30)  # a deferral with no known end looks again then


@dataclass
class Pending:
    """A message still to place, and what was tried for it."""

    message: OutgoingMessage
    score: float
    tried: set[int] = field(default_factory=set)
    last: Finished | None = None  # its last transient failure

    @property
    def recipient_domain(self) -> str:
        return self.message.recipient.rpartition("@")[2].lower()

    @property
    def sender_domain(self) -> str:
        content = self.message.content
        address = content.headers.from_address if content is not None else self.message.sender
        return address.rpartition("@")[2].lower()


@dataclass(frozen=True)
class Finished:
    """A provider's answer for a message: accepted, permanent, or (when no other provider was
    left to try) transient."""

    result: SendResult
    provider: str | None  # None: no provider was tried
    route: str


@dataclass(frozen=True)
class Deferred:
    message: OutgoingMessage
    retry_at: datetime
    reason: str


@dataclass
class Dispatched:
    finished: list[Finished] = field(default_factory=list)
    deferred: list[Deferred] = field(default_factory=list)
    tallies: dict[int, Tally] = field(default_factory=dict)  # by provider id, for statistics
    calls: int = 0  # send calls made


class Dispatcher:
    def __init__(
        self,
        database: Database,
        pool: ProviderPool,
        clock: Callable[[], datetime],
        max_wait: float = 15.0,
        chunk: int = 100,
    ) -> None:
        self.database, self.pool, self.clock, self.max_wait = database, pool, clock, max_wait
        # Messages per send call to a configured provider: its circuit sees the first results
        # (and can open) before the whole batch has gone to a failing provider.
        self.chunk = chunk

    async def send(self, messages: Sequence[tuple[OutgoingMessage, float]]) -> Dispatched:
        """Place every message (with its recipient's engagement score)."""
        await self.pool.refresh()
        report = Dispatched()
        pending = [Pending(message, score) for message, score in messages]
        deadline = time.monotonic() + self.max_wait
        while pending:
            groups, waiting = self._route(pending, report)
            calls = report.calls
            retries = await asyncio.gather(
                *(self._send_lane(self.pool.lanes[lane], items, report)
                  for lane, items in groups.items())
            )  # fmt: skip
            pending = waiting + [item for retry in retries for item in retry]
            if report.calls > calls and time.monotonic() < deadline:
                continue  # something went out: place the rest again at once
            wake = self.pool.next_change()
            if not pending or wake is None or wake >= deadline:
                break
            await asyncio.sleep(max(0.0, wake - time.monotonic()))
        for item in pending:
            self._give_up(item, report)
        return report

    def _route(
        self, pending: list[Pending], report: Dispatched
    ) -> tuple[dict[int, list[tuple[Pending, Route]]], list[Pending]]:
        """Each message's provider now; the messages that must wait for one."""
        groups: dict[int, list[tuple[Pending, Route]]] = {}
        waiting: list[Pending] = []
        router, lanes = self.pool.router, self.pool.lanes
        for item in pending:

            def usable(lane: int, tried: set[int] = item.tried) -> bool:
                return lane not in tried and lanes[lane].usable()

            route = router.route(item.recipient_domain, item.sender_domain, item.score, usable)
            if route is not None:
                groups.setdefault(route.provider.id, []).append((item, route))
            elif not router.serves(item.sender_domain):  # waiting would never end
                report.finished.append(_unserved(item))
            elif item.last is not None and not self._may_take_later(item):
                report.finished.append(item.last)  # failed where it was tried; nowhere left
            else:
                waiting.append(item)
        return groups, waiting

    def _may_take_later(self, item: Pending) -> bool:
        """Is there a provider not yet tried for the message that is only busy (quota spent,
        resting after a 429) rather than failing?"""
        return any(
            lane_id not in item.tried and lane.busy_not_broken()
            for lane_id, lane in self.pool.lanes.items()
        )

    async def _send_lane(
        self, lane: Lane, items: list[tuple[Pending, Route]], report: Dispatched
    ) -> list[Pending]:
        """Send what the lane's breaker and quota allow; returns the messages to place again."""
        items, unfit = _fit_for(lane, items)
        allowed = min(len(items), lane.breaker.available())
        if lane.id != FALLBACK_ID:
            allowed = min(allowed, self.chunk)
        take, rest = items[:allowed], items[allowed:]
        if take and not lane.limits.unlimited:
            if lane.limits.warming is not None:  # the scarce warming volume: most engaged first
                take.sort(key=lambda pair: -pair[0].score)
            async with self.database.sessions() as session:
                grant = await acquire(session, lane.limits, len(take), self.clock())
            if grant.granted < len(take):
                lane.saturate(grant.retry_at, grant.limited_by, self.clock())
                take, rest = take[: grant.granted], take[grant.granted :] + rest
        lane.breaker.taken(len(take))
        if not take:
            return unfit + [item for item, _ in rest]
        retries = await self._send_through(lane, take, report)
        return unfit + retries + [item for item, _ in rest]

    async def _send_through(
        self, lane: Lane, take: list[tuple[Pending, Route]], report: Dispatched
    ) -> list[Pending]:
        started = time.monotonic()
        results = await lane.transport.send([item.message for item, _ in take])
        report.calls += 1
        tally = report.tallies.setdefault(lane.id, Tally())
        tally.add_latency(time.monotonic() - started)
        retries: list[Pending] = []
        accepted = failed = 0
        for (item, route), result in zip(take, results, strict=True):
            reason = f"failover: {route.reason}" if item.tried else route.reason
            finished = Finished(result, lane.name, reason)
            if result.outcome == Outcome.transient:
                failed += 1
                tally.deferred += 1
                item.tried.add(lane.id)
                item.last = finished
                if result.retry_after:
                    lane.breaker.rest(result.retry_after)
                retries.append(item)
                continue
            accepted += 1
            if result.outcome == Outcome.accepted:
                tally.sent += 1
            else:
                tally.failed += 1
                tally.bounced_hard += result.is_hard_bounce
            report.finished.append(finished)
        lane.breaker.record(accepted, failed)
        return retries

    def _give_up(self, item: Pending, report: Dispatched) -> None:
        """No provider took the message in time: its last failure stands, or it waits for the
        first provider to free up (due at once if one already has: the time ran out)."""
        if item.last is not None:
            report.finished.append(item.last)
            return
        now = self.clock()
        retry_at, reason = self.pool.earliest_free(item.tried, now)
        if retry_at is None and self.pool.any_usable(item.tried):
            retry_at, reason = now, "a provider had no room in time; due again at once"
        report.deferred.append(
            Deferred(item.message, retry_at or now + NO_PROVIDER_RECHECK, reason)
        )


def _unserved(item: Pending) -> Finished:
    detail = (
        f"no enabled provider sends mail from {item.sender_domain}: add it to a provider's "
        "domains, or leave a provider's domains empty"
    )
    result = SendResult(item.message.delivery_id, Outcome.permanent, detail)
    return Finished(result, None, "unrouted")


def _fit_for(
    lane: Lane, items: list[tuple[Pending, Route]]
) -> tuple[list[tuple[Pending, Route]], list[Pending]]:
    """The messages the lane can take, and those composed without the parts its provider needs
    (a provider added since they were composed): those are not the provider's failure, they go
    to another provider or are composed again for a retry."""
    if not lane.transport.needs_parts:
        return items, []
    fit = [(item, route) for item, route in items if item.message.content is not None]
    unfit = [(item, route) for item, route in items if item.message.content is None]
    for item, route in unfit:
        detail = f"composed without its parts, which {lane.name} needs: composed again next time"
        result = SendResult(item.message.delivery_id, Outcome.transient, detail)
        item.tried.add(lane.id)
        item.last = Finished(result, lane.name, route.reason)
    return fit, [item for item, _ in unfit]
