"""Engagement scores: raised by people's opens and clicks as they are recorded, and decayed to
the present by the hourly refresh, on both databases."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select, update

from tests.delivery.support import fill_subscribers
from tidings.audience.models import Subscriber
from tidings.db.types import utcnow
from tidings.runtime import Runtime
from tidings.tracking.engagement import add_engagement, decayed, score
from tidings.tracking.events import EventType, InboundEvent
from tidings.tracking.scores import refresh_scores
from tidings.tracking.service import FeedbackPolicy, record_events


def test_the_formula_rises_with_each_event_and_halves_its_sum_every_thirty_days() -> None:
    now = utcnow()
    assert score(0) == 0 and score(1) == 22.1 and score(3) == 52.8 and score(100) == 100.0
    assert decayed(4.0, now, now + timedelta(days=30)) == pytest.approx(2.0)
    total, since = add_engagement(0.0, None, [("clicked", now), ("opened", now)])
    assert (total, since, score(total)) == (4.0, now, 63.2)
    late, _ = add_engagement(total, since, [("opened", now - timedelta(days=60))])
    assert late == 5.0  # a late event counts as of the sum's time: the sum never runs back


async def test_refresh_decays_scores_to_the_present(client: httpx.AsyncClient, db: Runtime) -> None:
    await fill_subscribers(db, 2)
    now = utcnow()
    async with db.database.sessions() as session:
        await session.execute(
            update(Subscriber)
            .where(Subscriber.id == 1)
            .values(engagement_sum=4.0, engagement_score=63.2, engaged_at=now - timedelta(days=30))
        )
        await session.commit()
        assert await refresh_scores(session, now) == 1  # subscriber 2 never engaged
        again = await refresh_scores(session, now)
        rows = (await session.execute(select(Subscriber.id, Subscriber.engagement_sum,
                Subscriber.engagement_score).order_by(Subscriber.id))).all()  # fmt: skip
    assert again == 0
    assert rows[0][1] == pytest.approx(2.0) and rows[0][2] == 39.3
    assert tuple(rows[1][1:]) == (0.0, 0.0)


async def test_machine_opens_do_not_raise_a_score(client: httpx.AsyncClient, db: Runtime) -> None:
    await fill_subscribers(db, 1)
    now = utcnow()
    events = [
        InboundEvent(EventType.opened, now, "api", "a", recipient="user0@example.org"),
        InboundEvent(
            EventType.opened, now, "api", "b", recipient="user0@example.org", machine=True
        ),
    ]
    async with db.database.sessions() as session:
        written = await record_events(session, events, FeedbackPolicy(), now)
        subscriber = await session.get_one(Subscriber, 1)
    assert len(written) == 2 and subscriber.engagement_score == 22.1
