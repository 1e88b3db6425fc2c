"""Recording a batch while its lease is renewed: the two statements lock the same rows, and a
deadlock between them would lose the record of a batch already sent (which is then sent again
when its lease ends). Both lock in id order, so neither ever waits for the other in a cycle."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta

import httpx
import pytest

from tests.delivery.support import fill_subscribers, send_campaign
from tidings.campaigns.models import DeliveryStatus
from tidings.db.types import utcnow
from tidings.delivery.outbox import Claimed, Outcome, claim_batch, record_outcomes, renew
from tidings.runtime import Runtime

ROUNDS = 15


async def test_renewing_and_recording_the_same_batch_at_once_never_deadlock(
    client: httpx.AsyncClient, db: Runtime
) -> None:
    if db.database.dialect != "postgresql":
        pytest.skip("SQLite has one writer: nothing to deadlock")
    await fill_subscribers(db, 600)
    await send_campaign(client, db)
    for _ in range(ROUNDS):
        async with db.database.sessions() as session:
            claimed = await claim_batch(session, 600, 60, utcnow() + timedelta(days=1))
        assert len(claimed) == 600
        await asyncio.gather(_record_all_queued(db, claimed), _renew_all(db, claimed))


async def _record_all_queued(db: Runtime, claimed: list[Claimed]) -> None:
    outcomes = [
        Outcome(c, DeliveryStatus.queued, retry_at=utcnow(), uncounted=True) for c in claimed
    ]
    random.shuffle(outcomes)
    async with db.database.sessions() as session:
        await record_outcomes(session, outcomes, utcnow())


async def _renew_all(db: Runtime, claimed: list[Claimed]) -> None:
    shuffled = random.sample(claimed, len(claimed))
    for _ in range(3):
        async with db.database.sessions() as session:
            await renew(session, shuffled, 60, utcnow())
