"""Azure Communication Services Email events, delivered by an Azure Event Grid webhook
subscription in either the Event Grid schema (always an array) or the CloudEvents 1.0 schema (one
event, or an array in batched mode).

Authenticity: Event Grid does not sign webhook deliveries. The subscription is created with a
*delivery property* (Event Grid > event subscription > Additional features > Delivery
properties): a static header ``X-Tidings-Webhook-Key`` whose value is a secret, marked "secret"
so the portal hides it; Event Grid sends it with every delivery. A secret in the URL's query
string would work too, but would end up in access logs, proxies and the portal's plain text.

Handshakes, which prove we own the endpoint before Event Grid sends events:
- Event Grid schema: a ``Microsoft.EventGrid.SubscriptionValidationEvent`` whose
  ``data.validationCode`` we echo back as ``{"validationResponse": code}``;
- CloudEvents schema: an HTTP OPTIONS with ``WebHook-Request-Origin``, answered with
  ``WebHook-Allowed-Origin`` (``cloudevents_handshake``).
Answering a handshake grants nothing: every event still needs the key.

No metadata travels with the message: an event names it only by ``data.messageId``, the
operation id, which the Azure transport makes to carry the delivery id.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tidings.tracking.events import BounceKind, EventType, InboundEvent
from tidings.tracking.machines import is_machine_agent
from tidings.tracking.webhooks.base import (
    WebhookMalformed,
    WebhookRejected,
    provider_bounce_kind,
    require_configured,
    same_secret,
)
from tidings.tracking.webhooks.payload import Fields, objects_of, parse_json
from tidings.transports.azure import delivery_of_operation

SOURCE = "azure"
KEY_HEADER = "X-Tidings-Webhook-Key"
VALIDATION_EVENT = "Microsoft.EventGrid.SubscriptionValidationEvent"
DELIVERY_REPORT = "Microsoft.Communication.EmailDeliveryReportReceived"
ENGAGEMENT_REPORT = "Microsoft.Communication.EmailEngagementTrackingReportReceived"
EVENT_GRID_ORIGIN = "eventgrid.azure.net"


def verify_azure_key(expected: str, given: str | None) -> None:
    """Accept only the secret configured as the subscription's delivery header."""
    require_configured(expected, "the Azure Event Grid webhook key")
    if not given:
        raise WebhookRejected(f"missing {KEY_HEADER} header (an Event Grid delivery property)")
    if not same_secret(expected, given):
        raise WebhookRejected(f"wrong {KEY_HEADER}")


def validation_response(body: bytes) -> dict[str, str] | None:
    """The answer to an Event Grid subscription validation request; None for anything else."""
    for event in objects_of(parse_json(body, "Event Grid delivery"), "Event Grid delivery"):
        if _event_type(event) == VALIDATION_EVENT:
            code = event.child("data").required_text("validationCode")
            return {"validationResponse": code}
    return None


def cloudevents_handshake(request_origin: str | None) -> dict[str, str] | None:
    """The headers answering a CloudEvents abuse-protection OPTIONS request from Event Grid;
    None when the request is not one from Event Grid (the route then answers 400)."""
    if request_origin is None or request_origin.strip().lower() != EVENT_GRID_ORIGIN:
        return None
    return {"WebHook-Allowed-Origin": EVENT_GRID_ORIGIN}


def normalize_azure(body: bytes) -> list[InboundEvent]:
    """The email events of one delivery, in either schema; other event types are skipped."""
    events = []
    for event in objects_of(parse_json(body, "Event Grid delivery"), "Event Grid delivery"):
        reader = _READERS.get(_event_type(event) or "")
        produced = reader(event) if reader is not None else None
        if produced is not None:
            events.append(produced)
    return events


def _event_type(event: Fields) -> str | None:
    return event.text("eventType") or event.text("type")  # Event Grid / CloudEvents


def _event(
    event: Fields, type: EventType, when_keys: tuple[str, ...], **extra: Any
) -> InboundEvent:
    data = event.child("data")
    occurred_at = next(
        (moment for key in when_keys if (moment := data.iso_time(key)) is not None), None
    )
    occurred_at = occurred_at or event.iso_time("eventTime") or event.iso_time("time")
    if occurred_at is None:
        raise WebhookMalformed(f"{event.path or 'event'}: no eventTime or time")
    return InboundEvent(
        type=type,
        occurred_at=occurred_at,
        source=SOURCE,
        source_event_id=event.required_text("id"),
        delivery_id=delivery_of_operation(data.text("messageId")),
        provider_message_id=data.text("messageId"),
        recipient=data.text("recipient"),
        raw=event.data,
        **extra,
    )


# The documentation spells it deliveryAttemptTimeStamp in samples, deliveryAttemptTimestamp in
# the SDK schemas: read both.
_DELIVERY_TIME = ("deliveryAttemptTimeStamp", "deliveryAttemptTimestamp")
_ENGAGEMENT_TIME = ("userActionTimeStamp", "userActionTimestamp")


def _delivery_report(event: Fields) -> InboundEvent | None:
    """ACS's delivery status: Delivered; Expanded (a distribution list fanned out: no final
    status of its own, skipped); Bounced (a hard bounce); Suppressed (ACS would not send: the
    address is on its suppression list); Quarantined and FilteredSpam (the receiver's filter took
    it: the message's fault); Failed (anything else)."""
    data = event.child("data")
    status = data.text("status")
    message = data.child("deliveryStatusDetails").text("statusMessage")
    reason = " ".join(filter(None, (status, message))) or None
    if status == "Delivered":
        return _event(event, EventType.delivered, _DELIVERY_TIME, reason=message)
    if status == "Bounced":
        kind = provider_bounce_kind(True, None, message)
        return _event(event, EventType.bounced, _DELIVERY_TIME, bounce=kind, reason=reason)
    if status in ("Quarantined", "FilteredSpam"):
        kind = BounceKind.policy
        return _event(event, EventType.bounced, _DELIVERY_TIME, bounce=kind, reason=reason)
    if status == "Suppressed":
        return _event(event, EventType.rejected, _DELIVERY_TIME, reason=reason)
    if status == "Failed":
        return _event(event, EventType.failed, _DELIVERY_TIME, reason=reason)
    return None  # Expanded, and statuses added after this was written


def _engagement_report(event: Fields) -> InboundEvent | None:
    data = event.child("data")
    engagement = (data.text("engagementType") or "").lower()  # "view"/"click", any case
    agent = data.text("userAgent") or None
    machine = is_machine_agent(agent)
    if engagement == "view":
        return _event(event, EventType.opened, _ENGAGEMENT_TIME, user_agent=agent, machine=machine)
    if engagement == "click":
        url = data.text("engagementContext") or None
        return _event(
            event, EventType.clicked, _ENGAGEMENT_TIME, url=url, user_agent=agent, machine=machine
        )
    return None


_READERS: dict[str, Callable[[Fields], InboundEvent | None]] = {
    DELIVERY_REPORT: _delivery_report,
    ENGAGEMENT_REPORT: _engagement_report,
}
