"""Public sign-up (no API key): same answer for everyone, double opt-in by mail, rate limits."""

from __future__ import annotations

import email
import re
from collections.abc import AsyncIterator
from email import policy
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest

from tests.factories import add_subscriber, add_topic
from tidings.app import create_app
from tidings.runtime import Runtime

LINK = re.compile(r"https?://\S+/public/confirm\?token=[A-Za-z0-9_.-]+")


def mailbox(db: Runtime) -> list[EmailMessage]:
    new = db.settings.data_dir / "mail" / "new"
    files = sorted(new.glob("*.eml")) if new.exists() else []
    return [email.message_from_bytes(f.read_bytes(), policy=policy.default) for f in files]


@pytest.fixture(autouse=True)
def empty_mailbox(db: Runtime) -> None:
    for f in (db.settings.data_dir / "mail" / "new").glob("*.eml"):
        Path(f).unlink()


@pytest.fixture
async def visitor(db: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """Someone on the web: no API key, and an app (so rate limits) of their own."""
    transport = httpx.ASGITransport(app=create_app(runtime=db))
    async with httpx.AsyncClient(transport=transport, base_url="http://tidings.test") as c:
        yield c


def confirmation_link(message: EmailMessage) -> str:
    body = message.get_body(("plain",))
    assert body is not None
    match = LINK.search(body.get_content())
    assert match, body.get_content()
    return match.group(0).split("/public/confirm", 1)[1]


async def test_double_opt_in_sends_a_signed_link_and_confirming_activates(
    client: httpx.AsyncClient, visitor: httpx.AsyncClient, db: Runtime
) -> None:
    topic = await add_topic(client, "Product news", optin="double")
    response = await visitor.post(
        "/public/subscribe",
        json={"email": "Nia@Example.com", "name": "Nia", "topic_id": topic["id"]},
    )
    assert response.status_code == 202
    [message] = mailbox(db)
    assert message["To"] == "Nia@example.com"
    assert "Product news" in message["Subject"]
    members = (await client.get(f"/topics/{topic['id']}/subscribers")).json()["items"]
    assert [m["status"] for m in members] == ["pending"]

    confirmed = await visitor.get(f"/public/confirm{confirmation_link(message)}")
    assert confirmed.status_code == 200 and "confirmed" in confirmed.text
    members = (await client.get(f"/topics/{topic['id']}/subscribers")).json()["items"]
    assert [m["status"] for m in members] == ["active"]
    again = await visitor.get(f"/public/confirm{confirmation_link(message)}")
    assert again.status_code == 200


async def test_the_answer_is_the_same_for_known_new_and_suppressed_addresses(
    client: httpx.AsyncClient, visitor: httpx.AsyncClient
) -> None:
    topic = await add_topic(client, "Weekly")
    await add_subscriber(client, "known@example.com", topic_ids=[topic["id"]])
    gone = await add_subscriber(client, "gone@example.com")
    await client.post(f"/subscribers/{gone['id']}/erase")
    answers = []
    for address in ("known@example.com", "new@example.com", "gone@example.com"):
        response = await visitor.post(
            "/public/subscribe", json={"email": address, "topic_id": topic["id"]}
        )
        answers.append((response.status_code, response.text))
    assert len(set(answers)) == 1 and answers[0][0] == 202
    assert (await client.get("/subscribers/new@example.com")).json()["status"] == "active"
    assert (await client.get("/subscribers/gone@example.com")).status_code == 404


async def test_a_plain_html_form_post_gets_an_html_page(
    client: httpx.AsyncClient, visitor: httpx.AsyncClient
) -> None:
    topic = await add_topic(client, "Weekly")
    response = await visitor.post(
        "/public/subscribe", data={"email": "form@example.com", "topic_id": str(topic["id"])}
    )
    assert response.status_code == 202
    assert response.headers["content-type"].startswith("text/html")
    members = (await client.get(f"/topics/{topic['id']}/subscribers")).json()["items"]
    assert [m["subscriber"]["email"] for m in members] == ["form@example.com"]


async def test_private_topics_bad_input_and_forged_links_are_refused(
    client: httpx.AsyncClient, visitor: httpx.AsyncClient
) -> None:
    private = await add_topic(client, "Staff", is_public=False)
    assert (await visitor.get("/public/topics")).json() == []  # only public topics are listed
    refused = await visitor.post(
        "/public/subscribe", json={"email": "x@example.com", "topic_id": private["id"]}
    )
    assert refused.status_code == 404
    open_topic = await add_topic(client, "Open")
    bad = await visitor.post(
        "/public/subscribe", json={"email": "nope", "topic_id": open_topic["id"]}
    )
    assert bad.status_code == 422
    forged = await visitor.get("/public/confirm", params={"token": "eyJ9.AAAA"})
    assert forged.status_code == 400 and "not valid" in forged.text


async def test_sign_ups_are_rate_limited_per_address_and_per_client(
    client: httpx.AsyncClient, visitor: httpx.AsyncClient
) -> None:
    topic = await add_topic(client, "Weekly", optin="double")
    codes = [
        (
            await visitor.post(
                "/public/subscribe", json={"email": "same@example.com", "topic_id": topic["id"]}
            )
        ).status_code
        for _ in range(4)
    ]
    assert codes == [202, 202, 202, 429]
    others = [
        (
            await visitor.post(
                "/public/subscribe", json={"email": f"p{i}@example.com", "topic_id": topic["id"]}
            )
        ).status_code
        for i in range(8)
    ]
    assert others[:6] == [202] * 6 and others[-1] == 429
    limited = await visitor.post(
        "/public/subscribe", json={"email": "z@example.com", "topic_id": topic["id"]}
    )
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) > 0
