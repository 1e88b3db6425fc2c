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

from tidings.audience.models import SuppressionReason
from tidings.campaigns.models import DeliveryStatus
from tidings.db.engine import Database
from tidings.db.types import utcnow
from tidings.delivery.compose import Composer, PreparedBatch
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
from tidings.transports.base import Outcome as SendOutcome
from tidings.transports.base import SendResult, Transport

log = structlog.get_logger(__name__)


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


def judge(
    result: SendResult, delivery: Claimed, policy: RetryPolicy, provider: str, now: datetime
) -> Outcome:
    """What a transport's answer means for the delivery."""
    if result.outcome == SendOutcome.accepted:
        return Outcome(delivery, DeliveryStatus.sent, None, provider, result.provider_message_id)
    if result.outcome == SendOutcome.permanent:
        return Outcome(delivery, DeliveryStatus.failed, result.detail, provider)
    if delivery.attempts >= policy.max_attempts:
        reason = f"gave up after {delivery.attempts} attempts; last: {result.detail}"
        return Outcome(delivery, DeliveryStatus.failed, reason, provider)
    retry_at = now + timedelta(seconds=policy.delay(delivery.attempts))
    return Outcome(delivery, DeliveryStatus.queued, result.detail, provider, retry_at=retry_at)


def is_hard_bounce(result: SendResult) -> bool:
    """A permanent failure naming the address (RFC 3463 5.1.x: bad mailbox, bad domain)."""
    code = result.status_code
    return result.outcome == SendOutcome.permanent and code is not None and code.startswith("5.1.")


class DeliveryWorker:
    def __init__(
        self,
        database: Database,
        transport: Transport,
        composer: Composer,
        policy: RetryPolicy,
        options: WorkerOptions,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.database, self.transport, self.composer = database, transport, composer
        self.policy, self.options, self.clock = policy, options, clock
        self._unrecorded: dict[int, PreparedBatch] = {}  # by id(): claimed, not yet recorded

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set; then finish or give back what was claimed."""
        queue: asyncio.Queue[PreparedBatch | None] = asyncio.Queue(self.options.prefetch)
        senders = [asyncio.create_task(self._send_loop(queue)) for _ in range(self.options.senders)]
        heartbeat = asyncio.create_task(self._keep_leases())
        await self._claim_loop(queue, stop)
        for _ in senders:
            await queue.put(None)
        _, late = await asyncio.wait(senders, timeout=self.options.grace_seconds)
        for task in [*late, heartbeat]:
            task.cancel()
        await asyncio.gather(*late, heartbeat, return_exceptions=True)
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
        async with self.database.sessions() as session:
            claimed = await claim_batch(
                session, options.batch_size, options.lease_seconds, self.clock()
            )
            if not claimed:
                return None
            batch = await self.composer.prepare(session, claimed, self.clock())
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

    async def _renew(self, claimed: list[Claimed]) -> set[int]:
        async with self.database.sessions() as session:
            return await renew(session, claimed, self.options.lease_seconds, self.clock())

    async def _deliver(self, batch: PreparedBatch) -> None:
        held = await self._renew(batch.claimed)
        if len(held) < len(batch.claimed):  # a lease ran out: another worker has those now
            log.warning("worker.lease_lost", deliveries=len(batch.claimed) - len(held))
            batch.keep_only(held)
        results = await self.transport.send(batch.messages) if batch.messages else []
        now = self.clock()
        provider = self.transport.name
        outcomes = list(batch.decided)
        outcomes += [
            judge(r, batch.by_id[r.delivery_id], self.policy, provider, now) for r in results
        ]
        bounced = [batch.hashes[r.delivery_id] for r in results if is_hard_bounce(r)]
        async with self.database.sessions() as session:
            await suppress_addresses(session, bounced, SuppressionReason.bounced)
            await record_outcomes(session, outcomes, now)
        del self._unrecorded[id(batch)]
        count_outcomes(provider, outcomes)

    async def _give_back(self) -> None:
        """Release every batch claimed but not recorded, so another worker sends it now."""
        claimed = [d for batch in self._unrecorded.values() for d in batch.claimed]
        self._unrecorded.clear()
        if not claimed:
            return
        async with self.database.sessions() as session:
            await release(session, claimed, self.clock())
        log.info("worker.released", deliveries=len(claimed))
