"""Segments API: saved rules, live counts and members, and GET /subscribers/segment/{name}."""

from __future__ import annotations

import httpx

from tests.factories import add_subscriber, post_created

TECH_PROS = {
    "all": [
        {"field": "tag", "op": "eq", "value": "tech"},
        {"field": "attributes.plan", "op": "eq", "value": "pro"},
    ]
}


async def _audience(client: httpx.AsyncClient) -> None:
    await add_subscriber(client, "a@example.com", tags=["tech"], attributes={"plan": "pro"})
    await add_subscriber(client, "b@example.com", tags=["tech"], attributes={"plan": "free"})
    await add_subscriber(client, "c@corp.io", tags=["retail"], attributes={"plan": "pro"})
    await add_subscriber(client, "d@corp.io", tags=["tech", "retail"], attributes={"plan": "pro"})


async def test_a_saved_segment_counts_and_lists_its_members_live(client: httpx.AsyncClient) -> None:
    await _audience(client)
    segment = await post_created(client, "/segments", {"name": "Tech pros", "rule": TECH_PROS})
    count = await client.get(f"/segments/{segment['id']}/count")
    assert count.json() == {"segment_id": segment["id"], "count": 2}
    members = (await client.get(f"/segments/{segment['id']}/subscribers")).json()
    assert [m["email"] for m in members["items"]] == ["a@example.com", "d@corp.io"]
    await add_subscriber(client, "e@example.com", tags=["tech"], attributes={"plan": "pro"})
    assert (await client.get(f"/segments/{segment['id']}/count")).json()["count"] == 3


async def test_segment_crud(client: httpx.AsyncClient) -> None:
    segment = await post_created(client, "/segments", {"name": "Pros", "rule": TECH_PROS})
    assert (
        await client.post("/segments", json={"name": "Pros", "rule": TECH_PROS})
    ).status_code == 409
    listed = (await client.get("/segments")).json()
    assert listed["total"] == 1 and listed["items"][0]["rule"] == TECH_PROS
    replaced = await client.put(
        f"/segments/{segment['id']}",
        json={"name": "Corp", "rule": {"field": "email_domain", "op": "eq", "value": "CORP.io"}},
    )
    assert replaced.status_code == 200 and replaced.json()["name"] == "Corp"
    await _audience(client)
    assert (await client.get(f"/segments/{segment['id']}/count")).json()["count"] == 2
    assert (await client.delete(f"/segments/{segment['id']}")).status_code == 204
    assert (await client.get(f"/segments/{segment['id']}")).status_code == 404
    assert (await client.get(f"/segments/{segment['id']}/count")).status_code == 404


async def test_an_invalid_rule_is_a_422_naming_the_place(client: httpx.AsyncClient) -> None:
    bad = {"all": [{"field": "tag", "op": "eq", "value": "x"}, {"field": "tag", "op": "gt"}]}
    response = await client.post("/segments", json={"name": "Bad", "rule": bad})
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_segment_rule"
    assert "rule.all[1].op" in response.json()["detail"]
    assert (await client.get("/segments")).json()["total"] == 0


async def test_subscribers_by_segment_name_or_by_tag(client: httpx.AsyncClient) -> None:
    await _audience(client)
    await post_created(client, "/segments", {"name": "Tech pros", "rule": TECH_PROS})
    by_segment = (await client.get("/subscribers/segment/Tech pros")).json()
    assert [m["email"] for m in by_segment["items"]] == ["a@example.com", "d@corp.io"]
    by_tag = (await client.get("/subscribers/segment/retail")).json()
    assert [m["email"] for m in by_tag["items"]] == ["c@corp.io", "d@corp.io"]
    assert (await client.get("/subscribers/segment/nobody")).json()["items"] == []
    paged = (await client.get("/subscribers/segment/tech", params={"limit": 1})).json()
    assert paged["total"] == 3 and paged["next_cursor"]
