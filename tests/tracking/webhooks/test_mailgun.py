"""Mailgun's signed webhooks (HMAC of timestamp + token, each token once) and its events
(shaped after Mailgun's webhook payload samples)."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tidings.tracking.events import BounceKind, EventType
from tidings.tracking.webhooks.base import MemoryReplayGuard, WebhookMalformed, WebhookRejected
from tidings.tracking.webhooks.mailgun import normalize_mailgun, verify_mailgun

KEY = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0"
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
TOKEN = "e0b5477167110d68991efc6b9f89f0a11066af27834600e123"


def guard() -> MemoryReplayGuard:
    return MemoryReplayGuard(clock=lambda: NOW)


def event_data(event: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": f"CPgfbmQMTCKtHW6uIWtuVe-{event}",
        "timestamp": 1714564800.123456,
        "log-level": "info",
        "event": event,
        "recipient": "reader@example.net",
        "recipient-domain": "example.net",
        "tags": ["newsletter"],
        "envelope": {"sender": "bounce@mg.example.com", "transport": "smtp"},
        "message": {
            "headers": {
                "to": "reader@example.net",
                "message-id": "20240501120000.1.ABCDEF@mg.example.com",
                "from": "news@example.com",
                "subject": "Spring news",
            },
            "attachments": [],
            "size": 2048,
        },
        "user-variables": {"tidings_delivery_id": "123"},
        **fields,
    }


def body_of(
    data: dict[str, Any],
    timestamp: str = str(int(NOW.timestamp())),
    token: str = TOKEN,
    key: str = KEY,
) -> bytes:
    digest = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    signature = {"timestamp": timestamp, "token": token, "signature": digest}
    return json.dumps({"signature": signature, "event-data": data}).encode()


async def test_a_request_signed_with_the_key_is_accepted_once() -> None:
    replay = guard()
    body = body_of(event_data("delivered"))
    await verify_mailgun(KEY, body, NOW, replay)
    with pytest.raises(WebhookRejected, match="already used"):
        await verify_mailgun(KEY, body, NOW + timedelta(seconds=10), replay)


async def test_a_tampered_body_is_rejected() -> None:
    body = body_of(event_data("delivered"))
    tampered = json.loads(body)
    tampered["signature"]["token"] = TOKEN[:-1] + "4"
    with pytest.raises(WebhookRejected, match="does not match"):
        await verify_mailgun(KEY, json.dumps(tampered).encode(), NOW, guard())


async def test_another_key_is_rejected_and_does_not_use_up_the_token() -> None:
    replay = guard()
    with pytest.raises(WebhookRejected, match="does not match"):
        await verify_mailgun(KEY, body_of(event_data("delivered"), key="key-other"), NOW, replay)
    await verify_mailgun(KEY, body_of(event_data("delivered")), NOW, replay)


@pytest.mark.parametrize("offset", [timedelta(minutes=-6), timedelta(minutes=6)])
async def test_stale_and_future_timestamps_are_rejected(offset: timedelta) -> None:
    body = body_of(event_data("delivered"), timestamp=str(int((NOW + offset).timestamp())))
    with pytest.raises(WebhookRejected, match="away from now"):
        await verify_mailgun(KEY, body, NOW, guard())


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        json.dumps({"event-data": event_data("delivered")}).encode(),
        json.dumps({"signature": {"timestamp": "1714564800", "token": TOKEN}}).encode(),
        json.dumps({"signature": "abc"}).encode(),
    ],
)
async def test_a_request_without_a_signature_is_rejected(body: bytes) -> None:
    with pytest.raises(WebhookRejected):
        await verify_mailgun(KEY, body, NOW, guard())


async def test_an_unconfigured_key_rejects_everything() -> None:
    with pytest.raises(WebhookRejected, match="not configured"):
        await verify_mailgun("", body_of(event_data("delivered")), NOW, guard())


def one(data: dict[str, Any]) -> Any:
    [result] = normalize_mailgun(body_of(data))
    return result


def test_a_delivery_names_its_delivery_message_and_recipient() -> None:
    status = {"code": 250, "message": "OK", "description": "", "attempt-no": 1, "tls": True}
    event = one(event_data("delivered", **{"delivery-status": status}))
    assert event.type is EventType.delivered
    assert event.source == "mailgun"
    assert event.source_event_id == "CPgfbmQMTCKtHW6uIWtuVe-delivered"
    assert event.delivery_id == 123
    assert event.provider_message_id == "20240501120000.1.ABCDEF@mg.example.com"
    assert event.recipient == "reader@example.net"
    assert event.occurred_at == datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert event.reason == "250 OK"


def failed(severity: str, reason: str, code: int, message: str) -> dict[str, Any]:
    status = {"attempt-no": 1, "code": code, "message": message, "description": "", "tls": True}
    extra = {"log-level": "error", "delivery-status": status}
    return event_data("failed", severity=severity, reason=reason, **extra)


@pytest.mark.parametrize(
    ("data", "type", "kind"),
    [
        (
            failed("permanent", "bounce", 550, "5.1.1 The email account does not exist"),
            EventType.bounced,
            BounceKind.hard,
        ),
        (
            failed("permanent", "bounce", 550, "5.7.1 Message blocked as spam"),
            EventType.bounced,
            BounceKind.policy,
        ),
        (failed("permanent", "espblock", 550, "blocked"), EventType.bounced, BounceKind.policy),
        (failed("permanent", "old", 0, "too old"), EventType.bounced, BounceKind.soft),
        (
            failed("temporary", "generic", 452, "4.2.2 mailbox full"),
            EventType.deferred,
            BounceKind.soft,
        ),
        (
            failed(
                "permanent", "suppress-bounce", 605, "Not delivering to previously bounced address"
            ),
            EventType.rejected,
            None,
        ),
    ],
)
def test_failures_by_severity_and_reason(
    data: dict[str, Any], type: EventType, kind: BounceKind | None
) -> None:
    event = one(data)
    assert (event.type, event.bounce) == (type, kind)
    assert event.reason is not None and data["reason"] in event.reason


def test_opens_and_clicks_with_mailguns_bot_flag() -> None:
    agent = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/124.0"
    person = {"client-name": "Chrome", "client-type": "browser", "user-agent": agent, "bot": ""}
    apple = {"client-name": "unknown", "user-agent": "Mozilla/5.0", "bot": "apple"}
    opened = one(event_data("opened", **{"client-info": person, "ip": "192.0.2.1"}))
    prefetched = one(event_data("opened", **{"client-info": apple}))
    clicked = one(event_data("clicked", url="https://example.com/a", **{"client-info": person}))
    assert (opened.type, opened.machine, opened.user_agent) == (EventType.opened, False, agent)
    assert prefetched.machine
    assert (clicked.type, clicked.url) == (EventType.clicked, "https://example.com/a")


def test_accepted_complained_unsubscribed_and_rejected() -> None:
    assert one(event_data("accepted")).type is EventType.sent
    assert one(event_data("complained")).type is EventType.complained
    assert one(event_data("unsubscribed")).type is EventType.unsubscribed
    rejected = one(
        event_data("rejected", reject={"reason": "Sandbox", "description": "not authorized"})
    )
    assert (rejected.type, rejected.reason) == (EventType.rejected, "Sandbox not authorized")


def test_unmapped_events_are_skipped() -> None:
    assert normalize_mailgun(body_of(event_data("stored"))) == []


@pytest.mark.parametrize(
    "data",
    [
        "event-data",
        {**event_data("delivered"), "timestamp": "noon"},
        {**event_data("delivered"), "timestamp": None},
        {**event_data("delivered"), "message": []},
        {**event_data("opened"), "client-info": "Chrome"},
    ],
)
def test_an_event_that_is_not_the_documented_shape_is_malformed(data: Any) -> None:
    with pytest.raises(WebhookMalformed):
        normalize_mailgun(json.dumps({"event-data": data}).encode())


async def test_a_signature_that_is_not_hex_is_rejected_not_an_error() -> None:
    body = json.loads(body_of(event_data("delivered")))
    body["signature"]["signature"] = "é" * 64
    with pytest.raises(WebhookRejected, match="does not match"):
        await verify_mailgun(KEY, json.dumps(body).encode(), NOW, guard())
