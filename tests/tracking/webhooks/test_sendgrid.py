"""SendGrid's signed Event Webhook, with a P-256 key pair made in the test, and its events
(shaped after SendGrid's Event Webhook reference)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tidings.tracking.events import BounceKind, EventType
from tidings.tracking.webhooks.base import WebhookMalformed, WebhookRejected
from tidings.tracking.webhooks.sendgrid import normalize_sendgrid, verify_sendgrid

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
BODY = b'[{"email":"reader@example.net","event":"delivered","timestamp":1714564800}]\r\n'


def public_key_text(key: ec.EllipticCurvePrivateKey) -> str:
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


def signature_of(key: ec.EllipticCurvePrivateKey, timestamp: str, body: bytes) -> str:
    der = key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return base64.b64encode(der).decode()


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def stamp(moment: datetime) -> str:
    return str(int(moment.timestamp()))


def test_a_request_signed_by_sendgrid_is_accepted(key: ec.EllipticCurvePrivateKey) -> None:
    timestamp = stamp(NOW)
    verify_sendgrid(public_key_text(key), signature_of(key, timestamp, BODY), timestamp, BODY, NOW)


def test_a_pem_verification_key_is_accepted_too(key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    timestamp = stamp(NOW)
    verify_sendgrid(pem.decode(), signature_of(key, timestamp, BODY), timestamp, BODY, NOW)


def test_a_tampered_body_is_rejected(key: ec.EllipticCurvePrivateKey) -> None:
    timestamp = stamp(NOW)
    signature = signature_of(key, timestamp, BODY)
    with pytest.raises(WebhookRejected, match="does not match"):
        verify_sendgrid(public_key_text(key), signature, timestamp, BODY.replace(b"de", b"bo"), NOW)


def test_a_changed_timestamp_breaks_the_signature(key: ec.EllipticCurvePrivateKey) -> None:
    signature = signature_of(key, stamp(NOW), BODY)
    later = stamp(NOW + timedelta(seconds=1))
    with pytest.raises(WebhookRejected, match="does not match"):
        verify_sendgrid(public_key_text(key), signature, later, BODY, NOW)


def test_another_key_is_rejected(key: ec.EllipticCurvePrivateKey) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    timestamp = stamp(NOW)
    with pytest.raises(WebhookRejected, match="does not match"):
        verify_sendgrid(
            public_key_text(key), signature_of(other, timestamp, BODY), timestamp, BODY, NOW
        )


@pytest.mark.parametrize("offset", [timedelta(minutes=-6), timedelta(minutes=6)])
def test_stale_and_future_timestamps_are_rejected(
    key: ec.EllipticCurvePrivateKey, offset: timedelta
) -> None:
    timestamp = stamp(NOW + offset)
    signature = signature_of(key, timestamp, BODY)
    with pytest.raises(WebhookRejected, match="away from now"):
        verify_sendgrid(public_key_text(key), signature, timestamp, BODY, NOW)


@pytest.mark.parametrize(
    ("signature", "timestamp", "reason"),
    [
        (None, "1714564800", "missing X-Twilio-Email-Event-Webhook-Signature"),
        ("MEUCIQ==", None, "missing X-Twilio-Email-Event-Webhook-Timestamp"),
        ("MEUCIQ==", "soon", "not a Unix time"),
        ("***", "1714564800", "does not match"),
    ],
)
def test_missing_or_garbled_headers_are_rejected(
    key: ec.EllipticCurvePrivateKey, signature: str | None, timestamp: str | None, reason: str
) -> None:
    with pytest.raises(WebhookRejected, match=reason):
        verify_sendgrid(public_key_text(key), signature, timestamp, BODY, NOW)


def test_an_unconfigured_key_rejects_everything() -> None:
    with pytest.raises(WebhookRejected, match="not configured"):
        verify_sendgrid("", "x", stamp(NOW), BODY, NOW)


def test_a_key_that_is_not_p256_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="P-256"):
        other = ec.generate_private_key(ec.SECP384R1())
        verify_sendgrid(public_key_text(other), "x", stamp(NOW), BODY, NOW)


def event(name: str, **fields: Any) -> dict[str, Any]:
    return {
        "email": "reader@example.net",
        "timestamp": 1714564800,
        "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>",
        "event": name,
        "category": ["newsletter"],
        "sg_event_id": f"sg-{name}-1",
        "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
        "tidings_delivery_id": "123",
        **fields,
    }


def one(payload: dict[str, Any]) -> Any:
    [result] = normalize_sendgrid(json.dumps([payload]).encode())
    return result


def test_every_event_names_its_delivery_message_and_recipient() -> None:
    result = one(event("delivered", response="250 OK"))
    assert result.type is EventType.delivered
    assert result.source == "sendgrid"
    assert result.source_event_id == "sg-delivered-1"
    assert result.delivery_id == 123
    assert result.provider_message_id == "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0"
    assert result.recipient == "reader@example.net"
    assert result.occurred_at == datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert result.reason == "250 OK"


def test_processed_dropped_and_deferred() -> None:
    assert one(event("processed")).type is EventType.sent
    dropped = one(event("dropped", reason="Bounced Address"))
    assert (dropped.type, dropped.reason) == (EventType.rejected, "Bounced Address")
    deferred = one(event("deferred", response="400 try again later", attempt="5"))
    assert (deferred.type, deferred.bounce) == (EventType.deferred, BounceKind.soft)
    assert deferred.reason == "400 try again later (attempt 5)"


def test_a_bounce_is_hard_and_a_block_is_policy() -> None:
    bounce = one(event("bounce", type="bounce", status="5.1.1", reason="550 5.1.1 user unknown"))
    blocked = one(event("bounce", type="blocked", status="4.0.0", reason="421 rate limited"))
    policy = one(event("bounce", type="bounce", status="5.7.1", reason="550 5.7.1 spam"))
    assert (bounce.type, bounce.bounce) == (EventType.bounced, BounceKind.hard)
    assert bounce.reason == "5.1.1 550 5.1.1 user unknown"
    assert blocked.bounce is BounceKind.policy
    assert policy.bounce is BounceKind.policy


def test_opens_clicks_and_machine_opens() -> None:
    agent = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15"
    person = one(event("open", useragent=agent, ip="192.0.2.1", sg_machine_open=False))
    machine = one(event("open", useragent="Mozilla/5.0", sg_machine_open=True))
    click = one(event("click", useragent=agent, url="https://example.com/a", url_offset={}))
    assert (person.type, person.machine, person.user_agent) == (EventType.opened, False, agent)
    assert machine.machine
    assert (click.type, click.url) == (EventType.clicked, "https://example.com/a")


def test_spam_reports_and_unsubscribes() -> None:
    assert one(event("spamreport")).type is EventType.complained
    assert one(event("unsubscribe")).type is EventType.unsubscribed
    group = one(event("group_unsubscribe", asm_group_id=42))
    assert (group.type, group.reason) == (EventType.unsubscribed, "unsubscribe group 42")


def test_unmapped_events_are_skipped_and_a_batch_keeps_its_order() -> None:
    body = json.dumps(
        [event("group_resubscribe"), event("open"), event("something_new"), event("click")]
    ).encode()
    assert [e.type for e in normalize_sendgrid(body)] == [EventType.opened, EventType.clicked]


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"event": "open"}',
        b'["open"]',
        json.dumps([event("open", timestamp="noon")]).encode(),
        json.dumps([{"event": "open", "email": "a@example.net"}]).encode(),
    ],
)
def test_a_batch_that_is_not_the_documented_shape_is_malformed(body: bytes) -> None:
    with pytest.raises(WebhookMalformed):
        normalize_sendgrid(body)
