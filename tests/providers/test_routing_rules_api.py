"""/routing-rules on both databases: rules name their provider by id or name, are listed in the
order routing tries them, are validated with messages that say what is allowed, and every
change is audited."""

from __future__ import annotations

from typing import Any

import httpx

from tests.factories import post_created
from tidings.security.models import Scope


async def add_provider(client: httpx.AsyncClient, name: str) -> dict[str, Any]:
    return await post_created(client, "/providers", {"name": name, "kind": "console"})


async def add_rule(client: httpx.AsyncClient, name: str, **fields: Any) -> dict[str, Any]:
    return await post_created(client, "/routing-rules", {"name": name, **fields})


async def test_a_rule_names_its_provider_by_id_or_name(client: httpx.AsyncClient) -> None:
    gmail_pool = await add_provider(client, "gmail-pool")
    by_name = await add_rule(
        client, "gmail", recipient_domains=["GMail.com", " googlemail.com "], provider="gmail-pool"
    )
    assert by_name["recipient_domains"] == ["gmail.com", "googlemail.com"]
    assert (by_name["provider_id"], by_name["provider"]) == (gmail_pool["id"], "gmail-pool")
    assert (by_name["kind"], by_name["enabled"], by_name["position"]) == ("domain", True, 0)
    by_id = await add_rule(client, "engaged", min_engagement_score=80, provider=gmail_pool["id"])
    assert (by_id["provider"], by_id["kind"]) == ("gmail-pool", "engagement")
    best = await add_rule(client, "fans", min_engagement_score=95.5)
    assert (best["provider_id"], best["provider"], best["min_engagement_score"]) == (
        None,
        None,
        95.5,
    )
    assert (await client.get(f"/routing-rules/{by_id['id']}")).json()["name"] == "engaged"
    assert (await client.get("/routing-rules/gmail")).json()["id"] == by_name["id"]


async def test_rules_are_listed_in_the_order_routing_tries_them(
    client: httpx.AsyncClient,
) -> None:
    await add_rule(client, "engaged-late", min_engagement_score=50, position=1)
    await add_rule(client, "engaged-early", min_engagement_score=90, position=0)
    await add_rule(client, "yahoo", recipient_domains=["yahoo.com"], position=5)
    await add_rule(client, "gmail", recipient_domains=["gmail.com"], position=5)
    await add_rule(client, "both", recipient_domains=["aol.com"], min_engagement_score=10)
    listed = (await client.get("/routing-rules")).json()
    names = [rule["name"] for rule in listed["items"]]
    assert names == ["both", "yahoo", "gmail", "engaged-early", "engaged-late"]
    assert listed["total"] == 5
    second_page = (await client.get("/routing-rules", params={"limit": 2, "offset": 2})).json()
    assert [rule["name"] for rule in second_page["items"]] == ["gmail", "engaged-early"]


async def test_every_invalid_rule_is_a_422_that_says_why(client: httpx.AsyncClient) -> None:
    await add_provider(client, "main")
    cases = [
        ({"name": "has space", "min_engagement_score": 1}, "name"),
        ({"name": "x" * 101, "min_engagement_score": 1}, "name"),
        ({"name": "r"}, "needs recipient_domains, min_engagement_score or both"),
        ({"name": "r", "recipient_domains": []}, "needs recipient_domains, min_engagement_score"),
        ({"name": "r", "recipient_domains": ["ann@gmail.com"]}, "give the part after '@'"),
        ({"name": "r", "recipient_domains": ["localhost"]}, "'localhost' is not a domain"),
        ({"name": "r", "recipient_domains": ["-bad-.com"]}, "is not a domain"),
        ({"name": "r", "recipient_domains": ["a b.com"]}, "is not a domain"),
        ({"name": "r", "recipient_domains": ["a" * 250 + ".com"]}, "at most 253 characters"),
        ({"name": "r", "recipient_domains": [f"d{n}.com" for n in range(1001)]}, "1000"),
        ({"name": "r", "recipient_domains": "gmail.com"}, "recipient_domains"),
        ({"name": "r", "min_engagement_score": 101}, "min_engagement_score"),
        ({"name": "r", "min_engagement_score": -1}, "greater than or equal to 0"),
        ({"name": "r", "min_engagement_score": 1, "provider": "nope"}, "no provider 'nope'"),
        ({"name": "r", "min_engagement_score": 1, "provider": 424242}, "no provider '424242'"),
        ({"name": "r", "min_engagement_score": 1, "provider": True}, "provider"),
        ({"name": "r", "min_engagement_score": 1, "position": -1}, "position"),
        ({"name": "r", "min_engagement_score": 1, "colour": "red"}, "colour"),
    ]
    for body, message in cases:
        response = await client.post("/routing-rules", json=body)
        assert response.status_code == 422, (body, response.text)
        assert message in response.json()["detail"], (body, response.text)
    assert (await client.get("/routing-rules")).json()["total"] == 0


async def test_patch_changes_fields_and_keeps_the_rule_valid(client: httpx.AsyncClient) -> None:
    await add_provider(client, "main")
    rule = await add_rule(client, "gmail", recipient_domains=["gmail.com"], provider="main")
    changed = await client.patch(
        "/routing-rules/gmail",
        json={"name": "gmail-2", "enabled": False, "position": 3, "provider": None},
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert (body["name"], body["enabled"], body["position"]) == ("gmail-2", False, 3)
    assert (body["provider_id"], body["recipient_domains"]) == (None, ["gmail.com"])
    emptied = await client.patch(f"/routing-rules/{rule['id']}", json={"recipient_domains": []})
    assert emptied.status_code == 422 and "needs recipient_domains" in emptied.text
    swapped = await client.patch(
        f"/routing-rules/{rule['id']}",
        json={"recipient_domains": [], "min_engagement_score": 70, "provider": "main"},
    )
    assert swapped.status_code == 200, swapped.text
    assert (swapped.json()["kind"], swapped.json()["provider"]) == ("engagement", "main")
    for body, message in [
        ({"name": None}, "name cannot be null"),
        ({"enabled": None}, "enabled cannot be null"),
        ({"provider": "ghost"}, "no provider 'ghost'"),
        ({"min_engagement_score": None}, "needs recipient_domains"),
    ]:
        response = await client.patch(f"/routing-rules/{rule['id']}", json=body)
        assert response.status_code == 422, (body, response.text)
        assert message in response.json()["detail"], (body, response.text)
    assert (await client.get("/routing-rules/gmail-2")).json()["min_engagement_score"] == 70


async def test_names_are_unique_lookups_404_and_delete_works(client: httpx.AsyncClient) -> None:
    rule = await add_rule(client, "gmail", recipient_domains=["gmail.com"])
    await add_rule(client, "yahoo", recipient_domains=["yahoo.com"])
    again = await client.post(
        "/routing-rules", json={"name": "gmail", "recipient_domains": ["x.com"]}
    )
    assert again.status_code == 409 and again.json()["code"] == "duplicate_routing_rule"
    renamed = await client.patch("/routing-rules/yahoo", json={"name": "gmail"})
    assert renamed.status_code == 409
    assert (await client.get("/routing-rules/nope")).status_code == 404
    assert (await client.get("/routing-rules/99999999999999999999")).status_code == 404
    assert (await client.patch("/routing-rules/nope", json={"position": 1})).status_code == 404
    assert (await client.delete(f"/routing-rules/{rule['id']}")).status_code == 204
    assert (await client.get("/routing-rules/gmail")).status_code == 404
    assert (await client.delete("/routing-rules/gmail")).status_code == 404


async def test_every_change_is_audited(client: httpx.AsyncClient) -> None:
    rule = await add_rule(client, "gmail", recipient_domains=["gmail.com"])
    await client.patch(f"/routing-rules/{rule['id']}", json={"position": 2})
    await client.delete(f"/routing-rules/{rule['id']}")
    entries = (await client.get("/audit-log")).json()
    actions = [(e["action"], e["target_type"], e["target_id"]) for e in entries]
    for action in ("routing_rule.create", "routing_rule.update", "routing_rule.delete"):
        assert (action, "routing_rule", str(rule["id"])) in actions, actions


async def test_deleting_a_provider_deletes_its_rules(client: httpx.AsyncClient) -> None:
    provider = await add_provider(client, "doomed")
    await add_rule(client, "to-doomed", min_engagement_score=10, provider="doomed")
    assert (await client.delete(f"/providers/{provider['id']}")).status_code == 204
    assert (await client.get("/routing-rules/to-doomed")).status_code == 404


async def test_only_admin_keys_see_or_change_rules(
    anon_client: httpx.AsyncClient, api_keys: dict[Scope, str]
) -> None:
    for scope in (Scope.read, Scope.write):
        headers = {"Authorization": f"Bearer {api_keys[scope]}"}
        assert (await anon_client.get("/routing-rules", headers=headers)).status_code == 403
        created = await anon_client.post(
            "/routing-rules",
            json={"name": "x", "min_engagement_score": 1},
            headers=headers,
        )
        assert created.status_code == 403
    assert (await anon_client.get("/routing-rules")).status_code == 401
