"""Mail that comes back, through the SMTP receiver `tidings serve` starts: reports to a
delivery's VERP return path suppress as they should; a report no signed token vouches for
changes nothing; a feedback-loop complaint is vouched for by the unsubscribe link in the
returned headers; a mailto: unsubscribe unsubscribes."""

from __future__ import annotations

import asyncio
import dataclasses
import smtplib
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import select

from tests.delivery.support import SmtpServer, fill_subscribers, send_campaign
from tests.delivery.test_worker import drain, make_worker
from tests.live_server import free_port
from tests.tracking.test_dsn import ARF_COMPLAINT, POSTFIX_HARD_BOUNCE
from tidings.audience.models import Subscriber, Suppression
from tidings.db.types import utcnow
from tidings.delivery.compose import Composer, SenderIdentity
from tidings.delivery.links import MailLinks
from tidings.delivery.outbox import claim_batch
from tidings.runtime import Runtime
from tidings.tracking.models import Event
from tidings.tracking.runtime import build_tracker, start_inbound_mail

BOUNCES = "bounces@bounces.tidings.example"
UNSUBSCRIBE = "unsubscribe@bounces.tidings.example"


@pytest.fixture
async def receiver(db: Runtime) -> AsyncIterator[tuple[int, MailLinks]]:
    settings = db.settings.model_copy(
        update={
            "inbound_smtp_port": free_port(),
            "bounce_address": BOUNCES,
            "list_unsubscribe_mailto": UNSUBSCRIBE,
        }
    )
    runtime = dataclasses.replace(db, settings=settings)
    tracker = build_tracker(runtime)
    server = await start_inbound_mail(runtime, tracker)
    assert server is not None
    yield settings.inbound_smtp_port, tracker.links
    server.close()
    await server.wait_closed()
    await tracker.sink.close()


async def mail(port: int, to: str, data: bytes) -> None:
    def send() -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.sendmail("", [to], data)

    await asyncio.to_thread(send)


def about(sample: bytes, delivery_id: int, address: str) -> bytes:
    """A sample report rewritten to be about our delivery to ``address``."""
    return (
        sample.replace(b"1234.delivery@", f"{delivery_id}.delivery@".encode())
        .replace(b"555.delivery@", f"{delivery_id}.delivery@".encode())
        .replace(b"Ann@Example.org", address.encode())
        .replace(b"Erin@example.com", address.encode())
    )


async def outcome(db: Runtime) -> tuple[list[str], str, list[str]]:
    async with db.database.sessions() as session:
        kinds = (await session.scalars(select(Event.type).order_by(Event.id))).all()
        status = (await session.get_one(Subscriber, 1)).status
        reasons = (await session.scalars(select(Suppression.reason))).all()
        return list(kinds), status, list(reasons)


async def sent(client: httpx.AsyncClient, db: Runtime) -> None:
    await fill_subscribers(db, 1)
    await send_campaign(client, db)
    with SmtpServer() as server:
        await drain(make_worker(db, server.port))


async def test_the_return_path_of_each_message_names_its_delivery(
    client: httpx.AsyncClient, db: Runtime
) -> None:
    await fill_subscribers(db, 2)
    await send_campaign(client, db)
    links = MailLinks(db.cipher.worker_args()[1], "https://mail.example.com")
    composer = Composer(SenderIdentity(links, "n <n@example.com>", bounce_address=BOUNCES))
    async with db.database.sessions() as session:
        claimed = await claim_batch(session, 10, 60, utcnow())
        batch = await composer.prepare(session, claimed, utcnow())
    senders = {m.delivery_id: m.sender for m in batch.messages}
    assert len(senders) == 2
    for delivery_id, sender in senders.items():
        assert sender.startswith("bounces+") and sender.endswith("@bounces.tidings.example")
        assert links.delivery_of_return_path(sender) == delivery_id


async def test_a_bounce_to_the_verp_address_suppresses_and_an_unvouched_one_does_nothing(
    client: httpx.AsyncClient, db: Runtime, receiver: tuple[int, MailLinks]
) -> None:
    port, links = receiver
    await sent(client, db)
    report = about(POSTFIX_HARD_BOUNCE, 1, "user0@example.org")
    await mail(port, BOUNCES, report)  # no token: anyone could have sent it
    assert await outcome(db) == ([], "active", [])
    await mail(port, links.return_path(BOUNCES, 1), report)
    assert await outcome(db) == (["bounced"], "bounced", ["bounced"])


async def test_a_complaint_is_vouched_for_by_the_link_in_the_returned_message(
    client: httpx.AsyncClient, db: Runtime, receiver: tuple[int, MailLinks]
) -> None:
    port, links = receiver
    await sent(client, db)
    header = f"List-Unsubscribe: <https://mail.example.com/u/{links.token(1)}>\r\n".encode()
    complaint = about(ARF_COMPLAINT, 1, "user0@example.org").replace(
        b"Subject: This week\r\nMessage-ID", b"Subject: This week\r\n" + header + b"Message-ID"
    )
    await mail(port, "fbl@bounces.tidings.example", complaint)
    assert await outcome(db) == (["complained"], "complained", ["complained"])


async def test_a_mailto_unsubscribe_unsubscribes(
    client: httpx.AsyncClient, db: Runtime, receiver: tuple[int, MailLinks]
) -> None:
    port, links = receiver
    await sent(client, db)
    request = (
        f"From: user0@example.org\r\nTo: {UNSUBSCRIBE}\r\n"
        f"Subject: unsubscribe {links.token(1)}\r\n\r\n"
    ).encode()
    await mail(port, UNSUBSCRIBE, request)
    assert await outcome(db) == (["unsubscribed"], "unsubscribed", [])
