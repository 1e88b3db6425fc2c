"""Sending providers as data: which services mail goes through, with their (encrypted)
credentials, weights, priorities and rate limits; the routing rules between them; and what the
fleet shares while sending (pace, usage windows, warming, statistics, worker heartbeats)."""

from __future__ import annotations

import enum
from datetime import date, datetime
from typing import Any

from sqlalchemy import Boolean, Date, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from tidings.db.base import Base, JSONType, Timestamped
from tidings.db.ids import BigId
from tidings.db.types import EncryptedText, UTCDateTime, utcnow


class ProviderKind(enum.StrEnum):
    smtp = "smtp"
    ses = "ses"
    sendgrid = "sendgrid"
    postmark = "postmark"
    mailgun = "mailgun"
    azure = "azure"
    http = "http"
    maildir = "maildir"
    console = "console"


class Provider(Timestamped, Base):
    __tablename__ = "providers"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False, unique=True)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    priority: Mapped[int] = mapped_column(Integer, nullable=False, default=0)  # lower goes first
    weight: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    domains: Mapped[list[str]] = mapped_column(JSONType, nullable=False, default=list)
    settings: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, default=dict)
    # A JSON object of secrets (API keys, passwords), encrypted with the PII keys.
    credentials: Mapped[str] = mapped_column(EncryptedText(), nullable=False, default="{}")
    per_second: Mapped[int | None] = mapped_column(Integer)
    per_minute: Mapped[int | None] = mapped_column(Integer)
    per_hour: Mapped[int | None] = mapped_column(Integer)
    per_day: Mapped[int | None] = mapped_column(Integer)
    timezone: Mapped[str] = mapped_column(String(64), nullable=False, default="UTC")
    warming_plan: Mapped[dict[str, Any] | None] = mapped_column(JSONType)


class RoutingRule(Timestamped, Base):
    """A routing rule, tried in ``position`` order before load balancing: recipients at one of
    ``recipient_domains``, or with an engagement score of at least ``min_engagement_score``, go to
    ``provider_id`` (None: the healthy provider with the best reputation)."""

    __tablename__ = "routing_rules"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False, unique=True)
    position: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    recipient_domains: Mapped[list[str]] = mapped_column(JSONType, nullable=False, default=list)
    min_engagement_score: Mapped[float | None] = mapped_column(Float)
    provider_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("providers.id", ondelete="CASCADE")
    )


class ProviderState(Base):
    """What the fleet shares about a provider while sending: its pace (the per-second limit as
    a GCRA: the theoretical arrival time of the next message), a pause, and its warming day.
    Its row is also the lock every quota grant for the provider takes."""

    __tablename__ = "provider_state"

    provider_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("providers.id", ondelete="CASCADE"), primary_key=True
    )
    grants: Mapped[int] = mapped_column(BigId, nullable=False, default=0)
    paced_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    paused_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    paused_reason: Mapped[str | None] = mapped_column(Text)
    warming_day: Mapped[int | None] = mapped_column(Integer)  # the plan's day, from 1
    warming_date: Mapped[date | None] = mapped_column(Date)  # the local date it applies to
    warming_cap: Mapped[int | None] = mapped_column(Integer)  # that date's cap, as adjusted


class ProviderUsage(Base):
    """Messages granted to a provider in its current minute, hour and day (the day in the
    provider's timezone); a window that has passed counts from zero again."""

    __tablename__ = "provider_usage"

    provider_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("providers.id", ondelete="CASCADE"), primary_key=True
    )
    period: Mapped[str] = mapped_column(String(8), primary_key=True)  # minute, hour, day
    window_start: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    used: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class WarmingAdjustment(Base):
    """What the warming plan did on a day and why (advance, hold, cut, pause)."""

    __tablename__ = "warming_adjustments"
    __table_args__ = (Index(None, "provider_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    provider_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("providers.id", ondelete="CASCADE"), nullable=False
    )
    day: Mapped[date] = mapped_column(Date, nullable=False)
    plan_day: Mapped[int] = mapped_column(Integer, nullable=False)
    cap: Mapped[int] = mapped_column(Integer, nullable=False)
    action: Mapped[str] = mapped_column(String(16), nullable=False)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)


class ProviderStats(Base):
    """Per provider and minute: what happened to the mail it took. Workers add sends; feedback
    (webhooks) adds deliveries, bounces, complaints, opens and clicks. Rolling windows are sums
    over the minutes they span."""

    __tablename__ = "provider_stats"

    provider_id: Mapped[int] = mapped_column(BigId, primary_key=True)
    minute: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    sent: Mapped[int] = mapped_column(Integer, nullable=False, default=0)  # accepted
    deferred: Mapped[int] = mapped_column(Integer, nullable=False, default=0)  # transient
    failed: Mapped[int] = mapped_column(Integer, nullable=False, default=0)  # permanent
    delivered: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    bounced_hard: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    bounced_soft: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    complained: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    opened: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    clicked: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # Latency of send calls: a histogram, one count per bucket (see provider_stats.BUCKETS_MS).
    latency: Mapped[list[int]] = mapped_column(JSONType, nullable=False, default=list)


class WorkerBeat(Base):
    """A delivery worker process, as last seen: where it runs, how fast it sends, and the state
    of its circuit breakers (each process keeps its own)."""

    __tablename__ = "workers"
    __table_args__ = (Index(None, "seen_at"),)

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    host: Mapped[str] = mapped_column(String(255), nullable=False)
    pid: Mapped[int] = mapped_column(Integer, nullable=False)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    sent: Mapped[int] = mapped_column(BigId, nullable=False, default=0)
    rate_per_second: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    circuits: Mapped[dict[str, str]] = mapped_column(JSONType, nullable=False, default=dict)
