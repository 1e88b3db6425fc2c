"""SES records (event publishing and notifications, shaped after AWS's published examples) read
into events through a verified SNS message."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from tidings.tracking.events import BounceKind, EventType
from tidings.tracking.webhooks.base import WebhookMalformed
from tidings.tracking.webhooks.sns import SnsMessage, normalize_ses

SNS_ID = "c5a1f0e6-2f2b-5d6a-9d1c-6b8a1c0f4e11"


def mail(**extra: Any) -> dict[str, Any]:
    return {
        "timestamp": "2024-05-01T12:00:00.000Z",
        "source": "News <news@example.com>",
        "sourceArn": "arn:aws:ses:us-east-1:123456789012:identity/example.com",
        "sendingAccountId": "123456789012",
        "messageId": "0100018f2a1b2c3d-aaaa-bbbb-cccc-000000000000-000000",
        "destination": ["reader@example.net"],
        "headersTruncated": False,
        "tags": {
            "ses:configuration-set": ["tidings"],
            "ses:source-ip": ["192.0.2.10"],
            "delivery_id": ["123"],
        },
        **extra,
    }


def sns(record: dict[str, Any] | str, type: str = "Notification") -> SnsMessage:
    return SnsMessage(
        type=type,
        message_id=SNS_ID,
        topic_arn="arn:aws:sns:us-east-1:123456789012:ses-events",
        message=record if isinstance(record, str) else json.dumps(record),
        timestamp="2024-05-01T12:00:05.000Z",
        signature_version="2",
        signature="x",
        signing_cert_url="https://sns.us-east-1.amazonaws.com/x.pem",
    )


def test_a_permanent_bounce_is_hard_with_its_status_and_diagnostic() -> None:
    record = {
        "eventType": "Bounce",
        "bounce": {
            "feedbackId": "0100018f-feedback",
            "bounceType": "Permanent",
            "bounceSubType": "General",
            "bouncedRecipients": [
                {
                    "emailAddress": "reader@example.net",
                    "action": "failed",
                    "status": "5.1.1",
                    "diagnosticCode": "smtp; 550 5.1.1 user unknown",
                }
            ],
            "timestamp": "2024-05-01T12:00:02.000Z",
            "reportingMTA": "dsn; a8-30.smtp-out.amazonses.com",
        },
        "mail": mail(),
    }
    [event] = normalize_ses(sns(record))
    assert event.type is EventType.bounced
    assert event.bounce is BounceKind.hard
    assert event.source == "ses"
    assert event.source_event_id == SNS_ID
    assert event.delivery_id == 123
    assert event.provider_message_id == "0100018f2a1b2c3d-aaaa-bbbb-cccc-000000000000-000000"
    assert event.recipient == "reader@example.net"
    assert event.occurred_at == datetime(2024, 5, 1, 12, 0, 2, tzinfo=UTC)
    assert event.reason == "Permanent/General 5.1.1 smtp; 550 5.1.1 user unknown"
    assert event.raw == record


def test_a_permanent_bounce_for_policy_is_policy_and_each_recipient_gets_an_event() -> None:
    record = {
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": "Permanent",
            "bounceSubType": "General",
            "bouncedRecipients": [
                {"emailAddress": "a@example.net", "status": "5.7.1", "diagnosticCode": "blocked"},
                {"emailAddress": "b@example.net", "status": "5.1.1"},
            ],
            "timestamp": "2024-05-01T12:00:02.000Z",
        },
        "mail": mail(destination=["a@example.net", "b@example.net"]),
    }
    first, second = normalize_ses(sns(record))
    assert (first.bounce, second.bounce) == (BounceKind.policy, BounceKind.hard)
    assert first.source_event_id == f"{SNS_ID}:a@example.net"
    assert second.source_event_id == f"{SNS_ID}:b@example.net"


def test_a_transient_bounce_is_soft() -> None:
    record = {
        "eventType": "Bounce",
        "bounce": {
            "bounceType": "Transient",
            "bounceSubType": "MailboxFull",
            "bouncedRecipients": [{"emailAddress": "reader@example.net", "status": "5.2.2"}],
            "timestamp": "2024-05-01T12:00:02.000Z",
        },
        "mail": mail(),
    }
    [event] = normalize_ses(sns(record))
    assert event.bounce is BounceKind.soft


def test_a_complaint_carries_its_feedback_type() -> None:
    record = {
        "eventType": "Complaint",
        "complaint": {
            "feedbackId": "0100018f-complaint",
            "complaintSubType": None,
            "complainedRecipients": [{"emailAddress": "reader@example.net"}],
            "timestamp": "2024-05-01T13:00:00.000Z",
            "userAgent": "Mozilla/5.0",
            "complaintFeedbackType": "abuse",
            "arrivalDate": "2024-05-01T12:59:00.000Z",
        },
        "mail": mail(),
    }
    [event] = normalize_ses(sns(record))
    assert event.type is EventType.complained
    assert event.reason == "abuse"
    assert event.occurred_at == datetime(2024, 5, 1, 13, tzinfo=UTC)


def test_a_delivery_has_the_smtp_response() -> None:
    record = {
        "eventType": "Delivery",
        "mail": mail(),
        "delivery": {
            "timestamp": "2024-05-01T12:00:01.500Z",
            "processingTimeMillis": 1500,
            "recipients": ["reader@example.net"],
            "smtpResponse": "250 2.6.0 Message received",
            "reportingMTA": "a8-70.smtp-out.amazonses.com",
        },
    }
    [event] = normalize_ses(sns(record))
    assert event.type is EventType.delivered
    assert event.reason == "250 2.6.0 Message received"
    assert event.occurred_at == datetime(2024, 5, 1, 12, 0, 1, 500000, tzinfo=UTC)


def test_send_reject_and_rendering_failure_name_every_destination() -> None:
    send = normalize_ses(sns({"eventType": "Send", "mail": mail(), "send": {}}))
    reject = normalize_ses(
        sns({"eventType": "Reject", "mail": mail(), "reject": {"reason": "Bad content"}})
    )
    failure = normalize_ses(
        sns(
            {
                "eventType": "Rendering Failure",
                "mail": mail(),
                "failure": {"errorMessage": "Attribute 'name' is not present", "templateName": "w"},
            }
        )
    )
    assert [e.type for e in send + reject + failure] == [
        EventType.sent,
        EventType.rejected,
        EventType.failed,
    ]
    assert reject[0].reason == "Bad content"
    assert failure[0].reason == "w Attribute 'name' is not present"
    assert send[0].occurred_at == datetime(2024, 5, 1, 12, tzinfo=UTC)


def test_a_delivery_delay_is_a_soft_deferral() -> None:
    record = {
        "eventType": "DeliveryDelay",
        "mail": mail(),
        "deliveryDelay": {
            "timestamp": "2024-05-01T12:30:00.000Z",
            "delayType": "TransientCommunicationFailure",
            "expirationTime": "2024-05-01T23:00:00.000Z",
            "delayedRecipients": [
                {
                    "emailAddress": "reader@example.net",
                    "status": "4.4.1",
                    "diagnosticCode": "smtp; 421 4.4.1 Unable to connect",
                }
            ],
        },
    }
    [event] = normalize_ses(sns(record))
    assert (event.type, event.bounce) == (EventType.deferred, BounceKind.soft)
    assert event.reason is not None and event.reason.startswith("TransientCommunicationFailure")


def test_opens_and_clicks_carry_the_user_agent() -> None:
    agent = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/124.0"
    opened = {
        "eventType": "Open",
        "mail": mail(),
        "open": {
            "ipAddress": "192.0.2.1",
            "timestamp": "2024-05-01T14:00:00.000Z",
            "userAgent": agent,
        },
    }
    clicked = {
        "eventType": "Click",
        "mail": mail(),
        "click": {
            "ipAddress": "192.0.2.1",
            "link": "https://example.com/article",
            "linkTags": {"samplekey0": ["samplevalue0"]},
            "timestamp": "2024-05-01T14:01:00.000Z",
            "userAgent": "Mozilla/5.0",
        },
    }
    [open_event] = normalize_ses(sns(opened))
    [click_event] = normalize_ses(sns(clicked))
    assert (open_event.type, open_event.user_agent, open_event.machine) == (
        EventType.opened,
        agent,
        False,
    )
    assert click_event.url == "https://example.com/article"
    assert click_event.machine  # a bare "Mozilla/5.0" is Apple's privacy proxy


def test_a_subscription_opt_out_is_an_unsubscribe_and_an_opt_in_is_nothing() -> None:
    def record(unsubscribe_all: bool, status: str) -> dict[str, Any]:
        return {
            "eventType": "Subscription",
            "mail": mail(),
            "subscription": {
                "contactList": "newsletter",
                "timestamp": "2024-05-02T08:00:00.000Z",
                "source": "UnsubscribeHeader",
                "newTopicPreferences": {
                    "unsubscribeAll": unsubscribe_all,
                    "topicSubscriptionStatus": [
                        {"topicName": "weekly", "subscriptionStatus": status}
                    ],
                },
                "oldTopicPreferences": {"unsubscribeAll": False, "topicSubscriptionStatus": []},
            },
        }

    [everything] = normalize_ses(sns(record(True, "OptIn")))
    [topic] = normalize_ses(sns(record(False, "OptOut")))
    assert everything.type is EventType.unsubscribed
    assert everything.reason == "newsletter unsubscribed from all topics UnsubscribeHeader"
    assert topic.reason == "newsletter unsubscribed from topics: weekly UnsubscribeHeader"
    assert normalize_ses(sns(record(False, "OptIn"))) == []


def test_unknown_record_types_and_confirmations_yield_nothing() -> None:
    assert normalize_ses(sns({"notificationType": "Received", "mail": mail()})) == []
    assert normalize_ses(sns("You have chosen to subscribe", type="SubscriptionConfirmation")) == []


def test_a_delivery_tag_that_is_not_ours_names_no_delivery() -> None:
    record = {"eventType": "Send", "mail": mail(tags={"delivery_id": ["abc"]})}
    [event] = normalize_ses(sns(record))
    assert event.delivery_id is None


@pytest.mark.parametrize(
    "message",
    [
        "not json",
        json.dumps(["a", "list"]),
        json.dumps({"eventType": "Bounce", "mail": "x"}),
        json.dumps({"eventType": "Bounce", "mail": mail(), "bounce": {"bouncedRecipients": 3}}),
        json.dumps({"eventType": "Send", "mail": mail(timestamp="yesterday")}),
    ],
)
def test_a_record_that_is_not_the_documented_shape_is_malformed(message: str) -> None:
    with pytest.raises(WebhookMalformed):
        normalize_ses(sns(message))
