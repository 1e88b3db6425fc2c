"""Amazon SES records as SNS delivers them, read into events: event publishing through a
configuration set (``eventType``: Send, Delivery, Bounce, Complaint, Reject, DeliveryDelay, Open,
Click, Rendering Failure, Subscription) and the older identity notifications
(``notificationType``: Bounce, Complaint, Delivery), which share the same sub-objects.

SES names the message by ``mail.messageId`` and, for event publishing, by our ``delivery_id``
message tag (``mail.tags.delivery_id: ["123"]``); notifications carry no tags.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tidings.tracking.events import BounceKind, EventType, InboundEvent
from tidings.tracking.machines import is_machine_agent
from tidings.tracking.webhooks.base import provider_bounce_kind
from tidings.tracking.webhooks.payload import Fields, delivery_id_of

SOURCE = "ses"
DELIVERY_TAG = "delivery_id"  # the EmailTags name the SES transport sets


@dataclass(frozen=True, slots=True)
class _Record:
    """What every event of one SES record shares."""

    document: Fields
    mail: Fields
    sns_message_id: str
    published_at: datetime

    def event(
        self, type: EventType, recipient: str | None, count: int, **extra: Any
    ) -> InboundEvent:
        """One event of the record; ``count`` is how many recipients the record covers, so that
        each of several gets its own source event id."""
        event_id = self.sns_message_id if count <= 1 else f"{self.sns_message_id}:{recipient}"
        extra.setdefault("occurred_at", self.mail.iso_time("timestamp") or self.published_at)
        return InboundEvent(
            type=type,
            source=SOURCE,
            source_event_id=event_id,
            delivery_id=self.delivery_id(),
            provider_message_id=self.mail.text("messageId"),
            recipient=recipient,
            raw=self.document.data,
            **extra,
        )

    def delivery_id(self) -> int | None:
        values = self.mail.child("tags").items(DELIVERY_TAG)
        return delivery_id_of(values[0]) if values else None

    def destinations(self) -> list[str]:
        return [str(address) for address in self.mail.items("destination")]

    def per_destination(self, type: EventType, **extra: Any) -> list[InboundEvent]:
        """One event per address the message went to, for records that name no recipient."""
        recipients: list[str | None] = [*self.destinations()] or [None]
        return [self.event(type, r, len(recipients), **extra) for r in recipients]


def ses_events(document: object, sns_message_id: str, published_at: datetime) -> list[InboundEvent]:
    """The events of one SES record (the JSON in an SNS Notification's Message)."""
    fields = Fields(document, "Message")
    kind = fields.text("eventType") or fields.text("notificationType")
    reader = _READERS.get(kind or "")
    if reader is None:
        return []  # Received (inbound mail), AmazonSnsSubscriptionSucceeded, future types
    return reader(_Record(fields, fields.child("mail"), sns_message_id, published_at))


def _send(record: _Record) -> list[InboundEvent]:
    return record.per_destination(EventType.sent)


def _delivery(record: _Record) -> list[InboundEvent]:
    delivery = record.document.child("delivery")
    recipients = [str(r) for r in delivery.items("recipients")] or record.destinations()
    when = delivery.iso_time("timestamp") or record.published_at
    reason = delivery.text("smtpResponse")
    return [
        record.event(EventType.delivered, r, len(recipients), occurred_at=when, reason=reason)
        for r in recipients
    ]


def _bounce(record: _Record) -> list[InboundEvent]:
    bounce = record.document.child("bounce")
    bounce_type = bounce.text("bounceType")  # Permanent, Transient, Undetermined
    permanent = {"Permanent": True, "Transient": False}.get(bounce_type or "")
    when = bounce.iso_time("timestamp") or record.published_at
    recipients = bounce.children("bouncedRecipients")
    events = []
    for recipient in recipients:
        status, diagnostic = recipient.text("status"), recipient.text("diagnosticCode")
        subtype = "/".join(filter(None, (bounce_type, bounce.text("bounceSubType"))))
        events.append(
            record.event(
                EventType.bounced,
                recipient.text("emailAddress"),
                len(recipients),
                occurred_at=when,
                bounce=provider_bounce_kind(permanent, status, diagnostic),
                reason=_join(subtype, status, diagnostic),
            )
        )
    return events


def _complaint(record: _Record) -> list[InboundEvent]:
    complaint = record.document.child("complaint")
    when = complaint.iso_time("timestamp") or record.published_at
    # The feedback type (abuse, fraud, not-spam...) when the ISP sent an ARF report.
    reason = complaint.text("complaintFeedbackType") or complaint.text("complaintSubType")
    recipients = complaint.children("complainedRecipients")
    return [
        record.event(
            EventType.complained, r.text("emailAddress"), len(recipients), occurred_at=when,
            reason=reason,
        )
        for r in recipients
    ]  # fmt: skip


def _delivery_delay(record: _Record) -> list[InboundEvent]:
    delay = record.document.child("deliveryDelay")
    when = delay.iso_time("timestamp") or record.published_at
    recipients = delay.children("delayedRecipients")
    return [
        record.event(
            EventType.deferred,
            r.text("emailAddress"),
            len(recipients),
            occurred_at=when,
            bounce=BounceKind.soft,
            reason=_join(delay.text("delayType"), r.text("status"), r.text("diagnosticCode")),
        )
        for r in recipients
    ]


def _reject(record: _Record) -> list[InboundEvent]:
    # SES refused to send it at all (a virus found): no recipient was tried.
    reason = record.document.child("reject").text("reason")
    return record.per_destination(EventType.rejected, reason=reason)


def _rendering_failure(record: _Record) -> list[InboundEvent]:
    failure = record.document.child("failure")
    reason = _join(failure.text("templateName"), failure.text("errorMessage"))
    return record.per_destination(EventType.failed, reason=reason)


def _open(record: _Record) -> list[InboundEvent]:
    opened = record.document.child("open")
    agent = opened.text("userAgent")
    when = opened.iso_time("timestamp") or record.published_at
    return record.per_destination(
        EventType.opened, occurred_at=when, user_agent=agent, machine=is_machine_agent(agent)
    )


def _click(record: _Record) -> list[InboundEvent]:
    click = record.document.child("click")
    agent = click.text("userAgent")
    when = click.iso_time("timestamp") or record.published_at
    return record.per_destination(
        EventType.clicked,
        occurred_at=when,
        url=click.text("link"),
        user_agent=agent,
        machine=is_machine_agent(agent),
    )


def _subscription(record: _Record) -> list[InboundEvent]:
    """An unsubscribe through SES's list management (its List-Unsubscribe header or page):
    from everything, or from topics; a new opt-in is not an event of ours."""
    subscription = record.document.child("subscription")
    preferences = subscription.child("newTopicPreferences")
    opted_out = [
        topic.text("topicName") or "?"
        for topic in preferences.children("topicSubscriptionStatus")
        if topic.text("subscriptionStatus") == "OptOut"
    ]
    if preferences.flag("unsubscribeAll"):
        change = "unsubscribed from all topics"
    elif opted_out:
        change = "unsubscribed from topics: " + ", ".join(opted_out)
    else:
        return []
    when = subscription.iso_time("timestamp") or record.published_at
    reason = _join(subscription.text("contactList"), change, subscription.text("source"))
    return record.per_destination(EventType.unsubscribed, occurred_at=when, reason=reason)


def _join(*parts: str | None) -> str | None:
    text = " ".join(part for part in parts if part)
    return text or None


_READERS: dict[str, Callable[[_Record], list[InboundEvent]]] = {
    "Send": _send,
    "Delivery": _delivery,
    "Bounce": _bounce,
    "Complaint": _complaint,
    "DeliveryDelay": _delivery_delay,
    "Reject": _reject,
    "Rendering Failure": _rendering_failure,
    "Open": _open,
    "Click": _click,
    "Subscription": _subscription,
}
