"""Postmark webhooks. Postmark signs nothing: a webhook is authenticated by HTTP basic auth
credentials written into its URL (``https://user:password@host/...``, arriving as an
``Authorization: Basic`` header) or by a secret segment of its path. Each POST carries one
record, named by ``RecordType``, with our ``Metadata`` (``tidings_delivery_id``) in it.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Callable
from typing import Any

from tidings.tracking.events import DELIVERY_METADATA_KEY, BounceKind, EventType, InboundEvent
from tidings.tracking.machines import is_machine_agent
from tidings.tracking.webhooks.base import (
    WebhookMalformed,
    WebhookRejected,
    provider_bounce_kind,
    require_configured,
    same_secret,
)
from tidings.tracking.webhooks.payload import Fields, delivery_id_of, objects_of, parse_json

SOURCE = "postmark"


def verify_basic_auth(
    expected_user: str, expected_password: str, authorization: str | None
) -> None:
    """Accept only ``Authorization: Basic`` with exactly these credentials."""
    require_configured(expected_user, "the Postmark webhook user")
    require_configured(expected_password, "the Postmark webhook password")
    if not authorization:
        raise WebhookRejected("missing Authorization header (basic auth in the webhook URL)")
    scheme, _, encoded = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        raise WebhookRejected(f"the Authorization scheme must be Basic, got {scheme[:16]!r}")
    try:
        user, separator, password = base64.b64decode(encoded.strip(), validate=True).partition(b":")
    except (binascii.Error, ValueError):
        raise WebhookRejected("the Basic credentials are not base64") from None
    # Both compared, always: stopping at a wrong user would tell how far a guess got.
    user_ok = hmac.compare_digest(user, expected_user.encode())
    password_ok = hmac.compare_digest(password, expected_password.encode())
    if not (separator and user_ok and password_ok):
        raise WebhookRejected("wrong Postmark webhook credentials")


def verify_path_secret(expected: str, given: str) -> None:
    """Accept only the configured secret path segment."""
    require_configured(expected, "the Postmark webhook path secret")
    if not same_secret(expected, given):
        raise WebhookRejected("wrong Postmark webhook path secret")


def normalize_postmark(body: bytes) -> list[InboundEvent]:
    """The events of one webhook POST (one record; a list of records is read too)."""
    events = []
    for fields in objects_of(parse_json(body, "Postmark webhook"), "Postmark webhook"):
        reader = _READERS.get(fields.text("RecordType") or "")
        event = reader(fields) if reader is not None else None
        if event is not None:
            events.append(event)
    return events


def _event(
    fields: Fields, type: EventType, when_key: str, event_id: str, **extra: Any
) -> InboundEvent:
    occurred_at = fields.iso_time(when_key)
    if occurred_at is None:
        raise WebhookMalformed(f"{fields.path or 'record'}.{when_key}: required, missing")
    return InboundEvent(
        type=type,
        occurred_at=occurred_at,
        source=SOURCE,
        source_event_id=event_id,
        delivery_id=delivery_id_of(fields.child("Metadata").data.get(DELIVERY_METADATA_KEY)),
        provider_message_id=fields.text("MessageID"),
        recipient=fields.text("Recipient") or fields.text("Email"),
        raw=fields.data,
        **extra,
    )


def _derived_id(fields: Fields, kind: str, when: str | None) -> str:
    """Delivery, open, click and subscription records have no id of their own: the message,
    the recipient and the moment name them (a retry of the same POST repeats all three)."""
    recipient = fields.text("Recipient") or fields.text("Email")
    return ":".join((kind, fields.text("MessageID") or "", recipient or "", when or ""))


def _delivery(fields: Fields) -> InboundEvent:
    event_id = _derived_id(fields, "delivery", fields.text("DeliveredAt"))
    return _event(
        fields, EventType.delivered, "DeliveredAt", event_id, reason=fields.text("Details")
    )


# Postmark's bounce Types by what they mean for us (TypeCode in comments; the code names the
# type when a record lacks Type). A Type in no table (AutoResponder, AddressChange, Subscribe,
# OpenRelayTest) is not a failed delivery and yields no event.
_TYPE_OF_CODE = {
    1: "HardBounce", 2: "Transient", 16: "Unsubscribe", 32: "Subscribe", 64: "AutoResponder",
    128: "AddressChange", 256: "DnsError", 512: "SpamNotification", 1024: "OpenRelayTest",
    2048: "Unknown", 4096: "SoftBounce", 8192: "VirusNotification",
    16384: "ChallengeVerification", 100000: "BadEmailAddress", 100001: "SpamComplaint",
    100002: "ManuallyDeactivated", 100003: "Unconfirmed", 100006: "Blocked",
    100007: "SMTPApiError", 100008: "InboundError", 100009: "DMARCPolicy",
    100010: "TemplateRenderingFailed",
}  # fmt: skip
_HARD_TYPES = {"HardBounce", "BadEmailAddress", "ManuallyDeactivated"}
_SOFT_TYPES = {"SoftBounce", "Transient", "DnsError", "ChallengeVerification"}
# The receiver refused the message or us (spam filter, virus scan, block list, DMARC), not the
# address: never suppress the address for these.
_POLICY_TYPES = {"SpamNotification", "VirusNotification", "Blocked", "DMARCPolicy"}
_FAILED_TYPES = {"SMTPApiError", "InboundError", "TemplateRenderingFailed", "Unconfirmed"}


def _bounce_type(fields: Fields) -> str:
    code = fields.number("TypeCode")
    by_code = _TYPE_OF_CODE.get(int(code)) if code is not None else None
    return fields.text("Type") or by_code or "Unknown"


def _bounce(fields: Fields) -> InboundEvent | None:
    bounce_type = _bounce_type(fields)
    details = fields.text("Details") or fields.text("Description")
    code = fields.text("TypeCode")
    label = f"{bounce_type} ({code})" if code else bounce_type
    reason = f"{label}: {details}" if details else label
    event_id = fields.required_text("ID")
    if bounce_type == "SpamComplaint":
        return _event(fields, EventType.complained, "BouncedAt", event_id, reason=reason)
    if bounce_type == "Unsubscribe":  # the recipient asked by replying "unsubscribe"
        return _event(fields, EventType.unsubscribed, "BouncedAt", event_id, reason=reason)
    if bounce_type in _FAILED_TYPES:
        return _event(fields, EventType.failed, "BouncedAt", event_id, reason=reason)
    kind = _bounce_kind(bounce_type, details)
    if kind is None:
        return None
    return _event(fields, EventType.bounced, "BouncedAt", event_id, bounce=kind, reason=reason)


def _bounce_kind(bounce_type: str, details: str | None) -> BounceKind | None:
    if bounce_type in _HARD_TYPES:
        return provider_bounce_kind(True, None, details)
    if bounce_type in _SOFT_TYPES:
        return BounceKind.soft
    if bounce_type in _POLICY_TYPES:
        return BounceKind.policy
    if bounce_type == "Unknown":
        return provider_bounce_kind(None, None, details)
    return None


def _spam_complaint(fields: Fields) -> InboundEvent:
    reason = fields.text("Details") or fields.text("Description")
    return _event(
        fields, EventType.complained, "BouncedAt", fields.required_text("ID"), reason=reason
    )


def _open(fields: Fields) -> InboundEvent:
    # Postmark reports client, OS and platform but does not flag prefetches itself (Apple Mail
    # Privacy Protection opens arrive as ordinary opens), so the user agent decides.
    agent = fields.text("UserAgent")
    event_id = _derived_id(fields, "open", fields.text("ReceivedAt"))
    return _event(
        fields,
        EventType.opened,
        "ReceivedAt",
        event_id,
        user_agent=agent,
        machine=is_machine_agent(agent),
    )


def _click(fields: Fields) -> InboundEvent:
    agent = fields.text("UserAgent")
    event_id = _derived_id(fields, "click", fields.text("ReceivedAt"))
    return _event(
        fields,
        EventType.clicked,
        "ReceivedAt",
        event_id,
        url=fields.text("OriginalLink"),
        user_agent=agent,
        machine=is_machine_agent(agent),
    )


def _subscription_change(fields: Fields) -> InboundEvent | None:
    """Postmark stopped (SuppressSending true) or resumed sending to the address. Only a
    suppression the recipient asked for (``ManualSuppression``: Postmark's unsubscribe link, an
    API call) is an unsubscribe; one for a HardBounce or a SpamComplaint reaches us as that
    Bounce or SpamComplaint record, and must not turn a bounced address into an unsubscribed one.
    """
    if not fields.flag("SuppressSending"):
        return None
    why = fields.text("SuppressionReason")
    if why not in (None, "ManualSuppression"):
        return None
    event_id = _derived_id(fields, "subscription", fields.text("ChangedAt"))
    reason = " ".join(filter(None, (why, fields.text("Origin") and f"by {fields.text('Origin')}")))
    return _event(fields, EventType.unsubscribed, "ChangedAt", event_id, reason=reason or None)


_READERS: dict[str, Callable[[Fields], InboundEvent | None]] = {
    "Delivery": _delivery,
    "Bounce": _bounce,
    "SpamComplaint": _spam_complaint,
    "Open": _open,
    "Click": _click,
    "SubscriptionChange": _subscription_change,
}
