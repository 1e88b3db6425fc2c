"""The delivery worker: claim a batch, compose its messages, send them, record the results —
with the stages overlapping (a bounded queue of composed batches between one producer and a few
senders), so the database, the CPU and the mail server are all busy at once.

State lives in the database only. A worker that dies leaves its claimed batch leased; when the
lease ends another worker claims it again and sends it with the same Message-IDs. On SIGTERM a
worker stops claiming, sends and records what it holds (for up to ``grace_seconds``), and gives
back whatever it could not send.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy.exc import DBAPIError

from tidings.audience.models import SuppressionReason
from tidings.campaigns.models import DeliveryStatus
from tidings.db.engine import Database
from tidings.db.types import utcnow
from tidings.delivery import provider_stats
from tidings.delivery.circuit import BreakerPolicy
from tidings.delivery.compose import Composer, PreparedBatch
from tidings.delivery.dispatch import Deferred, Dispatched, Dispatcher, Finished
from tidings.delivery.heartbeat import Heartbeat
from tidings.delivery.metrics import count_outcomes
from tidings.delivery.outbox import (
    Claimed,
    Outcome,
    claim_batch,
    record_outcomes,
    release,
    renew,
    suppress_addresses,
)
from tidings.delivery.provider_pool import ProviderPool
from tidings.providers.models import Provider
from tidings.transports.base import Outcome as SendOutcome
from tidings.transports.base import Transport

log = structlog.get_logger(__name__)

RECORD_TRIES = 3


@dataclass(frozen=True)
class RetryPolicy:
    """Capped exponential backoff with full jitter: the n-th retry waits a uniformly random time
    in [0, min(cap, base * 2**(n-1))], so retries from many workers spread out."""

    base_seconds: float = 60.0
    cap_seconds: float = 6 * 3600.0
    max_attempts: int = 8

    def delay(self, attempt: int) -> float:
        ceiling = min(self.cap_seconds, self.base_seconds * 2 ** min(attempt - 1, 64))
        return random.uniform(0, ceiling)


@dataclass(frozen=True)
class WorkerOptions:
    batch_size: int = 500
    lease_seconds: float = 300.0
    idle_seconds: float = 0.5  # how long to wait when there is nothing to send
    # Batches being sent at once. One (spread over all SMTP connections) means a crash leaves at
    # most one batch sent but not recorded, the most that is ever sent twice.
    senders: int = 1
    prefetch: int = 2  # composed batches waiting for a sender
    grace_seconds: float = 20.0  # on shutdown, time to finish what was claimed
    # How long a batch may wait for provider quota or a closed circuit before the rest is
    # deferred (queued again for when a provider frees up).
    provider_wait_seconds: float = 15.0
    provider_chunk: int = 100  # messages per send call to a configured provider
    heartbeat_seconds: float = 5.0


def judge(finished: Finished, delivery: Claimed, policy: RetryPolicy, now: datetime) -> Outcome:
    """What a provider's answer means for the delivery. A retry waits for the backoff, and at
    least as long as the provider asked (Retry-After)."""
    result, provider, route = finished.result, finished.provider, finished.route
    if result.outcome == SendOutcome.accepted:
        message_id = result.provider_message_id
        return Outcome(delivery, DeliveryStatus.sent, None, provider, message_id, route=route)
    if result.outcome == SendOutcome.permanent:
        return Outcome(delivery, DeliveryStatus.failed, result.detail, provider, route=route)
    if delivery.attempts >= policy.max_attempts:
        reason = f"gave up after {delivery.attempts} attempts; last: {result.detail}"
        return Outcome(delivery, DeliveryStatus.failed, reason, provider, route=route)
    delay = max(policy.delay(delivery.attempts), result.retry_after or 0.0)
    retry_at = now + timedelta(seconds=delay)
    return Outcome(
        delivery, DeliveryStatus.queued, result.detail, provider, retry_at=retry_at, route=route
    )


def deferral(deferred: Deferred, delivery: Claimed) -> Outcome:
    """No provider could take the message in time: queued for when one can, attempt not
    counted (a delivery waits for a provider; it does not fail for lack of one)."""
    return Outcome(
        delivery, DeliveryStatus.queued, deferred.reason, retry_at=deferred.retry_at,
        uncounted=True,
    )  # fmt: skip


class DeliveryWorker:
    def __init__(
        self,
        database: Database,
        transport: Transport,
        composer: Composer,
        policy: RetryPolicy,
        options: WorkerOptions,
        clock: Callable[[], datetime] = utcnow,
        open_provider: Callable[[Provider], Transport] | None = None,
        breaker: BreakerPolicy | None = None,
    ) -> None:
        """``transport`` sends when no provider is configured; ``open_provider`` makes the
        transport of a configured provider."""
        self.database, self.transport, self.composer = database, transport, composer
        self.policy, self.options, self.clock = policy, options, clock
        self.pool = ProviderPool(
            database, transport, open_provider or _no_provider_transports, breaker
        )
        self.dispatcher = Dispatcher(
            database, self.pool, clock, options.provider_wait_seconds, options.provider_chunk
        )
        self.heartbeat = Heartbeat(clock())
        self._unrecorded: dict[int, PreparedBatch] = {}  # by id(): claimed, not yet recorded

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set; then finish or give back what was claimed."""
        queue: asyncio.Queue[PreparedBatch | None] = asyncio.Queue(self.options.prefetch)
        senders = [asyncio.create_task(self._send_loop(queue)) for _ in range(self.options.senders)]
        background = [
            asyncio.create_task(self._keep_leases()),
            asyncio.create_task(self._keep_beating()),
        ]
        await self._claim_loop(queue, stop)
        for _ in senders:
            await queue.put(None)
        _, late = await asyncio.wait(senders, timeout=self.options.grace_seconds)
        for task in [*late, *background]:
            task.cancel()
        await asyncio.gather(*late, *background, return_exceptions=True)
        await self._give_back()

    async def run_once(self) -> int:
        """Claim, send and record one batch (tests and benchmarks); returns its size."""
        batch = await self._claim_and_compose()
        if batch is not None:
            await self._deliver(batch)
        return 0 if batch is None else len(batch.claimed)

    async def _claim_loop(
        self, queue: asyncio.Queue[PreparedBatch | None], stop: asyncio.Event
    ) -> None:
        while not stop.is_set():
            try:
                batch = await self._claim_and_compose()
            except Exception:
                log.exception("worker.claim_failed")
                batch = None
            if batch is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.options.idle_seconds)
                continue
            await queue.put(batch)

    async def _claim_and_compose(self) -> PreparedBatch | None:
        options = self.options
        await self.pool.refresh()  # the providers decide whether messages keep their parts
        async with self.database.sessions() as session:
            claimed = await claim_batch(
                session, options.batch_size, options.lease_seconds, self.clock()
            )
            if not claimed:
                return None
            parts = self.pool.needs_parts
            batch = await self.composer.prepare(session, claimed, self.clock(), parts)
        self._unrecorded[id(batch)] = batch
        return batch

    async def _send_loop(self, queue: asyncio.Queue[PreparedBatch | None]) -> None:
        while (batch := await queue.get()) is not None:
            try:
                await self._deliver(batch)
            except Exception:  # the batch stays leased and is sent again after its lease
                log.exception("worker.batch_failed", deliveries=len(batch.claimed))
                self._unrecorded.pop(id(batch), None)

    async def _keep_leases(self) -> None:
        """Renew the leases of every batch held, a few times per lease: a batch waiting behind
        another, or sent to a slow server, is never claimed by a second worker meanwhile."""
        while True:
            await asyncio.sleep(self.options.lease_seconds / 3)
            held = [d for batch in list(self._unrecorded.values()) for d in batch.claimed]
            if held:
                try:
                    await self._renew(held)
                except Exception:  # the next beat tries again; the lease has time left
                    log.exception("worker.renew_failed")

    async def _keep_beating(self) -> None:
        """Tell the fleet this worker is alive, how fast it sends, and its circuits."""
        while True:
            try:
                async with self.database.sessions() as session:
                    await self.heartbeat.beat(session, self.pool.circuits(), self.clock())
            except Exception:  # a missed beat only makes the status page older
                log.exception("worker.heartbeat_failed")
            await asyncio.sleep(self.options.heartbeat_seconds)

    async def _renew(self, claimed: list[Claimed]) -> set[int]:
        async with self.database.sessions() as session:
            return await renew(session, claimed, self.options.lease_seconds, self.clock())

    async def _deliver(self, batch: PreparedBatch) -> None:
        held = await self._renew(batch.claimed)
        if len(held) < len(batch.claimed):  # a lease ran out: another worker has those now
            log.warning("worker.lease_lost", deliveries=len(batch.claimed) - len(held))
            batch.keep_only(held)
        sendable = batch.sendable()
        sent = await self.dispatcher.send(sendable) if sendable else Dispatched()
        now = self.clock()
        outcomes = list(batch.decided)
        outcomes += [
            judge(f, batch.by_id[f.result.delivery_id], self.policy, now) for f in sent.finished
        ]
        outcomes += [deferral(d, batch.by_id[d.message.delivery_id]) for d in sent.deferred]
        bounced = [
            batch.hashes[f.result.delivery_id] for f in sent.finished if f.result.is_hard_bounce
        ]
        await self._record(outcomes, bounced, sent, now)
        del self._unrecorded[id(batch)]
        count_outcomes(outcomes)
        self.heartbeat.count_sent(sum(o.status == DeliveryStatus.sent for o in outcomes))

    async def _record(
        self, outcomes: list[Outcome], bounced: list[str], sent: Dispatched, now: datetime
    ) -> None:
        """Write a sent batch's results, retrying a database error a few times: a batch sent but
        not recorded is sent again when its lease ends. Safe to repeat (writes are fenced by
        the claimed attempt; a retried statistics row may count a batch twice, never lose it)."""
        for attempt in range(1, RECORD_TRIES + 1):
            try:
                async with self.database.sessions() as session:
                    await suppress_addresses(session, bounced, SuppressionReason.bounced)
                    await record_outcomes(session, outcomes, now)
                    # Apart, after the outcomes: the minute's statistics row is shared by every
                    # worker and locked while it is added to; it must not hold up the big one.
                    await provider_stats.record(session, sent.tallies, now)
                    await session.commit()
                return
            except DBAPIError:
                if attempt == RECORD_TRIES:
                    raise
                log.warning("worker.record_retried", attempt=attempt, exc_info=True)
                await asyncio.sleep(0.5 * attempt)

    async def _give_back(self) -> None:
        """Release every batch claimed but not recorded, so another worker sends it now."""
        claimed = [d for batch in self._unrecorded.values() for d in batch.claimed]
        self._unrecorded.clear()
        if not claimed:
            return
        async with self.database.sessions() as session:
            await release(session, claimed, self.clock())
        log.info("worker.released", deliveries=len(claimed))


def _no_provider_transports(provider: Provider) -> Transport:
    raise RuntimeError("this worker was built without provider transports")
