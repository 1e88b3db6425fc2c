"""Unsubscribing from a message: RFC 8058 one-click from the List-Unsubscribe header, the page
behind the link, and topic preferences; each takes effect before the next delivery is sent."""

from __future__ import annotations

import re
from email.message import EmailMessage

import httpx
from sqlalchemy import select

from tests.delivery.support import SmtpServer, fill_subscribers, send_campaign
from tests.delivery.test_worker import PUBLIC_URL, deliveries, drain, make_worker
from tidings.audience.models import Subscriber, TopicSubscription
from tidings.runtime import Runtime
from tidings.tracking.models import Event

ONE_CLICK = {"List-Unsubscribe": "One-Click"}


async def topic(client: httpx.AsyncClient, name: str, *subscribers: int) -> int:
    created = await client.post("/topics/", json={"name": name})
    assert created.status_code == 201, created.text
    topic_id: int = created.json()["id"]
    for subscriber in subscribers:
        joined = await client.post(
            f"/topics/{topic_id}/subscribers", json={"subscriber_id": subscriber}
        )
        assert joined.status_code == 201, joined.text
    return topic_id


async def send_and_receive(
    client: httpx.AsyncClient, db: Runtime, **fields: object
) -> list[EmailMessage]:
    await send_campaign(client, db, **fields)
    with SmtpServer() as server:
        await drain(make_worker(db, server.port))
        return [message for _, message in server.inbox.parsed()]


def unsubscribe_path(message: EmailMessage) -> str:
    header = str(message["List-Unsubscribe"])
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = re.search(r"<(https://[^>]+)>", header)
    assert url is not None and url[1].startswith(f"{PUBLIC_URL}/u/")
    return url[1].removeprefix(PUBLIC_URL)


async def memberships(db: Runtime) -> set[tuple[int, int, str]]:
    async with db.database.sessions() as session:
        rows = await session.scalars(select(TopicSubscription))
        return {(r.topic_id, r.subscriber_id, r.status) for r in rows}


async def subscriber_status(db: Runtime, subscriber_id: int) -> str:
    async with db.database.sessions() as session:
        return (await session.get_one(Subscriber, subscriber_id)).status


async def test_one_click_unsubscribes_from_the_campaigns_topic_at_once_and_the_next_run_skips(
    anon_client: httpx.AsyncClient, client: httpx.AsyncClient, db: Runtime
) -> None:
    await fill_subscribers(db, 2)
    news = await topic(client, "News", 1, 2)
    offers = await topic(client, "Offers", 1, 2)
    message, _ = sorted(
        await send_and_receive(client, db, topic_ids=[news]), key=lambda m: str(m["To"])
    )
    answer = await anon_client.post(unsubscribe_path(message), data=ONE_CLICK)
    assert answer.status_code == 200 and "location" not in answer.headers
    assert await memberships(db) == {
        (news, 1, "unsubscribed"), (news, 2, "active"), (offers, 1, "active"),
        (offers, 2, "active"),
    }  # fmt: skip
    assert await subscriber_status(db, 1) == "active"  # still gets Offers
    again = await anon_client.post(unsubscribe_path(message), data=ONE_CLICK)
    assert again.status_code == 200  # a second click changes nothing
    next_run = await send_and_receive(client, db, topic_ids=[news])
    assert [str(m["To"]) for m in next_run] == ["user1@example.org"]
    async with db.database.sessions() as session:
        kinds = (await session.scalars(select(Event.type).where(Event.subscriber_id == 1))).all()
    assert set(kinds) == {"unsubscribed"}


async def test_a_delivery_already_queued_is_skipped_once_its_subscriber_left_the_topic(
    anon_client: httpx.AsyncClient, client: httpx.AsyncClient, db: Runtime
) -> None:
    await fill_subscribers(db, 1)
    news = await topic(client, "News", 1)
    (message,) = await send_and_receive(client, db, topic_ids=[news])
    _, run_id = await send_campaign(client, db, topic_ids=[news], name="Second")  # queued
    await anon_client.post(unsubscribe_path(message), data=ONE_CLICK)
    with SmtpServer() as server:
        await drain(make_worker(db, server.port))
        assert server.inbox.messages == []
    (delivery,) = (await deliveries(db, run_id)).values()
    assert delivery.status == "suppressed"


async def test_the_page_unsubscribes_only_when_a_button_is_pressed(
    anon_client: httpx.AsyncClient, client: httpx.AsyncClient, db: Runtime
) -> None:
    await fill_subscribers(db, 1)
    news = await topic(client, "News", 1)
    (message,) = await send_and_receive(client, db, topic_ids=[news])
    path = unsubscribe_path(message)
    shown = await anon_client.get(path)
    assert shown.status_code == 200
    assert "Unsubscribe from News" in shown.text and "everything" in shown.text
    assert "u•••@example.org" in shown.text and "user0@" not in shown.text
    assert await subscriber_status(db, 1) == "active"  # a scanner following links does nothing
    refused = await anon_client.post(path, data={"scope": "some"})
    assert refused.status_code == 400
    done = await anon_client.post(path, data={"scope": "all"})
    assert done.status_code == 200 and "no more mail" in done.text
    assert await subscriber_status(db, 1) == "unsubscribed"
    assert await memberships(db) == {(news, 1, "unsubscribed")}


async def test_a_campaign_to_everyone_unsubscribes_from_everything(
    anon_client: httpx.AsyncClient, client: httpx.AsyncClient, db: Runtime
) -> None:
    await fill_subscribers(db, 1)
    (message,) = await send_and_receive(client, db)
    assert (await anon_client.post(unsubscribe_path(message), data=ONE_CLICK)).status_code == 200
    assert await subscriber_status(db, 1) == "unsubscribed"
    assert await send_and_receive(client, db, name="Later") == []


async def test_preferences_keep_exactly_the_chosen_public_topics(
    anon_client: httpx.AsyncClient, client: httpx.AsyncClient, db: Runtime
) -> None:
    await fill_subscribers(db, 1)
    news = await topic(client, "News", 1)
    offers = await topic(client, "Offers")
    (message,) = await send_and_receive(client, db, topic_ids=[news])
    path = unsubscribe_path(message) + "/preferences"
    shown = await anon_client.get(path)
    assert f"value={news} checked" in shown.text and f"value={offers}>" in shown.text
    saved = await anon_client.post(path, data={"topic": [str(offers)]})
    assert saved.status_code == 200
    assert await memberships(db) == {(news, 1, "unsubscribed"), (offers, 1, "active")}


async def test_links_that_are_not_ours_are_404_and_change_nothing(
    anon_client: httpx.AsyncClient, db: Runtime
) -> None:
    await fill_subscribers(db, 1)
    for path in ("/u/AAAAAAAAAAEAAAAAAAAAAAAAAAA", "/u/x", "/u/x/preferences"):
        assert (await anon_client.get(path)).status_code == 404
        assert (await anon_client.post(path, data=ONE_CLICK)).status_code == 404
    assert await subscriber_status(db, 1) == "active"
