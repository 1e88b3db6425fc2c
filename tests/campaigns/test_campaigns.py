"""Campaigns API on both databases: seed 003's requests verbatim, the status machine, edits."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.factories import add_subscriber, add_topic, post_created

WEEKLY_TECH_NEWS = {  # seed 003, verbatim
    "name": "Weekly Tech News",
    "type": "recurring",
    "schedule_time": "2026-02-01T10:00:00",
    "message": "Stay updated with the latest in tech!",
    "target_segment": "tech",
    "frequency": "weekly",
    "interval": 1,
}
BLACK_FRIDAY = {  # seed 003, verbatim
    "name": "Black Friday Sale",
    "type": "one_time",
    "schedule_time": "2026-11-28T00:00:00",
    "message": "Massive discounts are here!",
    "target_segment": "retail",
}


async def add_campaign(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    body = {"name": "Spring news", "subject": "Hello {name}", "html": "<p>Hi {name}</p>"}
    return await post_created(client, "/campaigns/", {**body, **fields})


async def act(client: httpx.AsyncClient, campaign_id: int, action: str, expected: int = 200) -> Any:
    response = await client.post(f"/campaigns/{campaign_id}/{action}")
    assert response.status_code == expected, response.text
    return response.json()


async def test_seed_003_recurring_campaign_is_created_scheduled_for_its_first_run(
    client: httpx.AsyncClient,
) -> None:
    campaign = await post_created(client, "/campaigns/", WEEKLY_TECH_NEWS)
    assert campaign["status"] == "scheduled"
    assert campaign["type"] == "recurring"
    assert (campaign["frequency"], campaign["interval"]) == ("weekly", 1)
    assert campaign["schedule_time"] == campaign["next_run_at"] == "2026-02-01T10:00:00Z"
    assert campaign["audience"]["tags"] == ["tech"]  # no segment named "tech": the tag
    assert campaign["text"] == "Stay updated with the latest in tech!"
    assert campaign["html"] == "<p>Stay updated with the latest in tech!</p>"
    assert campaign["subject"] == "Weekly Tech News"
    assert "week" in campaign["recurrence"]


async def test_seed_003_one_time_campaign_targets_a_segment_of_that_name(
    client: httpx.AsyncClient,
) -> None:
    rule = {"field": "tag", "op": "eq", "value": "retail"}
    segment = await post_created(client, "/segments", {"name": "retail", "rule": rule})
    campaign = await post_created(client, "/campaigns/", BLACK_FRIDAY)
    assert (campaign["type"], campaign["status"]) == ("one_time", "scheduled")
    assert campaign["next_run_at"] == "2026-11-28T00:00:00Z"
    assert campaign["audience"]["segment_id"] == segment["id"]
    listed = (await client.get("/campaigns/")).json()
    assert [c["name"] for c in listed["items"]] == ["Black Friday Sale"]


async def test_a_campaign_without_a_schedule_time_is_a_draft(client: httpx.AsyncClient) -> None:
    campaign = await add_campaign(client)
    assert (campaign["status"], campaign["next_run_at"], campaign["type"]) == (
        "draft",
        None,
        "one_time",
    )
    scheduled = await client.patch(
        f"/campaigns/{campaign['id']}/reschedule", json={"schedule_time": "2030-01-01T09:00:00Z"}
    )
    assert scheduled.status_code == 200, scheduled.text
    assert scheduled.json()["status"] == "scheduled"
    assert scheduled.json()["next_run_at"] == "2030-01-01T09:00:00Z"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"type": "recurring"}, "needs a frequency"),
        ({"type": "one_time", "frequency": "daily"}, "takes no frequency"),
        ({"frequency": "daily"}, "needs a schedule_time"),
        ({"frequency": "fortnightly", "schedule_time": "2030-01-01T00:00:00"}, "frequency"),
        ({"topic_ids": [424242]}, "no topic with id 424242"),
        ({"template_id": 424242}, "no template with id 424242"),
        ({"promotion_id": 424242}, "no promotion with id 424242"),
        ({"timezone": "Mars/Olympus", "schedule_time": "2030-01-01T00:00:00"}, "Mars/Olympus"),
        ({"interval": 0, "frequency": "daily", "schedule_time": "2030-01-01T00:00:00"}, "interval"),
    ],
)
async def test_invalid_campaigns_are_422_with_a_message_that_says_why(
    client: httpx.AsyncClient, fields: dict[str, Any], message: str
) -> None:
    response = await client.post("/campaigns/", json={"name": "x", **fields})
    assert response.status_code == 422, response.text
    assert message in response.text


async def test_the_status_machine_refuses_illegal_moves_and_lists_the_allowed_ones(
    client: httpx.AsyncClient,
) -> None:
    campaign = await add_campaign(client, schedule_time="2030-01-01T00:00:00Z")
    cid = campaign["id"]
    refused = await act(client, cid, "resume", 422)
    assert "only a paused campaign can be resumed" in refused["detail"]
    assert (await act(client, cid, "pause"))["status"] == "paused"
    assert (await act(client, cid, "resume"))["status"] == "scheduled"
    assert (await act(client, cid, "cancel"))["status"] == "cancelled"
    again = await act(client, cid, "pause", 422)
    assert "from cancelled to paused; allowed: none (cancelled is final)" in again["detail"]
    edit = await client.patch(f"/campaigns/{cid}", json={"name": "renamed"})
    assert edit.status_code == 422 and "cancelled campaign cannot be changed" in edit.text


async def test_send_now_fires_a_run_and_locks_the_content_while_running(
    client: httpx.AsyncClient,
) -> None:
    campaign = await add_campaign(client)
    run = await act(client, campaign["id"], "send", 202)
    assert (run["campaign_id"], run["status"], run["total"]) == (campaign["id"], "materializing", 0)
    shown = (await client.get(f"/campaigns/{campaign['id']}")).json()
    assert (shown["status"], shown["runs"]) == ("running", 1)
    edit = await client.patch(f"/campaigns/{campaign['id']}", json={"html": "<p>changed</p>"})
    assert edit.status_code == 422
    assert "content and audience cannot change (html)" in edit.json()["detail"]
    renamed = await client.patch(f"/campaigns/{campaign['id']}", json={"name": "Renamed"})
    assert renamed.status_code == 200 and renamed.json()["name"] == "Renamed"
    deleted = await client.delete(f"/campaigns/{campaign['id']}")
    assert deleted.status_code == 422 and "cancel it first" in deleted.text
    runs = (await client.get(f"/campaigns/{campaign['id']}/runs")).json()
    assert [r["id"] for r in runs["items"]] == [run["id"]]


async def test_audience_fields_are_kept_and_validated(client: httpx.AsyncClient) -> None:
    topic = await add_topic(client, "News")
    campaign = await add_campaign(client, topic_ids=[topic["id"], topic["id"]], tags=["VIP"])
    assert campaign["audience"] == {
        "topic_ids": [topic["id"]],
        "segment_id": None,
        "promotion_id": None,
        "tags": ["vip"],
    }


async def test_a_draft_can_be_edited_and_deleted(client: httpx.AsyncClient) -> None:
    await add_subscriber(client, "ann@example.com")
    campaign = await add_campaign(client)
    edited = await client.patch(
        f"/campaigns/{campaign['id']}", json={"subject": "New subject", "from_name": "Team"}
    )
    assert edited.status_code == 200, edited.text
    assert (edited.json()["subject"], edited.json()["from_name"]) == ("New subject", "Team")
    assert (await client.delete(f"/campaigns/{campaign['id']}")).status_code == 204
    assert (await client.get(f"/campaigns/{campaign['id']}")).status_code == 404


async def test_editing_a_sent_campaign_without_touching_its_schedule_keeps_its_next_run(
    client: httpx.AsyncClient,
) -> None:
    """Sent now before its scheduled time, a one-time campaign is not sent again at that time
    because its name changed afterwards."""
    campaign = await add_campaign(client, schedule_time="2030-01-01T09:00:00Z")
    await act(client, campaign["id"], "send", 202)
    renamed = await client.patch(f"/campaigns/{campaign['id']}", json={"name": "Renamed"})
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["next_run_at"] is None
