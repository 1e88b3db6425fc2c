"""Tables of the audience: subscribers (PII encrypted), their tags, topics and subscriptions."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Float, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from tidings.db.base import POSTGRESQL_ONLY, Base, JSONType, Timestamped
from tidings.db.ids import BigId
from tidings.db.types import BlindIndex, EncryptedText, TagList, UTCDateTime, utcnow


class SubscriberStatus(enum.StrEnum):
    active = "active"
    unsubscribed = "unsubscribed"
    bounced = "bounced"
    complained = "complained"
    erased = "erased"  # GDPR erasure: a tombstone without personal data


class OptIn(enum.StrEnum):
    single = "single"
    double = "double"


class TopicSubscriptionStatus(enum.StrEnum):
    pending = "pending"  # awaiting double opt-in confirmation
    active = "active"
    unsubscribed = "unsubscribed"


class Subscriber(Timestamped, Base):
    __tablename__ = "subscribers"
    __table_args__ = (
        Index("ix_subscribers_tags", "tags", postgresql_using="gin", info=POSTGRESQL_ONLY),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    email: Mapped[str] = mapped_column(EncryptedText(), nullable=False)
    # HMAC-SHA256 blind index of the normalized address: the only way to find a row by e-mail.
    email_hash: Mapped[str] = mapped_column(BlindIndex, nullable=False, unique=True)
    # The domain alone, in clear: segments and routing select by it, and it names no person.
    email_domain: Mapped[str] = mapped_column(String(255), nullable=False, index=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, default=dict)
    tags: Mapped[list[str]] = mapped_column(TagList(), nullable=False, default=list)
    timezone: Mapped[str | None] = mapped_column(String(64))
    phone: Mapped[str | None] = mapped_column(EncryptedText())
    status: Mapped[str] = mapped_column(
        String(16), nullable=False, default=SubscriberStatus.active.value, index=True
    )
    engagement_score: Mapped[float] = mapped_column(Float, nullable=False, default=0.0, index=True)
    last_opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The decayed sum the score is computed from, as of engaged_at (see tracking.engagement).
    engagement_sum: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    engaged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    unsubscribed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    status_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    # The import that last created or updated the row: provenance, and how an import recognises
    # an address that appeared earlier in the same file.
    last_import_id: Mapped[int | None] = mapped_column(BigId)


class Topic(Timestamped, Base):
    __tablename__ = "topics"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False, unique=True)
    description: Mapped[str] = mapped_column(Text, nullable=False, default="")
    is_public: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    optin: Mapped[str] = mapped_column(String(8), nullable=False, default=OptIn.single.value)


class TopicSubscription(Timestamped, Base):
    __tablename__ = "topic_subscriptions"
    __table_args__ = (
        UniqueConstraint("topic_id", "subscriber_id"),
        Index(None, "subscriber_id", "status"),
        Index(None, "topic_id", "status"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    topic_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("topics.id", ondelete="CASCADE"), nullable=False
    )
    subscriber_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("subscribers.id", ondelete="CASCADE"), nullable=False
    )
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    source: Mapped[str | None] = mapped_column(String(64))
    subscribed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    unsubscribed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    topic: Mapped[Topic] = relationship(lazy="joined")


class Segment(Timestamped, Base):
    """A named, saved audience rule (see segment_rules), evaluated live whenever it is used."""

    __tablename__ = "segments"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False, unique=True)
    description: Mapped[str] = mapped_column(Text, nullable=False, default="")
    rule: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)


class SuppressionReason(enum.StrEnum):
    unsubscribed = "unsubscribed"
    bounced = "bounced"
    complained = "complained"
    erased = "erased"
    manual = "manual"


class Suppression(Base):
    """An address (by blind index only) that is never mailed again, and why."""

    __tablename__ = "suppressions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    email_hash: Mapped[str] = mapped_column(BlindIndex, nullable=False, unique=True)
    reason: Mapped[str] = mapped_column(String(16), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)


class ImportStatus(enum.StrEnum):
    running = "running"
    done = "done"
    failed = "failed"


class ImportJob(Timestamped, Base):
    """One bulk import: its options, how far it got (for resuming), and its counts."""

    __tablename__ = "imports"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    source: Mapped[str] = mapped_column(String(255), nullable=False)
    checksum: Mapped[str | None] = mapped_column(String(64), index=True)
    options: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    status: Mapped[str] = mapped_column(String(8), nullable=False)
    lines_done: Mapped[int] = mapped_column(BigId, nullable=False, default=0)
    inserted: Mapped[int] = mapped_column(BigId, nullable=False, default=0)
    updated: Mapped[int] = mapped_column(BigId, nullable=False, default=0)
    skipped: Mapped[int] = mapped_column(BigId, nullable=False, default=0)
    failed: Mapped[int] = mapped_column(BigId, nullable=False, default=0)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class ImportRejection(Base):
    """A row an import did not take, by line number, with the reason (never the row itself)."""

    __tablename__ = "import_rejections"

    import_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("imports.id", ondelete="CASCADE"), primary_key=True
    )
    line: Mapped[int] = mapped_column(BigId, primary_key=True)
    reason: Mapped[str] = mapped_column(String(300), nullable=False)
