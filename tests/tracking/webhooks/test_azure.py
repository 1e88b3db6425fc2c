"""Azure Communication Services Email events through Event Grid: the delivery-header key, both
handshakes, and both schemas (shaped after the ACS email event documentation)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from tidings.tracking.events import BounceKind, EventType
from tidings.tracking.webhooks.azure import (
    cloudevents_handshake,
    normalize_azure,
    validation_response,
    verify_azure_key,
)
from tidings.tracking.webhooks.base import WebhookMalformed, WebhookRejected

OPERATION_ID = "5b6a3f0e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"
TOPIC = (
    "/subscriptions/0000/resourceGroups/mail/providers/microsoft.communication/"
    "communicationservices/tidings"
)


def test_the_configured_key_is_accepted_and_anything_else_rejected() -> None:
    verify_azure_key("k3y-from-delivery-property", "k3y-from-delivery-property")
    for given, reason in ((None, "missing X-Tidings-Webhook-Key"), ("nope", "wrong")):
        with pytest.raises(WebhookRejected, match=reason) as raised:
            verify_azure_key("k3y-from-delivery-property", given)
        assert "k3y" not in raised.value.reason
    with pytest.raises(WebhookRejected, match="not configured"):
        verify_azure_key("", "")


def test_an_event_grid_validation_is_answered_with_its_code() -> None:
    body = [
        {
            "id": "2d1781af-3a4c-4d7c-bd0c-e34b19da4e66",
            "topic": TOPIC,
            "subject": "",
            "data": {
                "validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6",
                "validationUrl": "https://rp-eastus2.eventgrid.azure.net:553/eventsubscriptions/x",
            },
            "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
            "eventTime": "2024-05-01T12:00:00Z",
            "metadataVersion": "1",
            "dataVersion": "1",
        }
    ]
    answer = validation_response(json.dumps(body).encode())
    assert answer == {"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}


def test_an_ordinary_delivery_is_not_a_validation() -> None:
    assert validation_response(json.dumps([delivery_report("Delivered")]).encode()) is None
    with pytest.raises(WebhookMalformed):
        validation_response(b"garbage")


def test_the_cloudevents_handshake_allows_event_grid_only() -> None:
    assert cloudevents_handshake("eventgrid.azure.net") == {
        "WebHook-Allowed-Origin": "eventgrid.azure.net"
    }
    assert cloudevents_handshake("evil.example") is None
    assert cloudevents_handshake(None) is None


def delivery_report(status: str, message: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "sender": "news@example.com",
        "recipient": "reader@example.net",
        "internetMessageId": "<abc@example.com>",
        "messageId": OPERATION_ID,
        "status": status,
        "deliveryAttemptTimeStamp": "2024-05-01T12:00:01.2855749Z",
    }
    if message is not None:
        data["deliveryStatusDetails"] = {"statusMessage": message}
    return {
        "id": f"evt-{status}",
        "topic": TOPIC,
        "subject": f"sender/news@example.com/message/{OPERATION_ID}",
        "data": data,
        "eventType": "Microsoft.Communication.EmailDeliveryReportReceived",
        "dataVersion": "1.0",
        "metadataVersion": "1",
        "eventTime": "2024-05-01T12:00:02Z",
    }


def as_cloud_event(event: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": event["id"],
        "source": TOPIC,
        "subject": event["subject"],
        "type": event["eventType"],
        "time": event["eventTime"],
        "data": event["data"],
        "specversion": "1.0",
    }


def one(event: dict[str, Any]) -> Any:
    [result] = normalize_azure(json.dumps([event]).encode())
    return result


def test_a_delivered_report_names_the_operation_as_provider_message_id() -> None:
    event = one(delivery_report("Delivered"))
    assert event.type is EventType.delivered
    assert event.source == "azure"
    assert event.source_event_id == "evt-Delivered"
    assert event.delivery_id is None
    assert event.provider_message_id == OPERATION_ID
    assert event.recipient == "reader@example.net"
    assert event.occurred_at == datetime(2024, 5, 1, 12, 0, 1, 285574, tzinfo=UTC)


@pytest.mark.parametrize(
    ("status", "message", "type", "kind"),
    [
        ("Bounced", "550 5.1.1 Recipient address rejected", EventType.bounced, BounceKind.hard),
        ("Bounced", "550 5.7.1 Blocked by policy", EventType.bounced, BounceKind.policy),
        ("Quarantined", "Quarantined by the recipient", EventType.bounced, BounceKind.policy),
        ("FilteredSpam", "Identified as spam", EventType.bounced, BounceKind.policy),
        ("Suppressed", "The address is on the suppression list", EventType.rejected, None),
        ("Failed", "Internal error", EventType.failed, None),
    ],
)
def test_delivery_statuses_map_to_events(
    status: str, message: str, type: EventType, kind: BounceKind | None
) -> None:
    event = one(delivery_report(status, message))
    assert (event.type, event.bounce) == (type, kind)
    assert event.reason == f"{status} {message}"


def test_an_expanded_report_is_skipped() -> None:
    assert normalize_azure(json.dumps([delivery_report("Expanded")]).encode()) == []


def engagement(kind: str, context: str, agent: str) -> dict[str, Any]:
    return {
        "id": f"evt-{kind}",
        "topic": TOPIC,
        "subject": f"sender/news@example.com/message/{OPERATION_ID}",
        "data": {
            "sender": "news@example.com",
            "recipient": "reader@example.net",
            "messageId": OPERATION_ID,
            "userActionTimeStamp": "2024-05-01T14:00:00.1303595+00:00",
            "engagementContext": context,
            "userAgent": agent,
            "engagementType": kind,
        },
        "eventType": "Microsoft.Communication.EmailEngagementTrackingReportReceived",
        "dataVersion": "1.0",
        "metadataVersion": "1",
        "eventTime": "2024-05-01T14:00:00.1303612Z",
    }


def test_views_and_clicks_carry_the_user_agent_and_the_link() -> None:
    agent = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Edge/124.0"
    view = one(engagement("view", "", agent))
    click = one(engagement("Click", "https://example.com/a", agent))
    assert (view.type, view.url, view.user_agent, view.machine) == (
        EventType.opened,
        None,
        agent,
        False,
    )
    assert (click.type, click.url) == (EventType.clicked, "https://example.com/a")
    assert view.occurred_at == datetime(2024, 5, 1, 14, 0, 0, 130359, tzinfo=UTC)


def test_cloudevents_single_object_and_batch_are_read() -> None:
    cloud = as_cloud_event(delivery_report("Delivered"))
    [single] = normalize_azure(json.dumps(cloud).encode())
    batch = normalize_azure(
        json.dumps([cloud, as_cloud_event(engagement("view", "", ""))]).encode()
    )
    assert single.source_event_id == "evt-Delivered"
    assert [e.type for e in batch] == [EventType.delivered, EventType.opened]


def test_other_event_types_are_skipped() -> None:
    other = {**delivery_report("Delivered"), "eventType": "Microsoft.Communication.SMSReceived"}
    assert normalize_azure(json.dumps([other]).encode()) == []


@pytest.mark.parametrize(
    "body",
    [
        b"nope",
        b"42",
        json.dumps([{**delivery_report("Delivered"), "id": None}]).encode(),
        json.dumps([{**delivery_report("Delivered"), "data": "x"}]).encode(),
        json.dumps(
            [{**delivery_report("Delivered"), "eventTime": "soon", "data": {"status": "Delivered"}}]
        ).encode(),
    ],
)
def test_a_delivery_that_is_not_the_documented_shape_is_malformed(body: bytes) -> None:
    with pytest.raises(WebhookMalformed):
        normalize_azure(body)
