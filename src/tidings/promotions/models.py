"""Tables of promotions and promotion subscriptions (seed 004)."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tidings.db.base import Base, JSONType, Timestamped
from tidings.db.ids import BigId
from tidings.db.types import UTCDateTime


class PromotionStatus(enum.StrEnum):
    draft = "draft"
    active = "active"
    ended = "ended"


class Promotion(Timestamped, Base):
    __tablename__ = "promotions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False, default="")
    status: Mapped[str] = mapped_column(
        String(8), nullable=False, default=PromotionStatus.draft.value, index=True
    )
    start_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    end_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    activated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class PromotionSubscription(Timestamped, Base):
    """A subscriber's sign-up to an ACTIVE promotion; deactivated, never deleted."""

    __tablename__ = "promotion_subscriptions"
    __table_args__ = (
        UniqueConstraint("subscriber_id", "promotion_id"),
        # The indexes seed 004 lists, for its two list queries with and without is_active.
        Index(None, "subscriber_id"),
        Index(None, "promotion_id"),
        Index(None, "is_active"),
        Index(None, "subscriber_id", "is_active"),
        Index(None, "promotion_id", "is_active"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("subscribers.id", ondelete="CASCADE"), nullable=False
    )
    promotion_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("promotions.id", ondelete="CASCADE"), nullable=False
    )
    is_active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    # "metadata" is reserved on declarative classes; the column keeps seed 004's name.
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSONType, nullable=False, default=dict)
    deactivated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
