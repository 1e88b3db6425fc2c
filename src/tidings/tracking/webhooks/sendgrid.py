"""SendGrid's Event Webhook: the signed-webhook check (ECDSA P-256 over the timestamp header
followed by the raw body) and its batch of events, each carrying our ``tidings_delivery_id``
custom argument as a top-level key next to SendGrid's own fields."""

from __future__ import annotations

import base64
import binascii
import functools
from collections.abc import Callable
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tidings.tracking.events import DELIVERY_METADATA_KEY, BounceKind, EventType, InboundEvent
from tidings.tracking.machines import is_machine_agent
from tidings.tracking.webhooks.base import (
    WebhookMalformed,
    WebhookRejected,
    check_timestamp,
    provider_bounce_kind,
    require_configured,
)
from tidings.tracking.webhooks.payload import Fields, delivery_id_of, parse_json

SOURCE = "sendgrid"
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"


def verify_sendgrid(
    public_key: str, signature: str | None, timestamp: str | None, body: bytes, now: datetime
) -> None:
    """Accept the request only if SendGrid's key signed ``timestamp`` + ``body`` recently.

    ``public_key`` is the verification key SendGrid shows under Mail Settings > Signed Event
    Webhook: base64 DER (SubjectPublicKeyInfo); a PEM block is accepted too.
    """
    require_configured(public_key, "the SendGrid verification key")
    if not signature:
        raise WebhookRejected(f"missing {SIGNATURE_HEADER} header")
    if not timestamp:
        raise WebhookRejected(f"missing {TIMESTAMP_HEADER} header")
    check_timestamp(timestamp, now)
    key = load_verification_key(public_key)
    try:
        der_signature = base64.b64decode(signature, validate=True)
        key.verify(der_signature, timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    except (binascii.Error, ValueError, InvalidSignature):
        raise WebhookRejected("the SendGrid signature does not match the request") from None


@functools.lru_cache(maxsize=8)
def load_verification_key(public_key: str) -> ec.EllipticCurvePublicKey:
    """The P-256 key in SendGrid's base64 DER (or PEM) form; a key that is not one is our
    configuration's fault, hence ValueError rather than a rejection of the request."""
    try:
        if public_key.lstrip().startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(public_key.encode())
        else:
            key = serialization.load_der_public_key(base64.b64decode(public_key, validate=True))
    except (binascii.Error, ValueError, UnsupportedAlgorithm):
        raise ValueError("the SendGrid verification key is not a base64 public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("the SendGrid verification key is not an ECDSA P-256 key")
    return key


def normalize_sendgrid(body: bytes) -> list[InboundEvent]:
    """The events of one Event Webhook POST (a JSON array of event objects)."""
    document = parse_json(body, "SendGrid event batch")
    if not isinstance(document, list):
        raise WebhookMalformed("a SendGrid event batch must be a JSON array of events")
    events = []
    for i, item in enumerate(document):
        fields = Fields(item, f"[{i}]")
        reader = _READERS.get(fields.text("event") or "")
        if reader is not None:
            events.append(reader(fields))
    return events


def _event(fields: Fields, type: EventType, **extra: Any) -> InboundEvent:
    occurred_at = fields.unix_time("timestamp")
    if occurred_at is None:
        raise WebhookMalformed(f"{fields.path}.timestamp: required, missing")
    return InboundEvent(
        type=type,
        occurred_at=occurred_at,
        source=SOURCE,
        source_event_id=fields.text("sg_event_id"),
        delivery_id=delivery_id_of(fields.data.get(DELIVERY_METADATA_KEY)),
        provider_message_id=fields.text("sg_message_id"),
        recipient=fields.text("email"),
        raw=fields.data,
        **extra,
    )


def _processed(fields: Fields) -> InboundEvent:
    return _event(fields, EventType.sent)


def _dropped(fields: Fields) -> InboundEvent:
    # SendGrid would not send it: a suppressed address, an invalid one, spam content.
    return _event(fields, EventType.rejected, reason=fields.text("reason"))


def _delivered(fields: Fields) -> InboundEvent:
    return _event(fields, EventType.delivered, reason=fields.text("response"))


def _deferred(fields: Fields) -> InboundEvent:
    attempt = fields.text("attempt")
    reason = " ".join(filter(None, (fields.text("response"), attempt and f"(attempt {attempt})")))
    return _event(fields, EventType.deferred, bounce=BounceKind.soft, reason=reason or None)


def _bounce(fields: Fields) -> InboundEvent:
    """``type`` "bounce" is a permanent refusal of the address; "blocked" is the receiving
    server refusing us (our IP, our content): not the address's fault."""
    status, diagnostic = fields.text("status"), fields.text("reason")
    if fields.text("type") == "blocked":
        kind = BounceKind.policy
    else:
        kind = provider_bounce_kind(True, status, diagnostic)
    reason = " ".join(filter(None, (status, diagnostic))) or None
    return _event(fields, EventType.bounced, bounce=kind, reason=reason)


def _open(fields: Fields) -> InboundEvent:
    agent = fields.text("useragent")
    machine = fields.flag("sg_machine_open") or is_machine_agent(agent)
    return _event(fields, EventType.opened, user_agent=agent, machine=machine)


def _click(fields: Fields) -> InboundEvent:
    agent = fields.text("useragent")
    return _event(
        fields,
        EventType.clicked,
        url=fields.text("url"),
        user_agent=agent,
        machine=is_machine_agent(agent),
    )


def _spamreport(fields: Fields) -> InboundEvent:
    return _event(fields, EventType.complained)


def _unsubscribe(fields: Fields) -> InboundEvent:
    group = fields.text("asm_group_id")
    return _event(fields, EventType.unsubscribed, reason=group and f"unsubscribe group {group}")


_READERS: dict[str, Callable[[Fields], InboundEvent]] = {
    "processed": _processed,
    "dropped": _dropped,
    "delivered": _delivered,
    "deferred": _deferred,
    "bounce": _bounce,
    "open": _open,
    "click": _click,
    "spamreport": _spamreport,
    "unsubscribe": _unsubscribe,
    "group_unsubscribe": _unsubscribe,
}
