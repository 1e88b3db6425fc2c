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
from typing import Any, NamedTuple, Protocol


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


@dataclass(slots=True)  # not frozen: a frozen dataclass costs microseconds more to make, and
class InboundEvent:  # the open pixel makes one per request
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


class StoredEvent(Protocol):
    """An event as stored (an ``Event`` row, or a ``RecordedEvent`` just written)."""

    @property
    def id(self) -> int: ...
    @property
    def type(self) -> str: ...
    @property
    def occurred_at(self) -> datetime: ...
    @property
    def campaign_id(self) -> int | None: ...
    @property
    def subscriber_id(self) -> int | None: ...
    @property
    def delivery_id(self) -> int | None: ...
    @property
    def provider(self) -> str | None: ...
    @property
    def bounce(self) -> str | None: ...
    @property
    def reason(self) -> str | None: ...
    @property
    def url(self) -> str | None: ...
    @property
    def machine(self) -> bool: ...


class RecordedEvent(NamedTuple):
    """An event just written, without loading it back as an ORM object (at thousands of opens
    a second, that would cost more than writing it; a named tuple is the cheapest to make)."""

    id: int
    type: str
    occurred_at: datetime
    campaign_id: int | None
    subscriber_id: int | None
    delivery_id: int | None
    provider: str | None
    bounce: str | None
    reason: str | None
    url: str | None
    machine: bool

    @classmethod
    def of(cls, event_id: int, row: dict[str, Any]) -> RecordedEvent:
        return cls(
            event_id, row["type"], row["occurred_at"], row["campaign_id"], row["subscriber_id"],
            row["delivery_id"], row["provider"], row["bounce"], row["reason"], row["url"],
            row["machine"],
        )  # fmt: skip
