"""Topics API (seed 000) on both databases: topic CRUD and subscribing subscribers to topics."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from tests.factories import add_subscriber, add_topic, post_created
from tidings.audience import subscribers as subscriber_service
from tidings.audience import topics as topic_service
from tidings.runtime import Runtime
from tidings.security.models import AuditEntry

HUGE_ID = "99999999999999999999"


async def subscribe(
    client: httpx.AsyncClient, topic_id: object, expected: int = 201, **who: object
) -> dict[str, Any]:
    return await post_created(client, f"/topics/{topic_id}/subscribers", who, expected)


async def subscription_count(session: AsyncSession) -> int:
    """Rows in topic_subscriptions. Ends the read so the connection goes back to the pool: the
    SQLite pool holds a single connection, which the API needs for the next request."""
    count = int(await session.scalar(text("SELECT count(*) FROM topic_subscriptions")) or 0)
    await session.rollback()
    return count


# --- topic CRUD ---------------------------------------------------------------------------------


async def test_create_topic_returns_201_with_public_single_optin_defaults(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/topics/", json={"name": "  Weekly digest  "})
    assert response.status_code == 201
    body = response.json()
    assert body["name"] == "Weekly digest"
    assert body["description"] == ""
    assert body["is_public"] is True
    assert body["optin"] == "single"
    assert isinstance(body["id"], int) and body["id"] >= 1
    assert body["created_at"] and body["updated_at"]


async def test_create_topic_keeps_the_given_fields(client: httpx.AsyncClient) -> None:
    body = await add_topic(
        client, "Insiders", description="Early news", is_public=False, optin="double"
    )
    assert body["description"] == "Early news"
    assert body["is_public"] is False
    assert body["optin"] == "double"


async def test_a_second_topic_with_the_same_name_is_a_409(client: httpx.AsyncClient) -> None:
    await add_topic(client, "Weekly")
    response = await client.post("/topics/", json={"name": " Weekly "})
    assert response.status_code == 409
    assert response.json()["code"] == "duplicate_topic"
    assert (await client.get("/topics/")).json()["total"] == 1


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"name": ""},
        {"name": "   "},
        {"name": "x" * 201},
        {"name": "ok", "optin": "triple"},
        {"name": "ok", "unknown": 1},
    ],
)
async def test_invalid_topic_bodies_are_422(
    client: httpx.AsyncClient, body: dict[str, object]
) -> None:
    response = await client.post("/topics/", json=body)
    assert response.status_code == 422
    assert (await client.get("/topics/")).json()["total"] == 0


async def test_list_topics_is_paginated_in_creation_order(client: httpx.AsyncClient) -> None:
    for i in range(5):
        await add_topic(client, f"Topic {i}")
    everything = (await client.get("/topics/")).json()
    assert everything["total"] == 5
    assert [t["name"] for t in everything["items"]] == [f"Topic {i}" for i in range(5)]
    page = await client.get("/topics/", params={"limit": 2, "offset": 2})
    assert page.status_code == 200
    body = page.json()
    assert body["total"] == 5 and body["limit"] == 2 and body["offset"] == 2
    assert [t["name"] for t in body["items"]] == ["Topic 2", "Topic 3"]
    beyond = (await client.get("/topics/", params={"offset": 10})).json()
    assert beyond["items"] == [] and beyond["total"] == 5
    assert (await client.get("/topics/", params={"limit": 0})).status_code == 422
    assert (await client.get("/topics/", params={"limit": 1001})).status_code == 422
    assert (await client.get("/topics/", params={"offset": -1})).status_code == 422


async def test_get_topic_by_id_and_unknown_id_is_404(client: httpx.AsyncClient) -> None:
    topic = await add_topic(client, "Releases", description="New versions")
    response = await client.get(f"/topics/{topic['id']}")
    assert response.status_code == 200
    assert response.json() == topic
    missing = await client.get(f"/topics/{int(str(topic['id'])) + 1000}")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"


async def test_patch_changes_only_the_given_fields(client: httpx.AsyncClient) -> None:
    topic = await add_topic(client, "Offers", description="Deals", is_public=True)
    response = await client.patch(f"/topics/{topic['id']}", json={"is_public": False})
    assert response.status_code == 200
    updated = response.json()
    assert updated["is_public"] is False
    assert updated["name"] == "Offers" and updated["description"] == "Deals"
    assert updated["optin"] == "single"
    assert updated["updated_at"] >= topic["updated_at"]

    renamed = await client.patch(
        f"/topics/{topic['id']}", json={"name": " Special offers ", "optin": "double"}
    )
    assert renamed.status_code == 200
    assert renamed.json()["name"] == "Special offers"
    assert renamed.json()["optin"] == "double"
    assert renamed.json()["is_public"] is False
    assert (await client.get(f"/topics/{topic['id']}")).json() == renamed.json()


async def test_patch_keeping_the_own_name_is_fine(client: httpx.AsyncClient) -> None:
    topic = await add_topic(client, "Same")
    response = await client.patch(
        f"/topics/{topic['id']}", json={"name": "Same", "description": "d"}
    )
    assert response.status_code == 200
    assert response.json()["description"] == "d"


async def test_renaming_a_topic_to_a_name_already_taken_is_a_409(
    client: httpx.AsyncClient,
) -> None:
    await add_topic(client, "Taken")
    other = await add_topic(client, "Other")
    response = await client.patch(f"/topics/{other['id']}", json={"name": "Taken"})
    assert response.status_code == 409
    assert response.json()["code"] == "duplicate_topic"
    assert (await client.get(f"/topics/{other['id']}")).json()["name"] == "Other"


async def test_patch_of_an_unknown_topic_is_404_and_bad_fields_are_422(
    client: httpx.AsyncClient,
) -> None:
    assert (await client.patch("/topics/4242", json={"name": "x"})).status_code == 404
    topic = await add_topic(client, "Strict")
    assert (await client.patch(f"/topics/{topic['id']}", json={"name": ""})).status_code == 422
    assert (await client.patch(f"/topics/{topic['id']}", json={"name": "  "})).status_code == 422
    assert (await client.get(f"/topics/{topic['id']}")).json()["name"] == "Strict"
    bad_optin = await client.patch(f"/topics/{topic['id']}", json={"optin": "maybe"})
    assert bad_optin.status_code == 422
    assert (await client.patch(f"/topics/{topic['id']}", json={"x": 1})).status_code == 422


async def test_delete_topic_is_204_and_then_404(client: httpx.AsyncClient) -> None:
    topic = await add_topic(client, "Short-lived")
    response = await client.delete(f"/topics/{topic['id']}")
    assert response.status_code == 204
    assert response.content == b""
    assert (await client.get(f"/topics/{topic['id']}")).status_code == 404
    assert (await client.delete(f"/topics/{topic['id']}")).status_code == 404
    assert (await client.get("/topics/")).json()["total"] == 0


async def test_deleting_a_topic_removes_its_subscriptions_but_not_the_subscribers(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    topic = await add_topic(client, "Doomed")
    keep = await add_topic(client, "Kept")
    await add_subscriber(client, "ivy@example.com", topic_ids=[topic["id"], keep["id"]])
    assert (await client.delete(f"/topics/{topic['id']}")).status_code == 204
    assert await subscription_count(session) == 1
    listed = await client.get("/subscribers/ivy@example.com/topics")
    assert listed.status_code == 200
    assert [s["topic"]["name"] for s in listed.json()] == ["Kept"]
    assert (await client.get("/subscribers/ivy@example.com")).status_code == 200


@pytest.mark.parametrize("topic_id", ["0", "-1", HUGE_ID, "9223372036854775808", "abc"])
@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("GET", "", None),
        ("PATCH", "", {"name": "x"}),
        ("DELETE", "", None),
        ("GET", "/subscribers", None),
        ("POST", "/subscribers", {"subscriber_id": 1}),
        ("DELETE", "/subscribers/1", None),
    ],
)
async def test_invalid_topic_ids_are_422_not_500(
    client: httpx.AsyncClient, topic_id: str, method: str, suffix: str, body: object
) -> None:
    response = await client.request(method, f"/topics/{topic_id}{suffix}", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"


async def test_the_largest_valid_topic_id_is_simply_not_found(client: httpx.AsyncClient) -> None:
    response = await client.get(f"/topics/{2**63 - 1}")
    assert response.status_code == 404


# --- subscribing --------------------------------------------------------------------------------


async def test_subscribe_by_subscriber_id_is_201_and_active(client: httpx.AsyncClient) -> None:
    topic = await add_topic(client, "Weekly")
    ann = await add_subscriber(client, "ann@example.com")
    body = await subscribe(client, topic["id"], subscriber_id=ann["id"])
    assert body["topic_id"] == topic["id"]
    assert body["subscriber_id"] == ann["id"]
    assert body["status"] == "active"
    assert body["source"] == "api"
    assert body["subscribed_at"] is not None
    assert body["unsubscribed_at"] is None


async def test_subscribe_by_email_in_any_case_is_201_and_keeps_the_source(
    client: httpx.AsyncClient,
) -> None:
    topic = await add_topic(client, "Weekly")
    bob = await add_subscriber(client, "bob@example.com")
    body = await subscribe(client, topic["id"], email="BOB@Example.com", source="signup-form")
    assert body["subscriber_id"] == bob["id"]
    assert body["source"] == "signup-form"
    assert body["status"] == "active"


@pytest.mark.parametrize("who", ["both", "neither"])
async def test_subscribe_needs_exactly_one_of_subscriber_id_or_email(
    client: httpx.AsyncClient, session: AsyncSession, who: str
) -> None:
    topic = await add_topic(client, "Weekly")
    cara = await add_subscriber(client, "cara@example.com")
    body = {"subscriber_id": cara["id"], "email": "cara@example.com"} if who == "both" else {}
    response = await client.post(f"/topics/{topic['id']}/subscribers", json=body)
    assert response.status_code == 422
    assert "exactly one" in response.json()["detail"]
    assert await subscription_count(session) == 0


@pytest.mark.parametrize(
    "body",
    [
        {"subscriber_id": 0},
        {"subscriber_id": int(HUGE_ID)},
        {"subscriber_id": "abc"},
        {"email": "x"},
        {"email": "ok@example.com", "source": "s" * 65},
        {"email": "ok@example.com", "extra": True},
    ],
)
async def test_malformed_subscribe_bodies_are_422(
    client: httpx.AsyncClient, body: dict[str, object]
) -> None:
    topic = await add_topic(client, "Weekly")
    response = await client.post(f"/topics/{topic['id']}/subscribers", json=body)
    assert response.status_code == 422, response.text


async def test_subscribing_an_unknown_subscriber_is_404(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    topic = await add_topic(client, "Weekly")
    by_id = await client.post(f"/topics/{topic['id']}/subscribers", json={"subscriber_id": 4242})
    assert by_id.status_code == 404 and by_id.json()["code"] == "not_found"
    by_email = await client.post(
        f"/topics/{topic['id']}/subscribers", json={"email": "nobody@example.com"}
    )
    assert by_email.status_code == 404 and by_email.json()["code"] == "not_found"
    assert await subscription_count(session) == 0


async def test_subscribing_to_an_unknown_topic_is_404(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    dee = await add_subscriber(client, "dee@example.com")
    response = await client.post("/topics/4242/subscribers", json={"subscriber_id": dee["id"]})
    assert response.status_code == 404 and response.json()["code"] == "not_found"
    assert await subscription_count(session) == 0


async def test_subscribing_again_while_active_is_a_409(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    topic = await add_topic(client, "Weekly")
    eve = await add_subscriber(client, "eve@example.com")
    await subscribe(client, topic["id"], subscriber_id=eve["id"])
    response = await client.post(
        f"/topics/{topic['id']}/subscribers", json={"email": "eve@example.com"}
    )
    assert response.status_code == 409
    assert response.json()["code"] == "already_subscribed"
    assert await subscription_count(session) == 1


async def test_concurrent_subscriptions_of_the_same_pair_let_exactly_one_win(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    topic = await add_topic(client, "Weekly")
    fay = await add_subscriber(client, "fay@example.com")
    responses = await asyncio.gather(
        *[
            client.post(f"/topics/{topic['id']}/subscribers", json={"subscriber_id": fay["id"]})
            for _ in range(6)
        ]
    )
    assert sorted(r.status_code for r in responses) == [201, 409, 409, 409, 409, 409]
    assert {r.json()["code"] for r in responses if r.status_code == 409} == {"already_subscribed"}
    assert await subscription_count(session) == 1


async def test_a_subscription_losing_a_race_to_the_unique_index_is_a_409_not_a_500(
    client: httpx.AsyncClient, db: Runtime
) -> None:
    """Both requests find no row; the second insert waits on the first and then hits the index.

    On PostgreSQL this takes the IntegrityError path deterministically; SQLite's single pooled
    connection serializes the two, so there it is the ordinary "already subscribed" check.
    """
    topic = await add_topic(client, "Weekly")
    uma = await add_subscriber(client, "uma@example.com")
    async with db.database.sessions() as first, db.database.sessions() as second:
        loser_topic = await topic_service.get_topic(second, int(str(topic["id"])))
        loser = await subscriber_service.find_subscriber(second, str(uma["id"]))
        await second.commit()  # give the connection back; the objects stay loaded
        winner = await topic_service.subscribe_to_topic(
            first,
            await topic_service.get_topic(first, int(str(topic["id"]))),
            await subscriber_service.find_subscriber(first, str(uma["id"])),
            source="api",
            actor="test",
            commit=False,
        )

        async def commit_soon() -> None:
            await asyncio.sleep(0.3)
            await first.commit()

        committing = asyncio.create_task(commit_soon())
        with pytest.raises(topic_service.AlreadySubscribed) as raised:
            await topic_service.subscribe_to_topic(
                second, loser_topic, loser, source="api", actor="test"
            )
        await committing
    assert raised.value.detail == (
        f"subscriber {uma['id']} is already subscribed to topic {topic['id']}"
    )
    members = (await client.get(f"/topics/{topic['id']}/subscribers")).json()
    assert [m["id"] for m in members["items"]] == [winner.subscription.id]


async def test_a_double_optin_topic_makes_new_subscriptions_pending(
    client: httpx.AsyncClient,
) -> None:
    topic = await add_topic(client, "Confirmed only", optin="double")
    gus = await add_subscriber(client, "gus@example.com")
    body = await subscribe(client, topic["id"], subscriber_id=gus["id"])
    assert body["status"] == "pending"
    again = await client.post(
        f"/topics/{topic['id']}/subscribers", json={"subscriber_id": gus["id"]}
    )
    assert again.status_code == 409 and again.json()["code"] == "already_subscribed"
    pending = await client.get(f"/topics/{topic['id']}/subscribers", params={"status": "pending"})
    assert [m["subscriber"]["email"] for m in pending.json()["items"]] == ["gus@example.com"]
    active = await client.get(f"/topics/{topic['id']}/subscribers", params={"status": "active"})
    assert active.json()["total"] == 0


# --- unsubscribing ------------------------------------------------------------------------------


@pytest.mark.parametrize("ref_kind", ["id", "email"])
async def test_unsubscribe_marks_the_subscription_and_keeps_the_row_with_timestamps(
    client: httpx.AsyncClient, session: AsyncSession, ref_kind: str
) -> None:
    topic = await add_topic(client, "Weekly")
    hal = await add_subscriber(client, "hal@example.com")
    subscribed = await subscribe(client, topic["id"], subscriber_id=hal["id"])
    ref = hal["id"] if ref_kind == "id" else "HAL@example.com"

    response = await client.delete(f"/topics/{topic['id']}/subscribers/{ref}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == subscribed["id"]
    assert body["status"] == "unsubscribed"
    assert body["subscribed_at"] == subscribed["subscribed_at"]
    assert body["unsubscribed_at"] is not None
    assert body["unsubscribed_at"] >= body["subscribed_at"]
    assert await subscription_count(session) == 1

    mine = await client.get(f"/subscribers/{ref}/topics")
    assert mine.status_code == 200
    [row] = mine.json()
    assert row["id"] == subscribed["id"] and row["status"] == "unsubscribed"
    assert row["subscribed_at"] is not None and row["unsubscribed_at"] is not None

    gone = await client.get(f"/topics/{topic['id']}/subscribers", params={"status": "unsubscribed"})
    assert gone.status_code == 200
    assert gone.json()["total"] == 1
    [member] = gone.json()["items"]
    assert member["subscriber"]["email"] == "hal@example.com"
    assert member["subscribed_at"] is not None and member["unsubscribed_at"] is not None
    active = await client.get(f"/topics/{topic['id']}/subscribers", params={"status": "active"})
    assert active.json()["total"] == 0
    # The subscriber as a whole is still subscribed to the newsletter: only the topic is dropped.
    assert (await client.get(f"/subscribers/{hal['id']}")).json()["status"] == "active"


async def test_unsubscribing_twice_is_harmless(client: httpx.AsyncClient) -> None:
    topic = await add_topic(client, "Weekly")
    ida = await add_subscriber(client, "ida@example.com")
    await subscribe(client, topic["id"], subscriber_id=ida["id"])
    first = await client.delete(f"/topics/{topic['id']}/subscribers/{ida['id']}")
    second = await client.delete(f"/topics/{topic['id']}/subscribers/ida@example.com")
    assert first.status_code == second.status_code == 200
    assert second.json()["status"] == "unsubscribed"
    assert second.json()["unsubscribed_at"] == first.json()["unsubscribed_at"]


async def test_unsubscribing_a_pending_subscription_works(client: httpx.AsyncClient) -> None:
    topic = await add_topic(client, "Confirmed only", optin="double")
    jo = await add_subscriber(client, "jo@example.com")
    await subscribe(client, topic["id"], subscriber_id=jo["id"])
    response = await client.delete(f"/topics/{topic['id']}/subscribers/{jo['id']}")
    assert response.status_code == 200 and response.json()["status"] == "unsubscribed"


async def test_unsubscribing_someone_never_subscribed_is_404(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    topic = await add_topic(client, "Weekly")
    other = await add_topic(client, "Other")
    kim = await add_subscriber(client, "kim@example.com", topic_ids=[other["id"]])
    response = await client.delete(f"/topics/{topic['id']}/subscribers/{kim['id']}")
    assert response.status_code == 404 and response.json()["code"] == "not_found"
    unknown = await client.delete(f"/topics/{topic['id']}/subscribers/nobody@example.com")
    assert unknown.status_code == 404
    no_topic = await client.delete(f"/topics/4242/subscribers/{kim['id']}")
    assert no_topic.status_code == 404
    huge_ref = await client.delete(f"/topics/{topic['id']}/subscribers/{HUGE_ID}")
    assert huge_ref.status_code == 404
    assert await subscription_count(session) == 1


# --- resubscribing ------------------------------------------------------------------------------


async def test_resubscribing_reactivates_the_same_row(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    topic = await add_topic(client, "Weekly")
    lea = await add_subscriber(client, "lea@example.com")
    first = await subscribe(client, topic["id"], subscriber_id=lea["id"])
    await client.delete(f"/topics/{topic['id']}/subscribers/{lea['id']}")

    again = await subscribe(client, topic["id"], expected=200, email="lea@example.com")
    assert again["id"] == first["id"]
    assert again["status"] == "active"
    assert str(again["subscribed_at"]) >= str(first["subscribed_at"])
    assert await subscription_count(session) == 1

    active = await client.get(f"/topics/{topic['id']}/subscribers", params={"status": "active"})
    assert [m["id"] for m in active.json()["items"]] == [first["id"]]
    conflict = await client.post(
        f"/topics/{topic['id']}/subscribers", json={"subscriber_id": lea["id"]}
    )
    assert conflict.status_code == 409 and conflict.json()["code"] == "already_subscribed"


async def test_resubscribing_to_a_double_optin_topic_is_pending_again(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    topic = await add_topic(client, "Confirmed only", optin="double")
    max_ = await add_subscriber(client, "max@example.com")
    first = await subscribe(client, topic["id"], subscriber_id=max_["id"])
    await client.delete(f"/topics/{topic['id']}/subscribers/{max_['id']}")
    again = await subscribe(client, topic["id"], expected=200, subscriber_id=max_["id"])
    assert again["id"] == first["id"] and again["status"] == "pending"
    assert await subscription_count(session) == 1


# --- listings -----------------------------------------------------------------------------------


async def test_topic_members_embed_the_subscriber_and_filter_by_status(
    client: httpx.AsyncClient,
) -> None:
    topic = await add_topic(client, "Weekly")
    other = await add_topic(client, "Other")
    people = [await add_subscriber(client, f"m{i}@example.com", name=f"M{i}") for i in range(4)]
    for person in people:
        await subscribe(client, topic["id"], subscriber_id=person["id"])
    await subscribe(client, other["id"], subscriber_id=people[0]["id"])
    await add_subscriber(client, "outsider@example.com")
    await client.delete(f"/topics/{topic['id']}/subscribers/m1@example.com")

    response = await client.get(f"/topics/{topic['id']}/subscribers")
    assert response.status_code == 200
    body = response.json()
    assert body["total"] == 4
    assert [m["subscriber"]["email"] for m in body["items"]] == [
        f"m{i}@example.com" for i in range(4)
    ]
    first = body["items"][0]
    assert first["topic_id"] == topic["id"]
    assert first["subscriber_id"] == people[0]["id"]
    assert first["subscriber"] == people[0]

    async def emails(**params: str) -> list[str]:
        page = await client.get(f"/topics/{topic['id']}/subscribers", params=params)
        assert page.status_code == 200, page.text
        return [m["subscriber"]["email"] for m in page.json()["items"]]

    assert await emails(status="active") == ["m0@example.com", "m2@example.com", "m3@example.com"]
    assert await emails(status="unsubscribed") == ["m1@example.com"]
    assert await emails(status="pending") == []
    bad = await client.get(f"/topics/{topic['id']}/subscribers", params={"status": "gone"})
    assert bad.status_code == 422 and "status" in bad.json()["detail"]


async def test_topic_members_are_paginated(client: httpx.AsyncClient) -> None:
    topic = await add_topic(client, "Weekly")
    for i in range(5):
        await add_subscriber(client, f"p{i}@example.com", topic_ids=[topic["id"]])
    page = await client.get(f"/topics/{topic['id']}/subscribers", params={"limit": 2, "offset": 2})
    assert page.status_code == 200
    body = page.json()
    assert body["total"] == 5 and body["limit"] == 2 and body["offset"] == 2
    assert [m["subscriber"]["email"] for m in body["items"]] == ["p2@example.com", "p3@example.com"]
    filtered = await client.get(
        f"/topics/{topic['id']}/subscribers", params={"status": "active", "limit": 1}
    )
    assert filtered.json()["total"] == 5 and len(filtered.json()["items"]) == 1
    too_many = await client.get(f"/topics/{topic['id']}/subscribers", params={"limit": 1001})
    assert too_many.status_code == 422


async def test_members_of_an_unknown_topic_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/topics/4242/subscribers")
    assert response.status_code == 404 and response.json()["code"] == "not_found"


async def test_a_subscribers_topics_embed_the_topic(client: httpx.AsyncClient) -> None:
    weekly = await add_topic(client, "Weekly")
    offers = await add_topic(client, "Offers", optin="double", is_public=False)
    await add_topic(client, "Unrelated")
    ned = await add_subscriber(client, "ned@example.com")
    await subscribe(client, offers["id"], subscriber_id=ned["id"])
    await subscribe(client, weekly["id"], subscriber_id=ned["id"])

    by_email = await client.get("/subscribers/NED@example.com/topics")
    by_id = await client.get(f"/subscribers/{ned['id']}/topics")
    assert by_email.status_code == by_id.status_code == 200
    assert by_email.json() == by_id.json()
    rows = by_id.json()
    assert [r["topic_id"] for r in rows] == [weekly["id"], offers["id"]]
    assert [r["topic"] for r in rows] == [weekly, offers]
    assert [r["status"] for r in rows] == ["active", "pending"]
    assert all(r["subscriber_id"] == ned["id"] for r in rows)


async def test_a_subscriber_without_topics_has_an_empty_list_and_unknown_is_404(
    client: httpx.AsyncClient,
) -> None:
    await add_subscriber(client, "ola@example.com")
    assert (await client.get("/subscribers/ola@example.com/topics")).json() == []
    missing = await client.get("/subscribers/nobody@example.com/topics")
    assert missing.status_code == 404
    assert (await client.get(f"/subscribers/{HUGE_ID}/topics")).status_code == 404


# --- subscribing on creation --------------------------------------------------------------------


async def test_creating_a_subscriber_with_topic_ids_subscribes_them(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    weekly = await add_topic(client, "Weekly")
    confirmed = await add_topic(client, "Confirmed only", optin="double")
    pat = await add_subscriber(
        client, "pat@example.com", topic_ids=[weekly["id"], confirmed["id"], weekly["id"]]
    )
    rows = (await client.get(f"/subscribers/{pat['id']}/topics")).json()
    assert [(r["topic"]["name"], r["status"], r["source"]) for r in rows] == [
        ("Weekly", "active", "api"),
        ("Confirmed only", "pending", "api"),
    ]
    assert await subscription_count(session) == 2
    members = (await client.get(f"/topics/{weekly['id']}/subscribers")).json()
    assert [m["subscriber"]["email"] for m in members["items"]] == ["pat@example.com"]


async def test_an_unknown_topic_id_on_creation_is_404_and_creates_nobody(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    weekly = await add_topic(client, "Weekly")
    response = await client.post(
        "/subscribers/", json={"email": "quin@example.com", "topic_ids": [weekly["id"], 4242]}
    )
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert (await client.get("/subscribers/")).json()["total"] == 0
    assert (await client.get("/subscribers/quin@example.com")).status_code == 404
    assert await subscription_count(session) == 0
    bad = await client.post("/subscribers/", json={"email": "quin@example.com", "topic_ids": [0]})
    assert bad.status_code == 422
    assert (await client.get("/subscribers/")).json()["total"] == 0


# --- audit log ----------------------------------------------------------------------------------


async def test_topic_changes_are_written_to_the_audit_log(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    topic = await add_topic(client, "Weekly")
    rex = await add_subscriber(client, "rex@example.com")
    first = await subscribe(client, topic["id"], subscriber_id=rex["id"])
    await client.delete(f"/topics/{topic['id']}/subscribers/{rex['id']}")
    await client.delete(f"/topics/{topic['id']}/subscribers/{rex['id']}")  # no second entry
    await subscribe(client, topic["id"], expected=200, subscriber_id=rex["id"])
    await client.post(f"/topics/{topic['id']}/subscribers", json={"subscriber_id": rex["id"]})

    entries = (await session.scalars(select(AuditEntry).order_by(AuditEntry.id))).all()
    topic_entries = [e for e in entries if e.action.startswith("topic.")]
    assert [(e.action, e.target_type, e.target_id) for e in topic_entries] == [
        ("topic.create", "topic", str(topic["id"])),
        ("topic.subscribe", "topic_subscription", str(first["id"])),
        ("topic.unsubscribe", "topic_subscription", str(first["id"])),
        ("topic.resubscribe", "topic_subscription", str(first["id"])),
    ]
    assert topic_entries[0].detail == {"name": "Weekly"}
    membership = {"topic_id": topic["id"], "subscriber_id": rex["id"]}
    assert all(e.detail == membership for e in topic_entries[1:])
    assert all(e.actor.startswith("test admin (tdg_") for e in topic_entries)
    assert all("rex@example.com" not in str(e.detail) for e in entries)


async def test_topic_update_and_delete_are_audited_and_rejections_are_not(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    topic = await add_topic(client, "Weekly")
    await add_topic(client, "Taken")
    await client.post("/topics/", json={"name": "Weekly"})  # 409: no entry
    await client.patch(f"/topics/{topic['id']}", json={"name": "Taken"})  # 409: no entry
    await client.patch(f"/topics/{topic['id']}", json={"description": "d"})
    await client.delete(f"/topics/{topic['id']}")
    entries = (await session.scalars(select(AuditEntry).order_by(AuditEntry.id))).all()
    assert [(e.action, e.target_id) for e in entries if e.target_type == "topic"] == [
        ("topic.create", str(topic["id"])),
        ("topic.create", str(int(str(topic["id"])) + 1)),
        ("topic.update", str(topic["id"])),
        ("topic.delete", str(topic["id"])),
    ]


async def test_a_subscription_on_creation_is_audited_with_the_subscriber(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    topic = await add_topic(client, "Weekly")
    sam = await add_subscriber(client, "sam@example.com", topic_ids=[topic["id"]])
    entries = (await session.scalars(select(AuditEntry).order_by(AuditEntry.id))).all()
    entries = [e for e in entries if not e.action.startswith("api_key.")]
    assert [e.action for e in entries] == ["topic.create", "topic.subscribe", "subscriber.create"]
    assert entries[1].detail == {"topic_id": topic["id"], "subscriber_id": sam["id"]}
