"""Events become webhook deliveries in the transaction that records them: one per event and
enabled endpoint taking its type, never twice, with no subscriber address in the payload."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import select

from tests.factories import add_subscriber
from tests.hooks.conftest import HookReceiver, register
from tests.tracking.test_unsubscribe import (
    ONE_CLICK,
    fill_subscribers,
    send_and_receive,
    topic,
    unsubscribe_path,
)
from tidings.hooks.models import WebhookDelivery
from tidings.runtime import Runtime
from tidings.tracking.events import BounceKind, EventType, InboundEvent
from tidings.tracking.service import FeedbackPolicy, record_events

AT = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
ADDRESS = "reader@example.org"


def inbound(kind: EventType, event_id: str, **fields: Any) -> InboundEvent:
    return InboundEvent(type=kind, occurred_at=AT, source="api", source_event_id=event_id, **fields)


async def deliveries(db: Runtime) -> list[WebhookDelivery]:
    async with db.database.sessions() as session:
        rows = await session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id))
        return list(rows.all())


async def test_events_are_queued_for_enabled_endpoints_taking_their_type_and_replays_add_none(
    client: httpx.AsyncClient, db: Runtime, receiver: HookReceiver, private_ok: Runtime
) -> None:
    bounces = await register(client, receiver, "bounces", ["bounced", "clicked"])
    opens = await register(client, receiver, "opens", ["opened", "bounced"])
    off = await register(client, receiver, "off", ["bounced", "opened"], enabled=False)
    events = [
        inbound(EventType.bounced, "b1", recipient=ADDRESS, bounce=BounceKind.hard),
        inbound(EventType.opened, "o1", recipient=ADDRESS),
        inbound(EventType.delivered, "d1", recipient=ADDRESS),  # nobody takes it
    ]
    async with db.database.sessions() as session:
        written = await record_events(session, events, FeedbackPolicy())
    ids = {e.type: e.id for e in written}
    queued = {(d.endpoint_id, d.event_id, d.event_type) for d in await deliveries(db)}
    assert queued == {
        (bounces["id"], ids["bounced"], "bounced"),
        (opens["id"], ids["bounced"], "bounced"),
        (opens["id"], ids["opened"], "opened"),
    }
    assert off["id"] not in {endpoint for endpoint, _, _ in queued}
    assert all(d.status == "pending" and d.attempts == 0 for d in await deliveries(db))
    async with db.database.sessions() as session:
        assert await record_events(session, events, FeedbackPolicy()) == []
    assert len(await deliveries(db)) == 3


async def test_the_payload_names_ids_and_never_the_address(
    client: httpx.AsyncClient, db: Runtime, receiver: HookReceiver, private_ok: Runtime
) -> None:
    subscriber = await add_subscriber(client, ADDRESS)
    await register(client, receiver, "crm", ["bounced"])
    reason = f"smtp; 550 5.1.1 <{ADDRESS}>: Recipient address rejected"
    event = inbound(
        EventType.bounced, "b1", recipient=ADDRESS, bounce=BounceKind.hard, reason=reason
    )
    async with db.database.sessions() as session:
        [written] = await record_events(session, [event], FeedbackPolicy())
    [delivery] = await deliveries(db)
    assert delivery.payload == {
        "type": "bounced",
        "timestamp": "2026-05-01T12:00:00Z",
        "data": {
            "event_id": written.id,
            "type": "bounced",
            "occurred_at": "2026-05-01T12:00:00Z",
            "campaign_id": None,
            "subscriber_id": subscriber["id"],
            "delivery_id": None,
            "bounce": "hard",
            "reason": "smtp; 550 5.1.1 <{email}>: Recipient address rejected",
            "url": None,
            "machine": False,
        },
    }
    assert "example.org" not in json.dumps(delivery.payload)


async def test_an_unsubscribe_from_a_message_is_queued_with_its_delivery_and_campaign(
    anon_client: httpx.AsyncClient,
    client: httpx.AsyncClient,
    db: Runtime,
    receiver: HookReceiver,
    private_ok: Runtime,
) -> None:
    await fill_subscribers(db, 1)
    news = await topic(client, "News", 1)
    [message] = await send_and_receive(client, db, topic_ids=[news])
    endpoint = await register(client, receiver, "leavers", ["unsubscribed"])
    answer = await anon_client.post(unsubscribe_path(message), data=ONE_CLICK)
    assert answer.status_code == 200
    [delivery] = await deliveries(db)
    data = delivery.payload["data"]
    assert (delivery.endpoint_id, delivery.event_type) == (endpoint["id"], "unsubscribed")
    assert data["event_id"] == delivery.event_id and data["subscriber_id"] == 1
    assert data["delivery_id"] is not None and data["campaign_id"] is not None
    assert "@" not in json.dumps(delivery.payload)
