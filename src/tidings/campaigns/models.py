"""Tables of templates, campaigns, their runs, and deliveries (the outbox, one row per recipient).

A campaign says what to send to whom and when; each time it fires, the scheduler creates a
campaign run and materializes one delivery per recipient, which the delivery workers send.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from tidings.campaigns.recurrence import Frequency, Schedule, describe
from tidings.db.base import Base, JSONType, Timestamped
from tidings.db.ids import BigId
from tidings.db.types import UTCDateTime, utcnow


class Channel(enum.StrEnum):
    email = "email"
    sms = "sms"
    push = "push"


class CampaignStatus(enum.StrEnum):
    draft = "draft"
    scheduled = "scheduled"
    running = "running"
    paused = "paused"
    done = "done"
    cancelled = "cancelled"


class RunStatus(enum.StrEnum):
    materializing = "materializing"  # deliveries being written (resumed after a crash)
    sending = "sending"
    paused = "paused"
    done = "done"
    cancelled = "cancelled"


class DeliveryStatus(enum.StrEnum):
    queued = "queued"
    sending = "sending"
    sent = "sent"
    failed = "failed"
    suppressed = "suppressed"


# Deliveries the workers have yet to finish: the predicate of the work-queue index, and the same
# condition for queries, spelled with literals so that PostgreSQL proves it in every plan.
PENDING_SQL = "status IN ('queued', 'sending')"
PENDING = text(f"deliveries.{PENDING_SQL}")


class Template(Timestamped, Base):
    """Reusable content: a subject, HTML and text in sandboxed Jinja2; a layout is extended."""

    __tablename__ = "templates"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False, unique=True)
    description: Mapped[str] = mapped_column(Text, nullable=False, default="")
    is_layout: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    subject: Mapped[str] = mapped_column(Text, nullable=False, default="")
    html: Mapped[str] = mapped_column(Text, nullable=False, default="")
    text: Mapped[str | None] = mapped_column(Text)


class Campaign(Timestamped, Base):
    __tablename__ = "campaigns"
    __table_args__ = (Index(None, "status", "next_run_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    origin: Mapped[str] = mapped_column(String(16), nullable=False, default="api")  # or content
    channel: Mapped[str] = mapped_column(String(8), nullable=False, default=Channel.email.value)
    status: Mapped[str] = mapped_column(
        String(12), nullable=False, default=CampaignStatus.draft.value
    )
    # What: a template, or inline content (both sandboxed Jinja2).
    template_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("templates.id", ondelete="RESTRICT")
    )
    subject: Mapped[str] = mapped_column(Text, nullable=False, default="")
    html: Mapped[str | None] = mapped_column(Text)
    text: Mapped[str | None] = mapped_column(Text)
    from_name: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    from_email: Mapped[str | None] = mapped_column(String(320))
    reply_to: Mapped[str | None] = mapped_column(String(320))
    track_opens: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    track_clicks: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    utm: Mapped[dict[str, str]] = mapped_column(JSONType, nullable=False, default=dict)
    # Whom: topic ids, segment id, promotion id, tags (see campaigns.audience.Audience).
    audience: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, default=dict)
    # When: a first run and an optional recurrence (see campaigns.recurrence.Schedule).
    schedule_time: Mapped[datetime | None] = mapped_column(UTCDateTime())
    timezone: Mapped[str] = mapped_column(String(64), nullable=False, default="UTC")
    frequency: Mapped[str | None] = mapped_column(String(12))
    interval: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    rrule: Mapped[str | None] = mapped_column(Text)
    until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    count: Mapped[int | None] = mapped_column(Integer)
    catch_up: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    next_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    runs: Mapped[int] = mapped_column(Integer, nullable=False, default=0)

    @property
    def type(self) -> str:
        """Seed 003's one_time / recurring."""
        return "recurring" if self.frequency or self.rrule else "one_time"

    def schedule(self) -> Schedule | None:
        """The campaign's schedule, or None while it has no time to run."""
        if self.schedule_time is None:
            return None
        return Schedule(
            start=self.schedule_time,
            timezone=self.timezone,
            frequency=Frequency(self.frequency) if self.frequency else None,
            interval=self.interval,
            rrule=self.rrule,
            until=self.until,
            count=self.count,
        )

    @property
    def recurrence(self) -> str:
        """The schedule in words (seed 003's "Recurrence Message")."""
        schedule = self.schedule()
        return describe(schedule) if schedule else "not scheduled"


class CampaignRun(Timestamped, Base):
    """One firing of a campaign. Unique per scheduled instant: replicas never fire a slot twice."""

    __tablename__ = "campaign_runs"
    __table_args__ = (UniqueConstraint("campaign_id", "scheduled_for"), Index(None, "status"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("campaigns.id", ondelete="CASCADE"), nullable=False
    )
    status: Mapped[str] = mapped_column(
        String(16), nullable=False, default=RunStatus.materializing.value
    )
    scheduled_for: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    materialized_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Progress, kept by the workers as they record each batch: queued counts down from total.
    total: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    queued: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    sent: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    failed: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    suppressed: Mapped[int] = mapped_column(Integer, nullable=False, default=0)

    @property
    def finished(self) -> int:
        return self.sent + self.failed + self.suppressed

    @property
    def rate_per_second(self) -> float | None:
        """Deliveries finished per second since the run was materialized (until it ended)."""
        if self.materialized_at is None or not self.finished:
            return None
        seconds = ((self.finished_at or utcnow()) - self.materialized_at).total_seconds()
        return round(self.finished / max(seconds, 0.001), 1)

    @property
    def eta_seconds(self) -> float | None:
        """Seconds until the rest is sent at the current rate (None: unknown, 0: finished)."""
        if self.status in (RunStatus.done.value, RunStatus.cancelled.value):
            return 0.0
        rate = self.rate_per_second
        return round(max(self.queued, 0) / rate, 1) if rate else None


class Delivery(Base):
    """The outbox and the per-recipient log. Few indexes and no foreign keys on purpose: a run
    writes a row for every recipient at once, and each index or foreign-key check costs that
    insert (the two foreign keys doubled it: see bench/materialize.py). Deleting a campaign
    deletes its deliveries explicitly; subscribers are never deleted (erasure keeps the row)."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("run_id", "subscriber_id"),
        # The work queue: only deliveries still to send are in it, so it stays small whatever
        # the table holds, and claiming, and telling that a run is finished, are index probes.
        Index(
            "ix_deliveries_pending",
            "run_id",
            "next_attempt_at",
            postgresql_where=text(PENDING_SQL),
            sqlite_where=text(PENDING_SQL),
        ),
        Index(None, "subscriber_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    run_id: Mapped[int] = mapped_column(BigId, nullable=False)
    subscriber_id: Mapped[int] = mapped_column(BigId, nullable=False)
    status: Mapped[str] = mapped_column(
        String(12), nullable=False, default=DeliveryStatus.queued.value
    )
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # While queued: when it may be sent. While sending: when the lease ends, after which any
    # worker may claim it again (the same instant as lease_until, so one index serves both).
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    provider: Mapped[str | None] = mapped_column(String(100))
    route: Mapped[str | None] = mapped_column(String(100))  # why that provider: the rule's name
    provider_message_id: Mapped[str | None] = mapped_column(String(255))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
