"""Seed 000's content API on both databases: items for a topic, sent on schedule or now."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import select

from tests.factories import add_subscriber, add_topic, post_created
from tidings.campaigns.models import CampaignRun, Delivery
from tidings.campaigns.scheduler import scheduler_tick
from tidings.runtime import Runtime

WHEN = datetime(2030, 5, 1, 8, 0, tzinfo=UTC)


async def deliveries_of(db: Runtime, content_id: int) -> list[int]:
    async with db.database.sessions() as s:
        query = (
            select(Delivery.subscriber_id)
            .join(CampaignRun, CampaignRun.id == Delivery.run_id)
            .where(CampaignRun.campaign_id == content_id)
        )
        return sorted((await s.scalars(query)).all())


async def test_a_scheduled_content_item_goes_to_its_topic_and_is_marked_sent(
    client: httpx.AsyncClient, db: Runtime
) -> None:
    topic = await add_topic(client, "Releases")
    ann = await add_subscriber(client, "ann@example.com", topic_ids=[topic["id"]])
    await add_subscriber(client, "bob@example.com")
    item = await post_created(
        client,
        "/content/",
        {"title": "v2 is out", "body": "<p>Hi {name}</p>", "topic_id": topic["id"],
         "scheduled_time": WHEN.isoformat()},
    )  # fmt: skip
    assert (item["sent"], item["status"], item["topic_id"]) == (False, "scheduled", topic["id"])
    await scheduler_tick(db.database, WHEN + timedelta(seconds=1))
    shown = (await client.get(f"/content/{item['id']}")).json()
    assert shown["sent"] is True
    assert await deliveries_of(db, item["id"]) == [ann["id"]]


async def test_send_now_sends_an_unscheduled_item_once(
    client: httpx.AsyncClient, db: Runtime
) -> None:
    topic = await add_topic(client, "Digest")
    ann = await add_subscriber(client, "ann@example.com", topic_ids=[topic["id"]])
    item = await post_created(
        client, "/content/", {"title": "Digest", "body": "<p>x</p>", "topic_id": topic["id"]}
    )
    assert item["status"] == "draft"
    sent = await client.post(f"/content/{item['id']}/send-now")
    assert sent.status_code == 202, sent.text
    await scheduler_tick(db.database)
    assert await deliveries_of(db, item["id"]) == [ann["id"]]
    again = await client.post(f"/content/{item['id']}/send-now")
    assert again.status_code == 422 and "from running to running" in again.text


async def test_content_is_listed_edited_and_deleted_apart_from_other_campaigns(
    client: httpx.AsyncClient,
) -> None:
    topic = await add_topic(client, "News")
    other = await add_topic(client, "Other")
    item = await post_created(
        client, "/content/", {"title": "One", "body": "<p>1</p>", "topic_id": topic["id"]}
    )
    campaign = await post_created(client, "/campaigns/", {"name": "Not content"})
    listed = (await client.get("/content/")).json()
    assert [c["id"] for c in listed["items"]] == [item["id"]]
    assert (await client.get(f"/content/{campaign['id']}")).status_code == 404
    edited = await client.patch(
        f"/content/{item['id']}", json={"title": "Uno", "topic_id": other["id"]}
    )
    assert edited.status_code == 200, edited.text
    assert (edited.json()["title"], edited.json()["topic_id"]) == ("Uno", other["id"])
    missing_topic = await client.post(
        "/content/", json={"title": "x", "body": "y", "topic_id": 424242}
    )
    assert missing_topic.status_code == 422 and "no topic with id 424242" in missing_topic.text
    assert (await client.delete(f"/content/{item['id']}")).status_code == 204
    assert (await client.get(f"/content/{item['id']}")).status_code == 404
