"""Subscribers API (seeds 000, 002, 004) on both databases."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from tests.factories import add_subscriber
from tidings.runtime import Runtime
from tidings.security.models import AuditEntry


async def test_create_subscriber_returns_201_with_normalized_fields(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/subscribers/",
        json={
            "email": "  Ann.Lee@Example.COM ",
            "name": "Ann",
            "attributes": {"plan": "pro", "seats": 3},
            "tags": ["Tech", "retail", "tech"],
            "timezone": "Europe/Berlin",
            "phone": "+49 151 1234 5678",
        },
    )
    assert response.status_code == 201
    body = response.json()
    assert body["email"] == "Ann.Lee@example.com"
    assert body["tags"] == ["retail", "tech"]
    assert body["phone"] == "+4915112345678"
    assert body["status"] == "active"
    assert body["created_at"].endswith("Z") or body["created_at"].endswith("+00:00")


async def test_same_address_in_any_case_is_a_409(client: httpx.AsyncClient) -> None:
    await add_subscriber(client, "bob@example.com")
    response = await client.post("/subscribers/", json={"email": "BOB@EXAMPLE.com"})
    assert response.status_code == 409
    assert response.json()["code"] == "duplicate_subscriber"


async def test_concurrent_duplicates_let_exactly_one_win(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    responses = await asyncio.gather(
        *[
            client.post(
                "/subscribers/", json={"email": "Race@Example.com" if i % 2 else "race@example.com"}
            )
            for i in range(6)
        ]
    )
    codes = sorted(r.status_code for r in responses)
    assert codes == [201, 409, 409, 409, 409, 409]
    assert await session.scalar(text("SELECT count(*) FROM subscribers")) == 1


async def test_unique_index_rejects_a_second_row_with_the_same_blind_index(
    client: httpx.AsyncClient, db: Runtime
) -> None:
    await add_subscriber(client, "dup@example.com")
    async with db.database.engine.connect() as connection:
        row = (await connection.execute(text("SELECT email, email_hash FROM subscribers"))).one()
        with pytest.raises(IntegrityError):
            await connection.execute(
                text(
                    "INSERT INTO subscribers (email, email_hash, email_domain, name, attributes, "
                    "status, engagement_score, created_at, updated_at) VALUES (:e, :h, 'x.org', "
                    "'', '{}', 'active', 0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                ),
                {"e": row.email, "h": row.email_hash},
            )


@pytest.mark.parametrize(
    ("email", "fragment"),
    [
        ("not-an-address", "@-sign"),
        ("ann@", "after the @-sign"),
        ("ann@@example.com", "@"),
        ("ann@example", "period"),
    ],
)
async def test_invalid_email_is_a_422_saying_why(
    client: httpx.AsyncClient, email: str, fragment: str
) -> None:
    response = await client.post("/subscribers/", json={"email": email})
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "invalid_subscriber"
    assert email in body["detail"] and fragment in body["detail"]


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("tags", ["no spaces allowed"], "tag"),
        ("timezone", "Mars/Olympus", "IANA"),
        ("phone", "12345", "E.164"),
        ("name", "x" * 201, "at most 200"),
        ("attributes", {"k": "a\x00b"}, "NUL"),
        ("unknown", 1, "Extra inputs"),
    ],
)
async def test_bad_fields_are_422_naming_the_field(
    client: httpx.AsyncClient, field: str, value: object, fragment: str
) -> None:
    response = await client.post("/subscribers/", json={"email": "ok@example.com", field: value})
    assert response.status_code == 422
    assert fragment in response.json()["detail"]
    assert (await client.get("/subscribers/")).json()["total"] == 0


async def test_idn_domains_are_stored_in_ascii_and_found_either_way(
    client: httpx.AsyncClient,
) -> None:
    body = await add_subscriber(client, "jörg@Bücher.example")
    assert body["email"] == "jörg@xn--bcher-kva.example"
    found = await client.get("/subscribers/jörg@bücher.example")
    assert found.status_code == 200 and found.json()["id"] == body["id"]


async def test_get_by_email_and_by_id(client: httpx.AsyncClient) -> None:
    body = await add_subscriber(client, "carol@example.com", name="Carol")
    by_email = await client.get("/subscribers/CAROL@example.com")
    by_id = await client.get(f"/subscribers/{body['id']}")
    assert by_email.json() == by_id.json() == body
    missing = await client.get("/subscribers/nobody@example.com")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    assert (await client.get("/subscribers/99999999999999999999999")).status_code == 404
    assert (await client.get("/subscribers/²")).status_code == 404  # a digit to str.isdigit only


async def test_put_updates_fields_and_keeps_the_rest(client: httpx.AsyncClient) -> None:
    body = await add_subscriber(
        client, "dan@example.com", name="Dan", tags=["tech"], attributes={"a": 1}
    )
    response = await client.put(
        "/subscribers/dan@example.com", json={"name": "Daniel", "tags": ["finance", "tech"]}
    )
    assert response.status_code == 200
    updated = response.json()
    assert updated["name"] == "Daniel"
    assert updated["tags"] == ["finance", "tech"]
    assert updated["attributes"] == {"a": 1}
    assert updated["updated_at"] >= body["updated_at"]


async def test_put_to_an_address_already_taken_is_a_409(client: httpx.AsyncClient) -> None:
    await add_subscriber(client, "erin@example.com")
    frank = await add_subscriber(client, "frank@example.com")
    response = await client.put(f"/subscribers/{frank['id']}", json={"email": "ERIN@example.com"})
    assert response.status_code == 409
    moved = await client.put(f"/subscribers/{frank['id']}", json={"email": "frank2@example.com"})
    assert moved.json()["email"] == "frank2@example.com"
    assert (await client.get("/subscribers/frank@example.com")).status_code == 404


async def test_delete_unsubscribes_and_keeps_the_record(client: httpx.AsyncClient) -> None:
    await add_subscriber(client, "gina@example.com")
    response = await client.delete("/subscribers/gina@example.com")
    assert response.status_code == 200
    assert response.json()["status"] == "unsubscribed"
    assert response.json()["unsubscribed_at"] is not None
    again = await client.get("/subscribers/gina@example.com")
    assert again.json()["status"] == "unsubscribed"


async def test_list_filters_by_status_tag_topic_and_email(client: httpx.AsyncClient) -> None:
    topic = (await client.post("/topics/", json={"name": "Weekly"})).json()
    await add_subscriber(client, "a@example.com", tags=["tech"], topic_ids=[topic["id"]])
    await add_subscriber(client, "b@example.com", tags=["retail"])
    await add_subscriber(client, "c@example.com", tags=["tech"])
    await client.delete("/subscribers/c@example.com")

    async def emails(**params: object) -> list[str]:
        response = await client.get("/subscribers/", params=params)
        assert response.status_code == 200, response.text
        return [item["email"] for item in response.json()["items"]]

    assert await emails(tag="tech") == ["a@example.com", "c@example.com"]
    assert await emails(status="unsubscribed") == ["c@example.com"]
    assert await emails(topic_id=topic["id"]) == ["a@example.com"]
    assert await emails(email="B@example.com") == ["b@example.com"]
    assert await emails(email="not an address") == []
    bad = await client.get("/subscribers/", params={"status": "gone"})
    assert bad.status_code == 422 and "status" in bad.json()["detail"]


async def test_pagination_by_offset_and_by_cursor(client: httpx.AsyncClient) -> None:
    for i in range(7):
        await add_subscriber(client, f"p{i}@example.com")
    first = (await client.get("/subscribers/", params={"limit": 3})).json()
    assert first["total"] == 7 and len(first["items"]) == 3
    second = (await client.get("/subscribers/", params={"limit": 3, "offset": 3})).json()
    assert [i["email"] for i in second["items"]] == [
        "p3@example.com",
        "p4@example.com",
        "p5@example.com",
    ]
    seen, cursor = [], None
    while True:
        params: dict[str, object] = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/subscribers/", params=params)).json()
        seen += [i["email"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"p{i}@example.com" for i in range(7)]
    assert (await client.get("/subscribers/", params={"limit": 1001})).status_code == 422
    bad_cursor = await client.get("/subscribers/", params={"cursor": "garbage!"})
    assert bad_cursor.status_code == 422 and "cursor" in bad_cursor.json()["detail"]


async def test_changes_are_written_to_the_audit_log(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    body = await add_subscriber(client, "hal@example.com")
    await client.put("/subscribers/hal@example.com", json={"name": "Hal"})
    await client.delete("/subscribers/hal@example.com")
    entries = (await session.scalars(select(AuditEntry).order_by(AuditEntry.id))).all()
    actions = [(e.action, e.target_id) for e in entries if e.target_type == "subscriber"]
    assert actions == [
        ("subscriber.create", str(body["id"])),
        ("subscriber.update", str(body["id"])),
        ("subscriber.unsubscribe", str(body["id"])),
    ]
    assert all(
        e.actor.startswith("test admin (tdg_") for e in entries if e.target_type == "subscriber"
    )
    assert all("hal@example.com" not in str(e.detail) for e in entries)
