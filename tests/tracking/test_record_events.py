"""Recording events: what a source sends that no database could store is cleaned, not
refused, and an address that is not one names nobody."""

from __future__ import annotations

import httpx

from tests.delivery.support import fill_subscribers
from tidings.db.types import utcnow
from tidings.runtime import Runtime
from tidings.tracking.events import EventType, InboundEvent
from tidings.tracking.models import Event
from tidings.tracking.service import FeedbackPolicy, record_events


async def test_payloads_no_database_could_store_are_stored_cleaned(
    client: httpx.AsyncClient, db: Runtime
) -> None:
    await fill_subscribers(db, 1)
    now = utcnow()
    raw = {"note": "a\x00b", "score": float("nan"), "list": ["\ud800"]}
    events = [
        InboundEvent(EventType.bounced, now, "x", "e\x001", recipient="not an address",
                     reason="550\x00 gone", raw=raw),
    ]  # fmt: skip
    async with db.database.sessions() as session:
        (written,) = await record_events(session, events, FeedbackPolicy(), now)
        stored = await session.get_one(Event, written.id)
    assert written.reason == stored.reason == "550 gone" and stored.subscriber_id is None
    assert stored.raw == {"note": "ab", "score": None, "list": ["?"]}
    assert stored.source_event_id == "e1"
