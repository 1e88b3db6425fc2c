"""Feedback as data: every event (one normalized row per open, click, bounce...), the links of
each campaign that clicks go through, and the one-time tokens of signed webhooks."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tidings.db.base import Base, JSONType
from tidings.db.ids import BigId
from tidings.db.types import UTCDateTime, utcnow


class Event(Base):
    """One thing that happened to a message or a subscriber. ``(source, source_event_id)`` is
    unique, so a provider replaying a webhook, or a report received twice, adds nothing.
    Like ``deliveries``, no foreign keys: events arrive in bulk and outlive what they name."""

    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("source", "source_event_id"),
        Index(None, "campaign_id", "type"),
        Index(None, "subscriber_id", "occurred_at"),
        Index(None, "delivery_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    type: Mapped[str] = mapped_column(String(16), nullable=False)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    source: Mapped[str] = mapped_column(String(32), nullable=False)
    source_event_id: Mapped[str | None] = mapped_column(String(255))
    delivery_id: Mapped[int | None] = mapped_column(BigId)
    campaign_id: Mapped[int | None] = mapped_column(BigId)
    subscriber_id: Mapped[int | None] = mapped_column(BigId)
    provider: Mapped[str | None] = mapped_column(String(100))  # the delivery's provider name
    bounce: Mapped[str | None] = mapped_column(String(8))
    reason: Mapped[str | None] = mapped_column(Text)
    url: Mapped[str | None] = mapped_column(Text)
    machine: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    user_agent: Mapped[str | None] = mapped_column(String(512))
    raw: Mapped[dict[str, Any] | None] = mapped_column(JSONType)


class Link(Base):
    """A URL of a campaign that clicks are counted through: the click token names it by id.
    ``url`` is where a click goes (the original with the campaign's UTM parameters);
    ``original_hash`` (SHA-256 of the original) finds it again when the next batch has it."""

    __tablename__ = "links"
    __table_args__ = (UniqueConstraint("campaign_id", "original_hash"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(BigId, nullable=False)
    original_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    url: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)


class WebhookNonce(Base):
    """A token a signed webhook may use once (Mailgun's), kept until its time window ends."""

    __tablename__ = "webhook_nonces"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, index=True)
