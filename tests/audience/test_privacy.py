"""GDPR access and erasure, and the suppression an erasure leaves behind."""

from __future__ import annotations

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from tests.factories import add_subscriber, add_topic, post_created
from tidings.campaigns.models import Delivery
from tidings.db.types import utcnow
from tidings.security.models import Scope


async def test_personal_data_export_holds_everything_about_the_person(
    client: httpx.AsyncClient,
) -> None:
    topic = await add_topic(client, "Weekly")
    person = await add_subscriber(
        client,
        "eve@example.com",
        name="Eve",
        tags=["vip"],
        attributes={"city": "Oslo"},
        phone="+4712345678",
        topic_ids=[topic["id"]],
    )
    promotion = await post_created(
        client,
        "/promotions",
        {"name": "Spring", "start_at": "2026-03-01T00:00:00Z", "end_at": "2026-04-01T00:00:00Z"},
    )
    await client.post(f"/promotions/{promotion['id']}/status", json={"status": "active"})
    await post_created(
        client,
        "/subscriptions",
        {"user_id": person["id"], "promotion_id": promotion["id"], "metadata": {"src": "web"}},
    )
    await client.put("/subscribers/eve@example.com", json={"name": "Eve L."})
    tracked = await client.post(
        "/engagement/track",
        json={"type": "complained", "id": "fbl-1", "recipient": "eve@example.com",
              "occurred_at": "2026-12-01T10:00:00Z", "reason": "abuse"},
    )  # fmt: skip
    assert tracked.status_code == 202

    response = await client.get(f"/subscribers/{person['id']}/export")
    assert response.status_code == 200
    data = response.json()
    assert data["subscriber"]["email"] == "eve@example.com"
    assert data["subscriber"]["phone"] == "+4712345678"
    assert [t["topic"]["name"] for t in data["topic_subscriptions"]] == ["Weekly"]
    assert data["promotion_subscriptions"][0]["metadata"] == {"src": "web"}
    assert [h["action"] for h in data["history"]] == ["subscriber.create", "subscriber.update"]
    assert [(e["type"], e["reason"]) for e in data["events"]] == [("complained", "abuse")]


async def test_erasure_deletes_personal_data_keeps_a_tombstone_and_suppresses(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    topic = await add_topic(client, "Weekly")
    person = await add_subscriber(
        client,
        "erin@example.com",
        name="Erin",
        tags=["vip"],
        attributes={"city": "Oslo"},
        phone="+4712345678",
        topic_ids=[topic["id"]],
    )
    session.add(
        Delivery(
            run_id=1,
            subscriber_id=person["id"],
            status="failed",
            error="550 5.1.1 <erin@example.com>: Recipient address rejected",
            next_attempt_at=utcnow(),
        )
    )
    await session.commit()
    bounce = {
        "type": "bounced",
        "id": "b-1",
        "recipient": "erin@example.com",
        "bounce": "soft",
        "occurred_at": "2026-12-01T10:00:00Z",
        "reason": "452 <erin@example.com> full",
    }
    assert (await client.post("/engagement/track", json=bounce)).status_code == 202
    erased = await client.post(f"/subscribers/{person['id']}/erase")
    assert erased.status_code == 200
    body = erased.json()
    assert body["status"] == "erased"
    assert body["email"] == "" and body["name"] == "" and body["phone"] is None
    assert body["attributes"] == {} and body["tags"] == []

    raw = (await session.execute(text("SELECT * FROM subscribers"))).mappings().one()
    [error] = (await session.execute(text("SELECT error FROM deliveries"))).scalars()
    [event] = (await session.execute(text("SELECT * FROM events"))).mappings()
    await session.rollback()
    assert all("erin" not in str(value).lower() for value in raw.values())
    assert "erin" not in str(error)
    assert event["type"] == "bounced" and event["bounce"] == "soft"  # statistics stay right
    assert all("erin" not in str(value).lower() for value in event.values())
    assert (await client.get("/subscribers/erin@example.com")).status_code == 404
    members = (await client.get(f"/topics/{topic['id']}/subscribers")).json()["items"]
    assert [m["status"] for m in members] == ["unsubscribed"]

    again = await client.post("/subscribers/", json={"email": "Erin@example.com"})
    assert again.status_code == 409 and again.json()["code"] == "suppressed_address"
    twice = await client.post(f"/subscribers/{person['id']}/erase")
    assert twice.status_code == 200
    refused = await client.put(f"/subscribers/{person['id']}", json={"name": "Back"})
    assert refused.status_code == 422
    audit = (await client.get("/audit-log", params={"action": "subscriber.erase"})).json()
    assert len(audit) == 1


async def test_erasing_through_put_is_refused(client: httpx.AsyncClient) -> None:
    await add_subscriber(client, "pat@example.com")
    response = await client.put("/subscribers/pat@example.com", json={"status": "erased"})
    assert response.status_code == 422 and "/erase" in response.json()["detail"]


async def test_only_admin_keys_export_or_erase(
    anon_client: httpx.AsyncClient, api_keys: dict[Scope, str], client: httpx.AsyncClient
) -> None:
    person = await add_subscriber(client, "kim@example.com")
    write = {"Authorization": f"Bearer {api_keys[Scope.write]}"}
    assert (
        await anon_client.get(f"/subscribers/{person['id']}/export", headers=write)
    ).status_code == 403
    assert (
        await anon_client.post(f"/subscribers/{person['id']}/erase", headers=write)
    ).status_code == 403


async def test_stats_count_by_status_topic_tag_and_day(client: httpx.AsyncClient) -> None:
    topic = await add_topic(client, "Weekly")
    await add_subscriber(client, "a@example.com", tags=["tech"], topic_ids=[topic["id"]])
    await add_subscriber(client, "b@example.com", tags=["tech", "retail"])
    await add_subscriber(client, "c@example.com")
    await client.delete("/subscribers/c@example.com")
    await client.put("/subscribers/b@example.com", json={"status": "bounced"})

    stats = (await client.get("/subscribers/stats")).json()
    assert stats["total"] == 3
    assert stats["by_status"] == {
        "active": 1,
        "unsubscribed": 1,
        "bounced": 1,
        "complained": 0,
        "erased": 0,
    }
    assert stats["by_tag"] == {"retail": 1, "tech": 2}
    assert stats["by_topic"] == [
        {"topic_id": topic["id"], "name": "Weekly", "active": 1, "pending": 0, "unsubscribed": 0}
    ]
    assert stats["churned"] == {"unsubscribed": 1, "bounced": 1, "complained": 0}
    assert stats["churn_rate"] == round(2 / 3, 4)
    assert len(stats["growth"]) == 31
    assert stats["growth"][-1]["joined"] == 3 and stats["growth"][-1]["left"] == 2
    assert (await client.get("/subscribers/stats", params={"days": 0})).status_code == 422
