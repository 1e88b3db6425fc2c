"""Outgoing webhooks as data: the endpoints users register, and one delivery row per event and
endpoint, which is both the work queue of the sender and the log users read."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from tidings.db.base import Base, JSONType, Timestamped
from tidings.db.ids import BigId
from tidings.db.types import EncryptedText, UTCDateTime, utcnow


class HookStatus(enum.StrEnum):
    pending = "pending"  # waiting for its next attempt, or being attempted (leased)
    succeeded = "succeeded"
    failed = "failed"  # every attempt failed


PENDING_SQL = "status = 'pending'"


class WebhookEndpoint(Timestamped, Base):
    __tablename__ = "webhook_endpoints"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False, unique=True)
    url: Mapped[str] = mapped_column(Text, nullable=False)
    event_types: Mapped[list[str]] = mapped_column(JSONType, nullable=False)
    # The Standard Webhooks secret (whsec_...), encrypted with the PII keys.
    secret: Mapped[str] = mapped_column(EncryptedText(), nullable=False)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    # Failed attempts in a row, whatever their delivery: reaching the limit disables it.
    consecutive_failures: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_failure_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class WebhookDelivery(Base):
    """One event for one endpoint. ``(endpoint_id, event_id)`` is unique, so an event is sent to
    an endpoint once however often it is enqueued (a test delivery has no event)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("endpoint_id", "event_id"),
        Index(None, "endpoint_id", "id"),  # an endpoint's log, newest first
        # The work queue: only pending rows, so it stays small however long the log grows.
        Index(
            "ix_webhook_deliveries_pending",
            "next_attempt_at",
            postgresql_where=text(PENDING_SQL),
            sqlite_where=text(PENDING_SQL),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), nullable=False
    )
    event_id: Mapped[int | None] = mapped_column(BigId)  # no foreign key, like events' own
    event_type: Mapped[str] = mapped_column(String(16), nullable=False)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    status: Mapped[str] = mapped_column(
        String(12), nullable=False, default=HookStatus.pending.value
    )
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # While pending: when it may be attempted. While attempted: the end of the lease, after
    # which another sender may take it (so one index serves both).
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_response: Mapped[str | None] = mapped_column(Text)  # the first KB of the body
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
