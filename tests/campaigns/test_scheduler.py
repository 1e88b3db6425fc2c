"""The scheduler on both databases, driven by an explicit clock: due campaigns fire once per
slot, runs get one delivery per recipient, and finished runs settle the campaign's status."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import func, select

from tests.factories import add_subscriber, add_topic, post_created
from tidings.campaigns.materialize import materialize_run
from tidings.campaigns.models import Campaign, CampaignRun, Delivery
from tidings.campaigns.scheduler import scheduler_tick
from tidings.runtime import Runtime

START = datetime(2030, 3, 1, 9, 0, tzinfo=UTC)


async def add_campaign(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    body = {"name": "News", "html": "<p>Hi {name}</p>", "schedule_time": START.isoformat()}
    return await post_created(client, "/campaigns/", {**body, **fields})


async def runs_of(db: Runtime, campaign_id: int) -> list[CampaignRun]:
    async with db.database.sessions() as s:
        query = select(CampaignRun).where(CampaignRun.campaign_id == campaign_id)
        return list((await s.scalars(query.order_by(CampaignRun.scheduled_for))).all())


async def recipients(db: Runtime, run_id: int) -> list[int]:
    async with db.database.sessions() as s:
        query = select(Delivery.subscriber_id).where(Delivery.run_id == run_id)
        return sorted((await s.scalars(query)).all())


async def campaign(client: httpx.AsyncClient, campaign_id: int) -> dict[str, Any]:
    found: dict[str, Any] = (await client.get(f"/campaigns/{campaign_id}")).json()
    return found


async def test_a_due_one_time_campaign_fires_once_for_its_audience(
    client: httpx.AsyncClient, db: Runtime
) -> None:
    topic = await add_topic(client, "News")
    ann = await add_subscriber(client, "ann@example.com", topic_ids=[topic["id"]])
    await add_subscriber(client, "bob@example.com")  # not on the topic
    gone = await add_subscriber(client, "cy@example.com", topic_ids=[topic["id"]])
    assert (await client.delete(f"/subscribers/{gone['id']}")).status_code == 200
    created = await add_campaign(client, topic_ids=[topic["id"]])

    await scheduler_tick(db.database, START - timedelta(seconds=1))
    assert await runs_of(db, created["id"]) == []
    await scheduler_tick(db.database, START + timedelta(seconds=1))
    await scheduler_tick(db.database, START + timedelta(minutes=5))
    [run] = await runs_of(db, created["id"])
    assert (run.scheduled_for, run.status, run.total, run.queued) == (START, "sending", 1, 1)
    assert await recipients(db, run.id) == [ann["id"]]
    shown = await campaign(client, created["id"])
    assert (shown["status"], shown["runs"], shown["next_run_at"]) == ("running", 1, None)


async def test_a_run_without_recipients_finishes_and_the_campaign_is_done(
    client: httpx.AsyncClient, db: Runtime
) -> None:
    created = await add_campaign(client, tags=["nobody-has-this"])
    await scheduler_tick(db.database, START)
    [run] = await runs_of(db, created["id"])
    assert (run.status, run.total) == ("done", 0)
    assert (await campaign(client, created["id"]))["status"] == "done"


async def test_after_downtime_a_recurring_campaign_fires_once_not_once_per_missed_slot(
    client: httpx.AsyncClient, db: Runtime
) -> None:
    created = await add_campaign(client, frequency="daily", tags=["nobody"])
    await scheduler_tick(db.database, START + timedelta(days=3, hours=1))
    assert [r.scheduled_for for r in await runs_of(db, created["id"])] == [START]
    shown = await campaign(client, created["id"])
    assert shown["next_run_at"] == (START + timedelta(days=4)).isoformat().replace("+00:00", "Z")
    assert shown["status"] == "scheduled"  # its run had no recipients and is done


async def test_with_catch_up_every_missed_slot_fires_in_turn(
    client: httpx.AsyncClient, db: Runtime
) -> None:
    created = await add_campaign(client, frequency="daily", catch_up=True, tags=["nobody"])
    now = START + timedelta(days=2, hours=1)
    for _ in range(5):
        await scheduler_tick(db.database, now)
    slots = [r.scheduled_for for r in await runs_of(db, created["id"])]
    assert slots == [START, START + timedelta(days=1), START + timedelta(days=2)]


async def test_paused_and_draft_campaigns_do_not_fire(
    client: httpx.AsyncClient, db: Runtime
) -> None:
    paused = await add_campaign(client)
    assert (await client.post(f"/campaigns/{paused['id']}/pause")).status_code == 200
    draft = await post_created(client, "/campaigns/", {"name": "Draft"})
    await scheduler_tick(db.database, START + timedelta(hours=1))
    assert await runs_of(db, paused["id"]) == await runs_of(db, draft["id"]) == []


async def test_materializing_a_run_again_adds_nobody_twice(
    client: httpx.AsyncClient, db: Runtime
) -> None:
    for i in range(5):
        await add_subscriber(client, f"p{i}@example.com")
    created = await add_campaign(client)
    await scheduler_tick(db.database, START)
    [run] = await runs_of(db, created["id"])
    async with db.database.sessions() as s:
        again = await s.get_one(CampaignRun, run.id)
        owner = await s.get_one(Campaign, created["id"])
        await materialize_run(s, again, owner)
        count = await s.scalar(select(func.count()).where(Delivery.run_id == run.id))
    assert count == 5


async def test_a_run_of_a_campaign_paused_before_its_deliveries_were_written_stays_paused(
    client: httpx.AsyncClient, db: Runtime
) -> None:
    ann = await add_subscriber(client, "ann@example.com")
    draft = await post_created(client, "/campaigns/", {"name": "Now", "html": "<p>x</p>"})
    assert (await client.post(f"/campaigns/{draft['id']}/send")).status_code == 202
    assert (await client.post(f"/campaigns/{draft['id']}/pause")).json()["status"] == "paused"
    await scheduler_tick(db.database, START)
    [run] = await runs_of(db, draft["id"])
    assert (run.status, await recipients(db, run.id)) == ("paused", [ann["id"]])
    assert (await client.post(f"/campaigns/{draft['id']}/resume")).json()["status"] == "running"
    [run] = await runs_of(db, draft["id"])
    assert run.status == "sending"
