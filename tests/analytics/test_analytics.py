"""Campaign statistics, a subscriber's history and trends, from real deliveries and events
recorded through POST /engagement/track (seed 002) and the unsubscribe link."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx

from tests.delivery.support import SmtpServer, fill_subscribers, send_campaign
from tests.delivery.test_worker import drain, make_worker
from tidings.db.types import utcnow
from tidings.runtime import Runtime

BROWSER = "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0"


def event(kind: str, delivery: int, n: int, **fields: Any) -> dict[str, Any]:
    at = utcnow() + timedelta(seconds=30 + n)  # well after sending: people, not scanners
    return {"type": kind, "id": f"{kind}-{delivery}-{n}", "delivery_id": delivery,
            "occurred_at": at.isoformat(), **fields}  # fmt: skip


async def sent_campaign(client: httpx.AsyncClient, db: Runtime) -> int:
    await fill_subscribers(db, 4)
    campaign_id, _ = await send_campaign(client, db)
    with SmtpServer() as server:
        await drain(make_worker(db, server.port))
    return campaign_id


async def track(client: httpx.AsyncClient, events: list[dict[str, Any]]) -> None:
    answer = await client.post("/engagement/track", json=events)
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"accepted": len(events)}


async def test_stats_count_people_once_per_message_and_keep_machines_apart(
    client: httpx.AsyncClient, db: Runtime
) -> None:
    campaign_id = await sent_campaign(client, db)
    await track(
        client,
        [
            event("opened", 1, 1), event("opened", 1, 2), event("clicked", 1, 3, url="https://a"),
            event("opened", 2, 4, machine=True),
            event("bounced", 3, 5, bounce="hard", reason="550 5.1.1"),
            event("complained", 4, 6), event("delivered", 1, 7), event("delivered", 2, 8),
        ],
    )  # fmt: skip
    stats = (await client.get(f"/campaigns/{campaign_id}/stats")).json()
    assert {k: stats[k] for k in (
        "sent", "failed", "queued", "delivered", "opened", "opened_total", "opened_by_machines",
        "clicked", "clicks_total", "bounced", "bounced_hard", "complained", "unsubscribed",
    )} == {
        "sent": 4, "failed": 0, "queued": 0, "delivered": 2, "opened": 1, "opened_total": 3,
        "opened_by_machines": 1, "clicked": 1, "clicks_total": 1, "bounced": 1,
        "bounced_hard": 1, "complained": 1, "unsubscribed": 0,
    }  # fmt: skip
    assert stats["open_rate"] == 0.25 and stats["click_to_open_rate"] == 1.0
    assert stats["delivery_rate"] == 0.5 and stats["complaint_rate"] == 0.25
    assert (await client.get(f"/analytics/{campaign_id}")).json() == stats
    listed = (await client.get("/analytics/")).json()
    assert listed["total"] == 1 and listed["items"] == [stats]


async def test_the_same_event_id_twice_is_recorded_once(
    client: httpx.AsyncClient, db: Runtime
) -> None:
    campaign_id = await sent_campaign(client, db)
    await track(client, [event("clicked", 1, 1, url="https://a")])
    await track(client, [event("clicked", 1, 1, url="https://a")])
    stats = (await client.get(f"/campaigns/{campaign_id}/stats")).json()
    assert stats["clicks_total"] == 1


async def test_history_lists_deliveries_and_events_newest_first_in_pages(
    client: httpx.AsyncClient, db: Runtime
) -> None:
    await sent_campaign(client, db)
    await track(client, [event("delivered", 1, 1), event("opened", 1, 2, user_agent=BROWSER)])
    whole = (await client.get("/analytics/subscriber/1/history")).json()
    assert whole["total"] == 3
    assert [(i["kind"], i["type"] or i["status"]) for i in whole["items"]] == [
        ("event", "opened"), ("event", "delivered"), ("delivery", "sent"),
    ]  # fmt: skip
    second = (await client.get("/analytics/subscriber/1/history?limit=1&offset=1")).json()
    assert second["items"] == whole["items"][1:2]
    by_email = await client.get("/analytics/subscriber/user0@example.org/history")
    assert by_email.json() == whole
    assert (await client.get("/analytics/subscriber/404/history")).status_code == 404


async def test_trends_count_today(client: httpx.AsyncClient, db: Runtime) -> None:
    await sent_campaign(client, db)
    await track(client, [event("opened", 1, 1), event("opened", 2, 2, machine=True)])
    points = (await client.get("/analytics/trends?days=7")).json()
    assert len(points) == 7
    today = points[-1]
    assert (today["sent"], today["opened"], today["clicked"]) == (4, 1, 0)
    assert (await client.get("/analytics/trends?days=0")).status_code == 422


async def test_track_validates_and_needs_a_key(client: httpx.AsyncClient, db: Runtime) -> None:
    stranger = {"Authorization": "Bearer tdg_not_a_key"}
    refused = await client.post("/engagement/track", json=event("opened", 1, 1), headers=stranger)
    assert refused.status_code == 401
    missing = await client.post("/engagement/track", json={"type": "opened", "delivery_id": 1})
    assert missing.status_code == 422
    assert "id" in missing.json()["detail"] and "occurred_at" in missing.json()["detail"]
    unknown = await client.post("/engagement/track", json=event("exploded", 1, 1))
    assert unknown.status_code == 422
    too_many = await client.post(
        "/engagement/track", json=[event("opened", 1, n) for n in range(1001)]
    )
    assert too_many.status_code == 422
