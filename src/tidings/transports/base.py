"""The transport interface: every way of handing mail to the world takes a batch of finished
messages and answers, for each, accepted / transient / permanent.

A transport never raises for a message it could not send: the failure is that message's result
(a connection error is transient, an SMTP 5xx reply permanent), so one bad recipient never costs
the rest of the batch. Results come back in the order of the batch.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from tidings.delivery.mime import MessageContent
from tidings.tracking.bounces import classify, enhanced_status
from tidings.tracking.events import BounceKind


class Outcome(enum.StrEnum):
    accepted = "accepted"  # the server took responsibility for the message
    transient = "transient"  # try again later (4xx, timeouts, connection errors)
    permanent = "permanent"  # do not try again (5xx)


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    delivery_id: int
    sender: str  # the envelope sender (MAIL FROM, the return path bounces go to)
    recipient: str  # the envelope recipient (RCPT TO)
    data: bytes  # the whole RFC 5322 message, CRLF line endings, not dot-stuffed
    # The same message in parts, for APIs that build the MIME themselves (SendGrid, Postmark...)
    content: MessageContent | None = None


@dataclass(frozen=True, slots=True)
class SendResult:
    delivery_id: int
    outcome: Outcome
    detail: str = ""  # the server's reply or the error, for the delivery's log
    provider_message_id: str | None = None
    retry_after: float | None = None  # seconds the provider asked us to wait (HTTP Retry-After)

    @property
    def status_code(self) -> str | None:
        """The RFC 3463 enhanced status code in ``detail`` ("5.1.1"), if there is one."""
        return enhanced_status(self.detail)

    @property
    def is_hard_bounce(self) -> bool:
        """A permanent failure with an enhanced code that blames the address, by the one rule
        of ``tracking.bounces`` (5.1.x, 5.2.1, 5.4.4)."""
        code = self.status_code
        return (
            self.outcome == Outcome.permanent
            and code is not None
            and classify(code) is BounceKind.hard
        )


class Transport(Protocol):
    name: str  # as recorded on deliveries ("smtp", "maildir", ...)
    # Takes a message's parts (subject, bodies, headers: ``OutgoingMessage.content``) rather
    # than its MIME bytes; messages are composed with their parts only when a transport does.
    needs_parts: bool

    async def send(self, batch: Sequence[OutgoingMessage]) -> list[SendResult]:
        """Send every message of the batch; one result per message, in batch order."""
        ...

    async def close(self) -> None:
        """Release connections; the transport is not used again."""
        ...
