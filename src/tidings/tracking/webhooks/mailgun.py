"""Mailgun webhooks: ``{"signature": {timestamp, token, signature}, "event-data": {...}}``.

The signature is HMAC-SHA256, keyed with the webhook signing key, of the timestamp and the token
concatenated, in hex. The token is random per request, so remembering it for the time window
makes a captured request useless even within the window. Our delivery id travels as the user
variable ``tidings_delivery_id`` (``event-data.user-variables``).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from datetime import datetime
from typing import Any

from tidings.tracking.events import DELIVERY_METADATA_KEY, BounceKind, EventType, InboundEvent
from tidings.tracking.machines import is_machine_agent
from tidings.tracking.webhooks.base import (
    TIMESTAMP_TOLERANCE,
    ReplayGuard,
    WebhookMalformed,
    WebhookRejected,
    check_timestamp,
    provider_bounce_kind,
    require_configured,
)
from tidings.tracking.webhooks.payload import Fields, delivery_id_of, parse_json

SOURCE = "mailgun"


async def verify_mailgun(signing_key: str, body: bytes, now: datetime, replay: ReplayGuard) -> None:
    """Accept the request only if the signing key signed it, recently, and its token is new."""
    require_configured(signing_key, "the Mailgun webhook signing key")
    signature = _signature_block(body)
    timestamp, token, given = (signature.text(k) for k in ("timestamp", "token", "signature"))
    if not (timestamp and token and given):
        raise WebhookRejected("the Mailgun signature lacks its timestamp, token or signature")
    signed_at = check_timestamp(timestamp, now)
    expected = hmac.new(signing_key.encode(), (timestamp + token).encode(), hashlib.sha256)
    if not hmac.compare_digest(expected.hexdigest().encode(), given.lower().encode()):
        raise WebhookRejected("the Mailgun signature does not match")
    # Only after the signature: a forger must not be able to use up genuine tokens.
    if not await replay.first_use(f"mailgun:{token}", signed_at + TIMESTAMP_TOLERANCE):
        raise WebhookRejected("this Mailgun token was already used (a replayed request)")


def _signature_block(body: bytes) -> Fields:
    try:
        return Fields(parse_json(body, "Mailgun webhook"), "").child("signature")
    except WebhookMalformed as error:  # unsigned, so not "authentic but malformed"
        raise WebhookRejected(error.reason) from None


def normalize_mailgun(body: bytes) -> list[InboundEvent]:
    """The event of one webhook POST (none for an event type we do not map)."""
    data = Fields(parse_json(body, "Mailgun webhook"), "").child("event-data")
    reader = _READERS.get(data.text("event") or "")
    return [reader(data)] if reader is not None else []


def _event(data: Fields, type: EventType, **extra: Any) -> InboundEvent:
    occurred_at = data.unix_time("timestamp")
    if occurred_at is None:
        raise WebhookMalformed("event-data.timestamp: required, missing")
    message_id = data.child("message").child("headers").text("message-id")
    return InboundEvent(
        type=type,
        occurred_at=occurred_at,
        source=SOURCE,
        source_event_id=data.text("id"),
        delivery_id=delivery_id_of(data.child("user-variables").data.get(DELIVERY_METADATA_KEY)),
        provider_message_id=message_id.strip("<>") if message_id else None,
        recipient=data.text("recipient"),
        raw=data.data,
        **extra,
    )


def _accepted(data: Fields) -> InboundEvent:
    return _event(data, EventType.sent)


def _delivered(data: Fields) -> InboundEvent:
    status = data.child("delivery-status")
    reason = _join(status.text("code"), status.text("message") or status.text("description"))
    return _event(data, EventType.delivered, reason=reason)


# Mailgun's ``reason`` for failures it decided itself, without trying the receiver.
_SUPPRESSED = {"suppress-bounce", "suppress-unsubscribe", "suppress-complaint"}


def _failed(data: Fields) -> InboundEvent:
    """``severity`` temporary: Mailgun retries (deferred); permanent: it gave up (bounced), or,
    for a ``suppress-*`` reason, never tried because the address is on its suppression lists."""
    status = data.child("delivery-status")
    mailgun_reason = data.text("reason")
    smtp_status = status.text("enhanced-code") or status.text("code")
    diagnostic = status.text("message") or status.text("description")
    reason = _join(mailgun_reason, smtp_status, diagnostic)
    if mailgun_reason in _SUPPRESSED:
        return _event(data, EventType.rejected, reason=reason)
    if data.text("severity") == "temporary":
        return _event(data, EventType.deferred, bounce=BounceKind.soft, reason=reason)
    if mailgun_reason == "espblock":  # the receiving provider blocked us
        kind = BounceKind.policy
    elif mailgun_reason == "old":  # retried until too old: the address was never refused
        kind = BounceKind.soft
    else:
        kind = provider_bounce_kind(True, smtp_status, diagnostic)
    return _event(data, EventType.bounced, bounce=kind, reason=reason)


def _engagement(data: Fields, type: EventType, **extra: Any) -> InboundEvent:
    client = data.child("client-info")
    agent = client.text("user-agent")
    # client-info.bot: "apple" (Mail Privacy Protection), "gmail", "generic" (a scanner).
    machine = bool(client.text("bot")) or is_machine_agent(agent)
    return _event(data, type, user_agent=agent, machine=machine, **extra)


def _opened(data: Fields) -> InboundEvent:
    return _engagement(data, EventType.opened)


def _clicked(data: Fields) -> InboundEvent:
    return _engagement(data, EventType.clicked, url=data.text("url"))


def _complained(data: Fields) -> InboundEvent:
    return _event(data, EventType.complained)


def _unsubscribed(data: Fields) -> InboundEvent:
    return _event(data, EventType.unsubscribed)


def _rejected(data: Fields) -> InboundEvent:
    reject = data.child("reject")
    return _event(
        data, EventType.rejected, reason=_join(reject.text("reason"), reject.text("description"))
    )


def _join(*parts: str | None) -> str | None:
    return " ".join(part for part in parts if part) or None


_READERS: dict[str, Callable[[Fields], InboundEvent]] = {
    "accepted": _accepted,
    "delivered": _delivered,
    "failed": _failed,
    "opened": _opened,
    "clicked": _clicked,
    "complained": _complained,
    "unsubscribed": _unsubscribed,
    "rejected": _rejected,
}
