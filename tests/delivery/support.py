"""What the delivery tests share: many decryptable subscribers at once, a real SMTP server
(aiosmtpd) that keeps every message it accepts, and a campaign sent to everybody."""

from __future__ import annotations

import email
import email.policy
import threading
from collections import Counter
from email.message import EmailMessage
from typing import Any

import httpx
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import insert

from tests.factories import post_created
from tests.live_server import free_port
from tidings.audience.models import Subscriber
from tidings.campaigns.scheduler import scheduler_tick
from tidings.db.types import utcnow
from tidings.runtime import Runtime


async def fill_subscribers(db: Runtime, count: int, domain: str = "example.org") -> list[str]:
    """``count`` active subscribers, user0@domain ..., named "Person N"; returns the addresses."""
    addresses = [f"user{n}@{domain}" for n in range(count)]
    now = utcnow()
    rows = [
        {
            "email": address,  # the column type encrypts it
            "email_hash": db.cipher.email_hash(address),
            "email_domain": domain,
            "name": f"Person {n}",
            "attributes": {"n": n},
            "tags": [],
            "status": "active",
            "engagement_score": 0.0,
            "created_at": now,
            "updated_at": now,
        }
        for n, address in enumerate(addresses)
    ]
    async with db.database.sessions() as session:
        for start in range(0, len(rows), 5000):
            await session.execute(insert(Subscriber), rows[start : start + 5000])
        await session.commit()
    return addresses


async def send_campaign(client: httpx.AsyncClient, db: Runtime, **fields: Any) -> tuple[int, int]:
    """Create a campaign to every active subscriber, fire it and write its deliveries (one
    scheduler tick); returns (campaign, run) ids."""
    body = {
        "name": "Weekly",
        "subject": "Hello {{ subscriber.first_name }}",
        "html": "<h1>News for {name}</h1><p>Number {{ subscriber.attributes.n }}</p>",
        "text": "News for {name}\nNumber {{ subscriber.attributes.n }}\n",
        "from_name": "Ünïcode Editor",
        "from_email": "editor@news.example.com",
        **fields,
    }
    campaign = await post_created(client, "/campaigns/", body)
    response = await client.post(f"/campaigns/{campaign['id']}/send")
    assert response.status_code == 202, response.text
    await scheduler_tick(db.database)
    return campaign["id"], response.json()["id"]


class Inbox:
    """An aiosmtpd handler that keeps every accepted message, thread-safely."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []  # (recipient, raw message)
        self._lock = threading.Lock()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or b""
        with self._lock:
            for recipient in envelope.rcpt_tos:
                self.messages.append((recipient, data))
            number = len(self.messages)
        return f"250 2.0.0 Ok: queued as Q{number}"

    def parsed(self) -> list[tuple[str, EmailMessage]]:
        """Every message through the standard library's parser (its modern policy)."""
        with self._lock:
            messages = list(self.messages)
        return [(r, _parse(d)) for r, d in messages]

    def message_ids(self) -> Counter[str]:
        return Counter(str(m["Message-ID"]) for _, m in self.parsed())


class SmtpServer:
    """A real aiosmtpd server on a free port (its own thread and event loop)."""

    def __init__(self) -> None:
        self.inbox = Inbox()
        self.port = free_port()
        self._controller = Controller(
            self.inbox, hostname="127.0.0.1", port=self.port, data_size_limit=0
        )

    def __enter__(self) -> SmtpServer:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()


def _parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message
