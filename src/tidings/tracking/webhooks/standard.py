"""Standard Webhooks (https://www.standardwebhooks.com) signatures, symmetric scheme: our
``/webhooks/generic`` inbound endpoint checks them, and our outgoing webhooks will sign with them.

- a secret is ``whsec_`` + base64 of 24 to 64 random bytes; the HMAC key is the decoded bytes;
- the signed content is ``{webhook-id}.{webhook-timestamp}.{body}``, signed with HMAC-SHA256 and
  sent base64 as ``v1,<signature>``; ``webhook-signature`` is a space-separated list of such
  entries (several during a secret rotation: any ``v1`` one matching is enough);
- ``webhook-timestamp`` is Unix seconds, accepted within five minutes of now.

The generic inbound payload (``normalize_generic``) is one event object or a list of them:

    {"type": "bounced",                  # an EventType value
     "id": "evt_123",                    # unique per sender: a replay of it is a no-op
     "occurred_at": "2024-05-01T12:00:00Z",  # ISO 8601; without an offset it is UTC
     "delivery_id": 42,                  # at least one of delivery_id, message_id, recipient
     "message_id": "<abc@mail.example>",
     "recipient": "reader@example.com",
     "bounce": "hard",                   # hard / soft / policy; bounced and deferred only
     "reason": "550 5.1.1 user unknown",
     "url": "https://example.com/a",     # for clicked
     "machine": false,                   # a scanner or prefetcher, not a person
     "user_agent": "Mozilla/5.0 ..."}    # of an open or a click
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tidings.db.ids import MAX_ID
from tidings.storable import check_storable
from tidings.tracking.events import BounceKind, EventType, InboundEvent
from tidings.tracking.webhooks.base import (
    WebhookMalformed,
    WebhookRejected,
    check_timestamp,
    require_configured,
)
from tidings.tracking.webhooks.payload import as_utc, parse_json

SOURCE = "generic"
SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32  # within the spec's 24..64
SIGNATURE_VERSION = "v1"
MAX_EVENTS = 1000  # per request: a bigger batch is a client bug or an attack, not a backlog


def generate_secret() -> str:
    """A new signing secret in the spec's serialization."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret (the prefix is optional, as in the reference
    libraries); a secret that is not base64 is a configuration error, hence ValueError."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a Standard Webhooks secret is 'whsec_' followed by base64") from None


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``v1,<base64>`` signature of ``body`` sent as ``message_id`` at ``timestamp``."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def verify_standard(secret: str, headers: Mapping[str, str], body: bytes, now: datetime) -> None:
    """Accept the request only if one of its ``v1`` signatures is ours, made recently."""
    require_configured(secret, "the webhook signing secret")
    by_name = {name.lower(): value for name, value in headers.items()}
    message_id = _required_header(by_name, "webhook-id")
    timestamp = _required_header(by_name, "webhook-timestamp")
    signatures = _required_header(by_name, "webhook-signature")
    if not timestamp.isascii() or not timestamp.isdigit():
        raise WebhookRejected(f"webhook-timestamp {timestamp[:32]!r} is not Unix seconds")
    check_timestamp(timestamp, now)
    expected = sign(secret, message_id, int(timestamp), body).encode()
    # Every entry is compared (no early exit), so timing does not tell which one matched.
    matched = False
    for entry in signatures.split():
        if entry.startswith(f"{SIGNATURE_VERSION},"):
            matched |= hmac.compare_digest(entry.encode(), expected)
    if not matched:
        raise WebhookRejected("no v1 webhook-signature matches the request")


def _required_header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if not value:
        raise WebhookRejected(f"missing {name} header")
    return value


class GenericEvent(BaseModel):
    """One event of the generic inbound webhook, as documented in the module docstring."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    type: EventType
    id: str = Field(min_length=1, max_length=255)
    occurred_at: datetime
    delivery_id: int | None = Field(default=None, gt=0, le=MAX_ID)
    message_id: str | None = Field(default=None, min_length=1, max_length=255)
    recipient: str | None = Field(default=None, min_length=3, max_length=320)
    bounce: BounceKind | None = None
    reason: str | None = Field(default=None, max_length=2000)
    url: str | None = Field(default=None, max_length=2048)
    machine: bool = False
    user_agent: str | None = Field(default=None, max_length=512)

    @field_validator("occurred_at")
    @classmethod
    def _in_utc(cls, value: datetime) -> datetime:
        try:
            return as_utc(value)
        except OverflowError:  # a time near year 1 or 9999 may not survive the move to UTC
            raise ValueError("out of range once converted to UTC") from None

    @model_validator(mode="after")
    def _names_its_message(self) -> Self:
        for name in type(self).model_fields:
            check_storable(getattr(self, name), name)
        if self.delivery_id is None and self.message_id is None and self.recipient is None:
            raise ValueError("needs at least one of delivery_id, message_id, recipient")
        if self.bounce is not None and self.type not in (EventType.bounced, EventType.deferred):
            raise ValueError(f"bounce is only for bounced and deferred events, not {self.type}")
        return self

    def to_event(self, source: str = SOURCE) -> InboundEvent:
        return InboundEvent(
            type=self.type,
            occurred_at=self.occurred_at,
            source=source,
            source_event_id=self.id,
            delivery_id=self.delivery_id,
            provider_message_id=self.message_id,
            recipient=self.recipient,
            bounce=self.bounce,
            reason=self.reason,
            url=self.url,
            machine=self.machine,
            user_agent=self.user_agent,
            raw=self.model_dump(mode="json"),
        )


def normalize_generic(body: bytes) -> list[InboundEvent]:
    """The events of a generic webhook body (one object or a list of up to ``MAX_EVENTS``)."""
    document = parse_json(body, "webhook body")
    if isinstance(document, dict):
        return [_validated(document, "").to_event()]
    if not isinstance(document, list):
        raise WebhookMalformed("the webhook body must be an event object or a list of them")
    if len(document) > MAX_EVENTS:
        raise WebhookMalformed(f"{len(document)} events in one request; at most {MAX_EVENTS}")
    return [_validated(item, f"[{i}]").to_event() for i, item in enumerate(document)]


def _validated(item: Any, path: str) -> GenericEvent:
    try:
        return GenericEvent.model_validate(item)
    except ValidationError as error:
        raise WebhookMalformed(_describe(error, path)) from None


def _describe(error: ValidationError, path: str) -> str:
    """Pydantic's errors as "where: what" lines a sender can act on."""
    problems = []
    for problem in error.errors(include_url=False, include_input=False):
        where = path + "".join(
            f"[{part}]" if isinstance(part, int) else f".{part}" for part in problem["loc"]
        )
        problems.append(f"{where.lstrip('.') or 'event'}: {problem['msg']}")
    return "; ".join(problems)
