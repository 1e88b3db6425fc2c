"""Promotion subscriptions (seed 004) on both databases: subscribe, list, deactivate, indexes."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import inspect, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from tests.factories import add_subscriber, post_created
from tests.promotions.test_promotions import HUGE_ID, promotion_in
from tidings.runtime import Runtime
from tidings.security.models import AuditEntry, Scope

METADATA = {"source": "web", "campaign": "summer2026"}


async def subscribe(
    client: httpx.AsyncClient, expected: int = 201, **body: object
) -> dict[str, Any]:
    return await post_created(client, "/subscriptions", body, expected)


async def subscription_count(session: AsyncSession) -> int:
    """Rows in promotion_subscriptions; ends the read so the single SQLite connection is free."""
    count = int(await session.scalar(text("SELECT count(*) FROM promotion_subscriptions")) or 0)
    await session.rollback()
    return count


async def listed(client: httpx.AsyncClient, query: str) -> dict[str, Any]:
    response = await client.get(f"/subscriptions?{query}")
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


async def seed_example_data(client: httpx.AsyncClient) -> None:
    """Subscriber 1, and "Summer Sale" as promotion 2 (active), as seed 004's examples assume."""
    subscriber = await add_subscriber(client, "user1@example.com")
    assert subscriber["id"] == 1
    first = await promotion_in(client, "active", name="Spring Sale")
    assert first["id"] == 1
    summer = await promotion_in(client, "active")
    assert summer["id"] == 2 and summer["name"] == "Summer Sale"


# --- seed 004's curl examples -------------------------------------------------------------------


async def test_the_readme_examples_work_as_written(client: httpx.AsyncClient) -> None:
    await seed_example_data(client)

    # Create a subscription
    response = await client.post(
        "/subscriptions",
        json={
            "user_id": 1,
            "promotion_id": 2,
            "metadata": {"source": "web", "campaign": "summer2026"},
        },
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["id"] == 1
    assert created["user_id"] == 1 and created["subscriber_id"] == 1
    assert created["promotion_id"] == 2
    assert created["is_active"] is True
    assert created["metadata"] == {"source": "web", "campaign": "summer2026"}
    assert created["deactivated_at"] is None
    assert created["created_at"] and created["updated_at"]

    # 29 more subscribers to promotion 2, so that the pagination example has a page to show.
    others = [await add_subscriber(client, f"fan{i}@example.com") for i in range(29)]
    for other in others:
        await subscribe(client, user_id=other["id"], promotion_id=2)
    await subscribe(client, user_id=1, promotion_id=1)  # subscriber 1 in another promotion too

    # List all subscriptions for a user
    response = await client.get("/subscriptions?user_id=1")
    assert response.status_code == 200, response.text
    mine = response.json()
    assert mine["total"] == 2
    assert [(s["id"], s["promotion_id"]) for s in mine["items"]] == [(1, 2), (31, 1)]
    assert mine["items"][0] == created

    # List only active subscriptions for a user
    response = await client.get("/subscriptions?user_id=1&is_active=true")
    assert response.status_code == 200, response.text
    assert [s["id"] for s in response.json()["items"]] == [1, 31]

    # List all subscribers to a promotion
    response = await client.get("/subscriptions?promotion_id=2")
    assert response.status_code == 200, response.text
    members = response.json()
    assert members["total"] == 30
    assert [s["user_id"] for s in members["items"]] == [1] + [o["id"] for o in others]
    assert {s["promotion_id"] for s in members["items"]} == {2}

    # List subscribers with pagination
    response = await client.get("/subscriptions?promotion_id=2&limit=10&offset=20")
    assert response.status_code == 200, response.text
    page = response.json()
    assert page["total"] == 30 and page["limit"] == 10 and page["offset"] == 20
    assert [s["id"] for s in page["items"]] == list(range(21, 31))

    # Deactivate a subscription
    response = await client.patch("/subscriptions/1/deactivate")
    assert response.status_code == 200, response.text
    deactivated = response.json()
    assert deactivated["id"] == 1 and deactivated["is_active"] is False
    assert deactivated["deactivated_at"] is not None
    assert deactivated["deactivated_at"] >= created["created_at"]

    assert [s["id"] for s in (await listed(client, "user_id=1&is_active=true"))["items"]] == [31]
    assert (await listed(client, "user_id=1"))["total"] == 2
    assert (await listed(client, "promotion_id=2&is_active=true"))["total"] == 29


# --- creating -----------------------------------------------------------------------------------


async def test_subscriber_id_is_an_alias_of_user_id(client: httpx.AsyncClient) -> None:
    await seed_example_data(client)
    two = await add_subscriber(client, "user2@example.com")
    by_user = await subscribe(client, user_id=1, promotion_id=2)
    by_subscriber = await subscribe(client, subscriber_id=two["id"], promotion_id=2)
    assert by_user["user_id"] == by_user["subscriber_id"] == 1
    assert by_subscriber["user_id"] == by_subscriber["subscriber_id"] == two["id"]
    assert by_subscriber["metadata"] == {}

    assert (await listed(client, "user_id=1"))["items"] == [by_user]
    assert (await listed(client, "subscriber_id=1"))["items"] == [by_user]
    assert (await listed(client, f"subscriber_id={two['id']}"))["items"] == [by_subscriber]
    assert (await listed(client, "user_id=1&subscriber_id=1"))["items"] == [by_user]


@pytest.mark.parametrize(
    "metadata",
    [
        METADATA,
        {},
        {"nested": {"list": [1, 2.5, "three", None, True], "deep": {"a": {"b": {"c": 1}}}}},
        {"unicode": "été 🌞 夏", "empty": "", "": "empty key"},
        {"big": 2**63, "negative": -(2**70), "tiny": 1e-300},
    ],
)
async def test_metadata_round_trips(client: httpx.AsyncClient, metadata: dict[str, Any]) -> None:
    await seed_example_data(client)
    created = await subscribe(client, user_id=1, promotion_id=2, metadata=metadata)
    assert created["metadata"] == metadata
    assert (await listed(client, "promotion_id=2"))["items"][0]["metadata"] == metadata


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"user_id": 1},
        {"promotion_id": 2},
        {"user_id": 0, "promotion_id": 2},
        {"user_id": -1, "promotion_id": 2},
        {"user_id": int(HUGE_ID), "promotion_id": 2},
        {"user_id": 1, "promotion_id": int(HUGE_ID)},
        {"user_id": "abc", "promotion_id": 2},
        {"user_id": None, "promotion_id": 2},
        {"user_id": 1, "promotion_id": None},
        {"user_id": 1, "subscriber_id": 1, "promotion_id": 2},
        {"user_id": 1, "promotion_id": 2, "metadata": ["not", "a", "dict"]},
        {"user_id": 1, "promotion_id": 2, "metadata": "text"},
        {"user_id": 1, "promotion_id": 2, "metadata": {"k": "nul\x00"}},
        {"user_id": 1, "promotion_id": 2, "metadata": {"a": {"b": {"c": {"d": {"e": {}}}}}}},
        {"user_id": 1, "promotion_id": 2, "is_active": False},
        {"user_id": 1, "promotion_id": 2, "extra": True},
    ],
)
async def test_malformed_subscription_bodies_are_422(
    client: httpx.AsyncClient, session: AsyncSession, body: dict[str, object]
) -> None:
    await seed_example_data(client)
    if body.get("metadata") == {"a": {"b": {"c": {"d": {"e": {}}}}}}:
        body = {**body, "metadata": nest(12)}
    response = await client.post("/subscriptions", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"
    assert await subscription_count(session) == 0


def nest(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"k": value}
    return value


@pytest.mark.parametrize(
    "metadata",
    [
        '{"k": "\\udc00"}',  # a lone low surrogate as a value
        '{"\\ud800": 1}',  # a lone high surrogate as a key
        '{"k": [1, {"deep": "ok \\ud83d"}]}',  # inside a list
    ],
)
async def test_metadata_that_no_database_can_store_is_422_not_500(
    client: httpx.AsyncClient, session: AsyncSession, metadata: str
) -> None:
    await seed_example_data(client)
    response = await client.post(
        "/subscriptions",
        content=f'{{"user_id": 1, "promotion_id": 2, "metadata": {metadata}}}',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert "lone surrogates" in response.json()["detail"]
    assert await subscription_count(session) == 0
    paired = '{"user_id": 1, "promotion_id": 2, "metadata": {"k": "\\ud83c\\udf1e"}}'
    response = await client.post(
        "/subscriptions", content=paired, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 201, response.text
    assert response.json()["metadata"] == {"k": "🌞"}


async def test_an_unknown_subscriber_is_404(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    await seed_example_data(client)
    for who in ({"user_id": 4242}, {"subscriber_id": 4242}, {"user_id": 2**63 - 1}):
        response = await client.post("/subscriptions", json={**who, "promotion_id": 2})
        assert response.status_code == 404, response.text
        assert response.json()["code"] == "not_found"
    assert await subscription_count(session) == 0


async def test_an_unknown_promotion_is_404(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    await seed_example_data(client)
    for promotion_id in (3, 4242, 2**63 - 1):
        response = await client.post(
            "/subscriptions", json={"user_id": 1, "promotion_id": promotion_id}
        )
        assert response.status_code == 404, response.text
        assert response.json()["code"] == "not_found"
        assert "promotion" in response.json()["detail"]
    assert await subscription_count(session) == 0


@pytest.mark.parametrize("status", ["draft", "ended"])
async def test_only_an_active_promotion_takes_subscriptions(
    client: httpx.AsyncClient, session: AsyncSession, status: str
) -> None:
    user = await add_subscriber(client, "user1@example.com")
    promotion = await promotion_in(client, status)
    response = await client.post(
        "/subscriptions", json={"user_id": user["id"], "promotion_id": promotion["id"]}
    )
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "promotion_not_active"
    assert f"is {status}" in response.json()["detail"]
    assert await subscription_count(session) == 0


async def test_ending_a_promotion_keeps_its_subscriptions(client: httpx.AsyncClient) -> None:
    await seed_example_data(client)
    created = await subscribe(client, user_id=1, promotion_id=2)
    assert (await client.post("/promotions/2/status", json={"status": "ended"})).status_code == 200
    assert (await listed(client, "promotion_id=2"))["items"] == [created]
    late = await client.post("/subscriptions", json={"user_id": 1, "promotion_id": 2})
    # The promotion's status is checked before the pair: an ended promotion takes no one.
    assert late.status_code == 422, late.text
    assert late.json()["code"] == "promotion_not_active"
    deactivated = await client.patch(f"/subscriptions/{created['id']}/deactivate")
    assert deactivated.status_code == 200, deactivated.text


async def test_subscribing_twice_is_a_409_even_after_deactivating(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    await seed_example_data(client)
    first = await subscribe(client, user_id=1, promotion_id=2, metadata=METADATA)
    again = await client.post("/subscriptions", json={"subscriber_id": 1, "promotion_id": 2})
    assert again.status_code == 409, again.text
    assert again.json()["code"] == "duplicate_subscription"
    assert again.json()["detail"] == "subscriber 1 is already subscribed to promotion 2"
    assert (await client.patch(f"/subscriptions/{first['id']}/deactivate")).status_code == 200
    after = await client.post("/subscriptions", json={"user_id": 1, "promotion_id": 2})
    assert after.status_code == 409, after.text
    assert await subscription_count(session) == 1
    # The same subscriber in another promotion is a different pair.
    assert (await subscribe(client, user_id=1, promotion_id=1))["promotion_id"] == 1


async def test_concurrent_subscriptions_of_the_same_pair_let_exactly_one_win(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    await seed_example_data(client)
    body = {"user_id": 1, "promotion_id": 2, "metadata": METADATA}
    responses = await asyncio.gather(
        client.post("/subscriptions", json=body), client.post("/subscriptions", json=body)
    )
    assert sorted(r.status_code for r in responses) == [201, 409]
    [loser] = [r for r in responses if r.status_code == 409]
    assert loser.json()["code"] == "duplicate_subscription"
    assert await subscription_count(session) == 1

    more = await asyncio.gather(*[client.post("/subscriptions", json=body) for _ in range(5)])
    assert [r.status_code for r in more] == [409] * 5
    assert await subscription_count(session) == 1


# --- listing ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "",  # neither
        "is_active=true",  # neither, with a filter
        "user_id=1&promotion_id=2",  # both
        "subscriber_id=1&promotion_id=2",  # both, through the alias
        "user_id=1&subscriber_id=2",  # the same filter twice, disagreeing
    ],
)
async def test_list_needs_exactly_one_of_user_id_and_promotion_id(
    client: httpx.AsyncClient, query: str
) -> None:
    await seed_example_data(client)
    await subscribe(client, user_id=1, promotion_id=2)
    response = await client.get(f"/subscriptions?{query}")
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "rule_violation"


@pytest.mark.parametrize(
    "query",
    [
        "user_id=1&limit=1001",
        "promotion_id=2&limit=1001",
        "user_id=1&limit=0",
        "user_id=1&offset=-1",
        "user_id=0",
        "user_id=abc",
        f"user_id={HUGE_ID}",
        f"promotion_id={HUGE_ID}",
        "promotion_id=-2",
        "user_id=1&is_active=maybe",
    ],
)
async def test_malformed_list_queries_are_422(client: httpx.AsyncClient, query: str) -> None:
    response = await client.get(f"/subscriptions?{query}")
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"


async def test_list_limits_and_unknown_ids(client: httpx.AsyncClient) -> None:
    await seed_example_data(client)
    created = await subscribe(client, user_id=1, promotion_id=2)
    page = await listed(client, "user_id=1")
    assert page["limit"] == 100 and page["offset"] == 0  # the documented defaults
    assert (await listed(client, "user_id=1&limit=1000"))["items"] == [created]
    assert (await listed(client, "user_id=1&offset=1"))["items"] == []
    for query in ["user_id=4242", "promotion_id=4242", f"promotion_id={2**63 - 1}"]:
        empty = await listed(client, query)
        assert empty["items"] == [] and empty["total"] == 0


# --- deactivating -------------------------------------------------------------------------------


async def test_deactivating_keeps_the_row_as_inactive(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    await seed_example_data(client)
    kept = await subscribe(client, user_id=1, promotion_id=1)
    created = await subscribe(client, user_id=1, promotion_id=2, metadata=METADATA)
    response = await client.patch(f"/subscriptions/{created['id']}/deactivate")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["is_active"] is False
    assert body["deactivated_at"] is not None
    assert body["updated_at"] >= created["updated_at"]
    same = ("id", "user_id", "subscriber_id", "promotion_id", "metadata", "created_at")
    assert {k: body[k] for k in same} == {k: created[k] for k in same}
    assert await subscription_count(session) == 2

    assert (await listed(client, "user_id=1&is_active=false"))["items"] == [body]
    assert (await listed(client, "promotion_id=2&is_active=false"))["items"] == [body]
    assert (await listed(client, "user_id=1&is_active=true"))["items"] == [kept]
    assert (await listed(client, "promotion_id=2&is_active=true"))["items"] == []
    assert (await listed(client, "user_id=1"))["items"] == [kept, body]


async def test_deactivating_twice_is_422_and_keeps_the_first_timestamp(
    client: httpx.AsyncClient,
) -> None:
    await seed_example_data(client)
    created = await subscribe(client, user_id=1, promotion_id=2)
    first = await client.patch(f"/subscriptions/{created['id']}/deactivate")
    assert first.status_code == 200
    second = await client.patch(f"/subscriptions/{created['id']}/deactivate")
    assert second.status_code == 422, second.text
    assert second.json()["code"] == "already_inactive"
    assert second.json()["detail"] == f"subscription {created['id']} is already inactive"
    assert (await listed(client, "user_id=1"))["items"] == [first.json()]


@pytest.mark.parametrize("subscription_id", ["4242", str(2**63 - 1)])
async def test_deactivating_an_unknown_subscription_is_404(
    client: httpx.AsyncClient, subscription_id: str
) -> None:
    response = await client.patch(f"/subscriptions/{subscription_id}/deactivate")
    assert response.status_code == 404, response.text
    assert response.json()["code"] == "not_found"


@pytest.mark.parametrize("subscription_id", ["0", "-1", HUGE_ID, "abc"])
async def test_invalid_subscription_ids_are_422_not_500(
    client: httpx.AsyncClient, subscription_id: str
) -> None:
    response = await client.patch(f"/subscriptions/{subscription_id}/deactivate")
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"


# --- schema, audit, permissions -----------------------------------------------------------------


async def test_the_indexes_seed_004_lists_exist(db: Runtime) -> None:
    async with db.database.engine.connect() as connection:
        indexes = await connection.run_sync(
            lambda c: inspect(c).get_indexes("promotion_subscriptions")
        )
        uniques = await connection.run_sync(
            lambda c: inspect(c).get_unique_constraints("promotion_subscriptions")
        )
    plain = {tuple(i["column_names"]) for i in indexes if not i["unique"]}
    assert {
        ("subscriber_id",),
        ("promotion_id",),
        ("is_active",),
        ("subscriber_id", "is_active"),
        ("promotion_id", "is_active"),
    } <= plain
    unique = {tuple(u["column_names"]) for u in uniques}
    unique |= {tuple(i["column_names"]) for i in indexes if i["unique"]}
    assert ("subscriber_id", "promotion_id") in unique


async def test_subscription_changes_are_audited_and_rejections_are_not(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    await seed_example_data(client)
    created = await subscribe(client, user_id=1, promotion_id=2, metadata=METADATA)
    await client.post("/subscriptions", json={"user_id": 1, "promotion_id": 2})  # 409
    await client.post("/subscriptions", json={"user_id": 4242, "promotion_id": 2})  # 404
    await client.patch(f"/subscriptions/{created['id']}/deactivate")
    await client.patch(f"/subscriptions/{created['id']}/deactivate")  # 422

    entries = (await session.scalars(select(AuditEntry).order_by(AuditEntry.id))).all()
    rows = [
        (e.action, e.target_type, e.target_id, e.detail, e.actor)
        for e in entries
        if e.action.startswith("promotion_subscription.")
    ]
    await session.rollback()
    sid = str(created["id"])
    assert [r[:4] for r in rows] == [
        (
            "promotion_subscription.create",
            "promotion_subscription",
            sid,
            {"subscriber_id": 1, "promotion_id": 2},
        ),
        ("promotion_subscription.deactivate", "promotion_subscription", sid, None),
    ]
    assert all(r[4].startswith("test admin (tdg_") for r in rows)
    assert all("user1@example.com" not in str(r[3]) for r in rows)


async def test_a_read_key_cannot_create_or_deactivate_but_can_list(
    anon_client: httpx.AsyncClient, client: httpx.AsyncClient, api_keys: dict[Scope, str]
) -> None:
    await seed_example_data(client)
    created = await subscribe(client, user_id=1, promotion_id=1)
    reader = {"Authorization": f"Bearer {api_keys[Scope.read]}"}
    body = {"user_id": 1, "promotion_id": 2, "metadata": METADATA}
    refused = await anon_client.post("/subscriptions", json=body, headers=reader)
    assert refused.status_code == 403, refused.text
    assert refused.json()["code"] == "forbidden"
    refused = await anon_client.patch(f"/subscriptions/{created['id']}/deactivate", headers=reader)
    assert refused.status_code == 403, refused.text
    mine = await anon_client.get("/subscriptions?user_id=1", headers=reader)
    assert mine.status_code == 200 and mine.json()["items"] == [created]
    writer = {"Authorization": f"Bearer {api_keys[Scope.write]}"}
    assert (await anon_client.post("/subscriptions", json=body, headers=writer)).status_code == 201
    del anon_client.headers["Authorization"]
    assert (await anon_client.post("/subscriptions", json=body)).status_code == 401
    assert (await anon_client.get("/subscriptions?user_id=1")).status_code == 401
