"""The one event model every source is normalized into: tracking endpoints, provider webhooks,
bounce messages and trusted API clients all produce ``InboundEvent``s.

An event names its message by our delivery id when the source carries it (our tracking tokens,
the ``tidings_delivery_id`` metadata every ESP transport attaches), else by the provider's
message id, else only by the recipient address (a bounce for mail we cannot otherwise place).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class EventType(enum.StrEnum):
    queued = "queued"
    sent = "sent"
    delivered = "delivered"
    deferred = "deferred"
    bounced = "bounced"
    complained = "complained"
    opened = "opened"
    clicked = "clicked"
    unsubscribed = "unsubscribed"
    rejected = "rejected"  # the provider refused to send it (suppressed there, invalid...)
    failed = "failed"


class BounceKind(enum.StrEnum):
    """Whose fault a bounce is: ``hard`` the address's (never mail it again), ``soft`` a passing
    condition (full mailbox, greylisting), ``policy`` the message's or the sender's (blocked as
    spam, DMARC, reputation): not the address's fault, so it is not suppressed."""

    hard = "hard"
    soft = "soft"
    policy = "policy"


DELIVERY_METADATA_KEY = "tidings_delivery_id"  # custom args / metadata / user variables of ESPs


@dataclass(frozen=True, slots=True)
class InboundEvent:
    type: EventType
    occurred_at: datetime  # aware UTC
    source: str  # "tracking", "api", "dsn", or a provider kind: "ses", "sendgrid", ...
    source_event_id: str | None = None  # unique per source: a replay of it is a no-op
    delivery_id: int | None = None
    provider_message_id: str | None = None
    recipient: str | None = None  # the address, when the source names it
    bounce: BounceKind | None = None  # for bounced (and deferred: soft)
    reason: str | None = None  # status code and diagnostic, a complaint's feedback type...
    url: str | None = None  # for clicked
    link_id: int | None = None  # for clicked through our token
    machine: bool = False  # a prefetcher or scanner, not a person
    user_agent: str | None = None
    raw: dict[str, Any] | None = field(default=None, compare=False)  # the source's payload
