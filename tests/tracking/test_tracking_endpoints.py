"""Opens and clicks end to end: a campaign's HTML goes out with counted links and an open
pixel; the pixel and the redirects answer, forged tokens get nothing, and the events land in the
database with machines told apart and engagement raised."""

from __future__ import annotations

import re
from datetime import timedelta
from email.message import EmailMessage

import httpx
from sqlalchemy import select, update

from tests.delivery.support import SmtpServer, fill_subscribers, send_campaign
from tests.delivery.test_worker import PUBLIC_URL, drain, make_worker
from tidings.audience.models import Subscriber
from tidings.campaigns.models import Delivery
from tidings.db.types import utcnow
from tidings.runtime import Runtime
from tidings.tracking.endpoints import PIXEL
from tidings.tracking.models import Event, Link

BROWSER = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/130.0 Safari/537.36"
HTML = (
    '<p>Hi {name}. <a href="https://shop.example.com/sale?x=1&amp;y=2">Sale</a> '
    "<a href='https://blog.example.com/post'>Post</a> "
    '<a data-notrack href="https://private.example.com/">Private</a> '
    '<a href="{{ unsubscribe_url }}">Unsubscribe</a></p>'
)


def html_of(message: EmailMessage) -> str:
    part = message.get_body(("html",))
    assert part is not None
    return str(part.get_content())


async def sent_html(client: httpx.AsyncClient, db: Runtime, **fields: object) -> list[str]:
    await send_campaign(client, db, html=HTML, **fields)
    with SmtpServer() as server:
        await drain(make_worker(db, server.port))
        return [html_of(message) for _, message in server.inbox.parsed()]


def tokens(markup: str, kind: str) -> list[str]:
    return re.findall(rf"{re.escape(PUBLIC_URL)}/t/{kind}/([A-Za-z0-9_-]+)", markup)


async def flush(client: httpx.AsyncClient) -> None:
    await client._transport.app.state.tracker.sink.flush()  # type: ignore[attr-defined]


async def events(db: Runtime) -> list[Event]:
    async with db.database.sessions() as session:
        return list((await session.scalars(select(Event).order_by(Event.id))).all())


async def test_links_are_counted_and_a_pixel_added_except_ours_and_notrack(
    client: httpx.AsyncClient, db: Runtime
) -> None:
    await fill_subscribers(db, 2)
    utm = {"utm_source": "tidings", "utm_medium": "email"}
    (markup, _) = await sent_html(client, db, utm=utm)
    assert len(tokens(markup, "c")) == 2 and len(tokens(markup, "o")) == 1
    assert 'href="https://private.example.com/"' in markup
    assert f'href="{PUBLIC_URL}/u/' in markup
    assert "shop.example.com" not in markup and "blog.example.com" not in markup
    async with db.database.sessions() as session:
        targets = sorted((await session.scalars(select(Link.url))).all())
    assert targets == [
        "https://blog.example.com/post?utm_source=tidings&utm_medium=email",
        "https://shop.example.com/sale?x=1&y=2&utm_source=tidings&utm_medium=email",
    ]  # one row per link of the campaign, shared by every recipient


async def test_tracking_can_be_switched_off_per_campaign(
    client: httpx.AsyncClient, db: Runtime
) -> None:
    await fill_subscribers(db, 1)
    (markup,) = await sent_html(client, db, track_opens=False, track_clicks=False)
    assert tokens(markup, "c") == [] and tokens(markup, "o") == []
    assert 'href="https://shop.example.com/sale?x=1&amp;y=2"' in markup


async def test_the_pixel_is_a_43_byte_gif_never_cached_and_records_a_human_open(
    client: httpx.AsyncClient, db: Runtime
) -> None:
    await fill_subscribers(db, 1)
    (markup,) = await sent_html(client, db)
    (token,) = tokens(markup, "o")
    response = await client.get(f"/t/o/{token}", headers={"User-Agent": BROWSER})
    assert response.status_code == 200
    assert response.content == PIXEL and len(PIXEL) == 43 and PIXEL.startswith(b"GIF89a")
    assert response.headers["content-type"] == "image/gif"
    assert "no-store" in response.headers["cache-control"]
    await client.get(f"/t/o/{token}", headers={"User-Agent": "Mozilla/5.0"})  # Apple's proxy
    await flush(client)
    opened = await events(db)
    assert [(e.type, e.machine) for e in opened] == [("opened", False), ("opened", True)]
    assert opened[0].campaign_id is not None and opened[0].subscriber_id is not None
    async with db.database.sessions() as session:
        subscriber = await session.get_one(Subscriber, opened[0].subscriber_id)
    assert subscriber.engagement_score == 22.1  # one human open (the machine's counts nothing)
    assert subscriber.last_opened_at is not None


async def test_a_click_redirects_and_a_scanner_within_seconds_of_sending_is_flagged(
    client: httpx.AsyncClient, db: Runtime
) -> None:
    await fill_subscribers(db, 2)
    links = client._transport.app.state.tracker.links  # type: ignore[attr-defined]
    by_delivery = {links.tracked(tokens(m, "o")[0])[0]: m for m in await sent_html(client, db)}
    async with db.database.sessions() as session:  # the second message went out an hour ago
        await session.execute(
            update(Delivery).where(Delivery.id == 2).values(sent_at=utcnow() - timedelta(hours=1))
        )
        await session.commit()
    for delivery_id in (1, 2):
        shop, _ = tokens(by_delivery[delivery_id], "c")
        answer = await client.get(f"/t/c/{shop}", headers={"User-Agent": BROWSER})
        assert answer.status_code == 302
        assert answer.headers["location"] == "https://shop.example.com/sale?x=1&y=2"
    await flush(client)
    clicked = await events(db)
    assert [(e.delivery_id, e.type, e.machine, e.url) for e in clicked] == [
        (1, "clicked", True, "https://shop.example.com/sale?x=1&y=2"),
        (2, "clicked", False, "https://shop.example.com/sale?x=1&y=2"),
    ]


async def test_forged_foreign_and_misplaced_tokens_are_404_and_record_nothing(
    client: httpx.AsyncClient, db: Runtime
) -> None:
    await fill_subscribers(db, 1)
    (markup,) = await sent_html(client, db)
    (click,), (pixel,) = tokens(markup, "c")[:1], tokens(markup, "o")
    flipped = click[:-2] + ("A" if click[-2] != "A" else "B") + click[-1]
    stranger = (await client.get("/health")).status_code  # the app answers other paths
    assert stranger == 200
    for path in (
        f"/t/c/{flipped}",
        f"/t/c/{pixel}",  # the pixel's token is not a link
        f"/t/o/{click}",  # a link's token is not the pixel
        "/t/c/",
        "/t/o/x",
        f"/t/c/{click}x",
        "/t/c/https%3A%2F%2Fevil.example.com",
    ):
        response = await client.get(path)
        assert response.status_code == 404, path
        assert "location" not in response.headers
    await flush(client)
    assert await events(db) == []


async def test_a_well_signed_token_for_a_link_that_does_not_exist_is_404(
    client: httpx.AsyncClient, db: Runtime
) -> None:
    links = client._transport.app.state.tracker.links  # type: ignore[attr-defined]
    response = await client.get(f"/t/c/{links.tracking_token(1, 999_999)}")
    assert response.status_code == 404
