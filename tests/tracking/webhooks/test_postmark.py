"""Postmark's credentials in the webhook URL, and its records (shaped after Postmark's webhook
documentation samples)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from tidings.tracking.events import BounceKind, EventType
from tidings.tracking.webhooks.base import WebhookMalformed, WebhookRejected
from tidings.tracking.webhooks.postmark import (
    normalize_postmark,
    verify_basic_auth,
    verify_path_secret,
)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_the_configured_credentials_are_accepted() -> None:
    verify_basic_auth("postmark", "s3cret:with:colons", basic("postmark", "s3cret:with:colons"))
    verify_basic_auth("postmark", "pw", "basic " + basic("postmark", "pw").split()[1])


@pytest.mark.parametrize(
    ("authorization", "reason"),
    [
        (None, "missing Authorization"),
        ("", "missing Authorization"),
        ("Bearer abc", "must be Basic"),
        ("Basic !!!", "not base64"),
        (basic("postmark", "wrong"), "wrong Postmark webhook credentials"),
        (basic("other", "pw"), "wrong Postmark webhook credentials"),
        ("Basic " + base64.b64encode(b"postmarkpw").decode(), "wrong Postmark"),
    ],
)
def test_other_credentials_are_rejected(authorization: str | None, reason: str) -> None:
    with pytest.raises(WebhookRejected, match=reason) as raised:
        verify_basic_auth("postmark", "pw", authorization)
    assert "pw" not in raised.value.reason.replace("postmark", "")


def test_unconfigured_credentials_reject_everything() -> None:
    with pytest.raises(WebhookRejected, match="not configured"):
        verify_basic_auth("", "", basic("", ""))


def test_the_path_secret_must_match() -> None:
    verify_path_secret("Zq3-path-secret", "Zq3-path-secret")
    with pytest.raises(WebhookRejected, match="wrong"):
        verify_path_secret("Zq3-path-secret", "Zq3-path-secreT")
    with pytest.raises(WebhookRejected, match="not configured"):
        verify_path_secret("", "")


METADATA = {"tidings_delivery_id": "123", "campaign": "spring"}
MESSAGE_ID = "883953f4-6105-42a2-a16a-77a8eac79483"


def one(record: dict[str, Any]) -> Any:
    [result] = normalize_postmark(json.dumps(record).encode())
    return result


def bounce(type: str, code: int, details: str) -> dict[str, Any]:
    return {
        "RecordType": "Bounce",
        "MessageStream": "broadcast",
        "ID": 4323372036854775807,
        "Type": type,
        "TypeCode": code,
        "Name": "Hard bounce",
        "Tag": "newsletter",
        "MessageID": MESSAGE_ID,
        "Metadata": METADATA,
        "ServerID": 23,
        "Description": "The server was unable to deliver your message.",
        "Details": details,
        "Email": "reader@example.net",
        "From": "news@example.com",
        "BouncedAt": "2024-05-01T08:00:00.1234567-04:00",
        "DumpAvailable": True,
        "Inactive": True,
        "CanActivate": True,
        "Subject": "Spring news",
    }


def test_a_hard_bounce_names_its_delivery_and_keeps_postmarks_id() -> None:
    event = one(bounce("HardBounce", 1, "smtp;550 5.1.1 The email account does not exist"))
    assert (event.type, event.bounce) == (EventType.bounced, BounceKind.hard)
    assert event.source == "postmark"
    assert event.source_event_id == "4323372036854775807"
    assert event.delivery_id == 123
    assert event.provider_message_id == MESSAGE_ID
    assert event.recipient == "reader@example.net"
    assert event.occurred_at == datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert event.reason == "HardBounce (1): smtp;550 5.1.1 The email account does not exist"


@pytest.mark.parametrize(
    ("type", "code", "details", "kind"),
    [
        ("HardBounce", 1, "smtp;550 5.7.1 Message rejected as spam", BounceKind.policy),
        ("SoftBounce", 4096, "smtp;452 4.2.2 mailbox full", BounceKind.soft),
        ("Transient", 2, "delayed", BounceKind.soft),
        ("SpamNotification", 512, "message looked like spam", BounceKind.policy),
        ("Blocked", 100006, "blocked by ISP", BounceKind.policy),
        ("DMARCPolicy", 100009, "dmarc", BounceKind.policy),
        ("BadEmailAddress", 100000, "invalid address", BounceKind.hard),
    ],
)
def test_bounce_types_map_to_kinds(type: str, code: int, details: str, kind: BounceKind) -> None:
    assert one(bounce(type, code, details)).bounce is kind


def test_a_bounce_without_type_is_read_by_its_code() -> None:
    record = bounce("SoftBounce", 4096, "x")
    del record["Type"]
    assert one(record).bounce is BounceKind.soft


def test_non_failure_bounce_types_are_skipped_and_others_mapped() -> None:
    assert normalize_postmark(json.dumps(bounce("AutoResponder", 64, "away")).encode()) == []
    assert one(bounce("Unsubscribe", 16, "remove me")).type is EventType.unsubscribed
    assert one(bounce("TemplateRenderingFailed", 100010, "x")).type is EventType.failed


def test_a_spam_complaint() -> None:
    record = {**bounce("SpamComplaint", 100001, "Test spam complaint details")}
    record["RecordType"] = "SpamComplaint"
    event = one(record)
    assert (event.type, event.source_event_id) == (EventType.complained, "4323372036854775807")


def test_a_delivery() -> None:
    event = one(
        {
            "RecordType": "Delivery",
            "ServerID": 23,
            "MessageStream": "broadcast",
            "MessageID": MESSAGE_ID,
            "Recipient": "reader@example.net",
            "Tag": "newsletter",
            "DeliveredAt": "2024-05-01T12:00:00Z",
            "Details": "smtp;250 2.0.0 OK",
            "Metadata": METADATA,
        }
    )
    assert (event.type, event.reason, event.delivery_id) == (
        EventType.delivered,
        "smtp;250 2.0.0 OK",
        123,
    )
    assert event.source_event_id == f"delivery:{MESSAGE_ID}:reader@example.net:2024-05-01T12:00:00Z"


def engagement(record_type: str, agent: str, **extra: Any) -> dict[str, Any]:
    return {
        "RecordType": record_type,
        "MessageStream": "broadcast",
        "Metadata": METADATA,
        "FirstOpen": True,
        "Client": {"Name": "Chrome 124", "Company": "Google", "Family": "Chrome"},
        "OS": {"Name": "OS X 10.15", "Company": "Apple Computer, Inc.", "Family": "OS X"},
        "Platform": "Desktop",
        "UserAgent": agent,
        "ReadSeconds": 5,
        "Geo": {"CountryISOCode": "RS", "Country": "Serbia", "City": "Novi Sad"},
        "MessageID": MESSAGE_ID,
        "ReceivedAt": "2024-05-01T14:00:00Z",
        "Tag": "newsletter",
        "Recipient": "reader@example.net",
        **extra,
    }


def test_opens_and_clicks_with_machine_detection_from_the_user_agent() -> None:
    agent = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) Chrome/124.0"
    person = one(engagement("Open", agent))
    proxy = one(engagement("Open", "Mozilla/5.0"))
    click = one(
        engagement("Click", agent, ClickLocation="HTML", OriginalLink="https://example.com/a")
    )
    assert (person.type, person.machine, person.user_agent) == (EventType.opened, False, agent)
    assert proxy.machine
    assert (click.type, click.url) == (EventType.clicked, "https://example.com/a")
    assert person.source_event_id != click.source_event_id


def subscription_change(suppress: bool, reason: str | None) -> dict[str, Any]:
    return {
        "RecordType": "SubscriptionChange",
        "MessageID": MESSAGE_ID,
        "ServerID": 23,
        "MessageStream": "broadcast",
        "ChangedAt": "2024-05-02T09:00:00Z",
        "Recipient": "reader@example.net",
        "Origin": "Recipient",
        "SuppressSending": suppress,
        "SuppressionReason": reason,
        "Tag": "newsletter",
        "Metadata": METADATA,
    }


def test_a_manual_suppression_is_an_unsubscribe() -> None:
    event = one(subscription_change(True, "ManualSuppression"))
    assert (event.type, event.reason) == (EventType.unsubscribed, "ManualSuppression by Recipient")


def test_reactivations_and_bounce_suppressions_are_not_unsubscribes() -> None:
    for record in (subscription_change(False, None), subscription_change(True, "HardBounce")):
        assert normalize_postmark(json.dumps(record).encode()) == []


def test_unknown_record_types_are_skipped() -> None:
    assert normalize_postmark(b'{"RecordType": "Inbound", "MessageID": "x"}') == []


@pytest.mark.parametrize(
    "body",
    [
        b"<xml/>",
        b'"Bounce"',
        json.dumps({**bounce("HardBounce", 1, "x"), "BouncedAt": "yesterday"}).encode(),
        json.dumps({**bounce("HardBounce", 1, "x"), "ID": None}).encode(),
        json.dumps({**bounce("HardBounce", 1, "x"), "Metadata": ["x"]}).encode(),
        json.dumps({**bounce("HardBounce", 1, "x"), "TypeCode": "one"}).encode(),
    ],
)
def test_a_record_that_is_not_the_documented_shape_is_malformed(body: bytes) -> None:
    with pytest.raises(WebhookMalformed):
        normalize_postmark(body)
