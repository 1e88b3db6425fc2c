"""Promotion rules (seed 004): the one-way lifecycle, per-state edit rules, and subscriptions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from tidings import transitions
from tidings.audience.subscribers import find_subscriber
from tidings.db.errors import flush_unique
from tidings.db.ids import get_by_id
from tidings.db.types import utcnow
from tidings.errors import Conflict, NotFound, RuleViolation
from tidings.promotions.models import Promotion, PromotionStatus, PromotionSubscription
from tidings.promotions.schemas import (
    PromotionCreate,
    PromotionSubscriptionCreate,
    PromotionUpdate,
)
from tidings.security.audit import record_audit

S = PromotionStatus
# The lifecycle, as data: where each status may go next. Nothing goes back, nothing is skipped.
TRANSITIONS: dict[PromotionStatus, tuple[PromotionStatus, ...]] = {
    S.draft: (S.active,),
    S.active: (S.ended,),
    S.ended: (),
}
EDITABLE_FIELDS: dict[PromotionStatus, tuple[str, ...]] = {
    S.draft: ("name", "description", "start_at", "end_at"),
    S.active: ("name", "description"),
    S.ended: (),
}


class PromotionError(RuleViolation):
    code = "promotion_rule"


class IllegalTransition(PromotionError):
    code = "illegal_transition"


class ReadOnlyField(PromotionError):
    code = "read_only_field"


class InvalidTimeRange(PromotionError):
    code = "invalid_time_range"


class PromotionNotFound(NotFound):
    pass


class PromotionNotActive(PromotionError):
    code = "promotion_not_active"


class DuplicatePromotionSubscription(Conflict):
    code = "duplicate_subscription"


class SubscriptionNotFound(NotFound):
    pass


class SubscriptionAlreadyInactive(RuleViolation):
    code = "already_inactive"


def check_transition(current: PromotionStatus, target: PromotionStatus) -> None:
    transitions.check_transition(TRANSITIONS, current, target, "promotion", IllegalTransition)


def check_editable(status: PromotionStatus, fields: set[str]) -> None:
    refused = sorted(fields - set(EDITABLE_FIELDS[status]))
    if refused:
        editable = ", ".join(EDITABLE_FIELDS[status]) or "none (the promotion is read-only)"
        raise ReadOnlyField(
            f"cannot change {', '.join(refused)} of a {status} promotion; editable: {editable}"
        )


def check_time_range(start_at: datetime, end_at: datetime) -> None:
    if end_at <= start_at:
        raise InvalidTimeRange(
            f"end_at ({end_at.isoformat()}) must be after start_at ({start_at.isoformat()})"
        )


async def get_promotion(session: AsyncSession, promotion_id: int) -> Promotion:
    promotion = await get_by_id(session, Promotion, promotion_id)
    if promotion is None:
        raise PromotionNotFound(f"no promotion with id {promotion_id}")
    return promotion


async def create_promotion(session: AsyncSession, data: PromotionCreate, actor: str) -> Promotion:
    check_time_range(data.start_at, data.end_at)
    promotion = Promotion(
        name=data.name,
        description=data.description,
        start_at=data.start_at,
        end_at=data.end_at,
        status=S.draft.value,
    )
    session.add(promotion)
    await session.flush()
    record_audit(session, actor, "promotion.create", "promotion", promotion.id)
    await session.commit()
    return promotion


async def list_promotions(
    session: AsyncSession, *, status: PromotionStatus | None, limit: int, offset: int
) -> tuple[list[Promotion], int]:
    query = select(Promotion)
    if status is not None:
        query = query.where(Promotion.status == status.value)
    total = int(await session.scalar(select(func.count()).select_from(query.subquery())) or 0)
    rows = await session.scalars(query.order_by(Promotion.id).limit(limit).offset(offset))
    return list(rows.all()), total


async def update_promotion(
    session: AsyncSession, promotion_id: int, data: PromotionUpdate, actor: str
) -> Promotion:
    promotion = await get_promotion(session, promotion_id)
    changes = {name: getattr(data, name) for name in data.model_fields_set}
    check_editable(S(promotion.status), set(changes))
    check_time_range(
        changes.get("start_at", promotion.start_at), changes.get("end_at", promotion.end_at)
    )
    for name, value in changes.items():
        setattr(promotion, name, value)
    record_audit(
        session, actor, "promotion.update", "promotion", promotion.id, {"fields": sorted(changes)}
    )
    await session.commit()
    return promotion


async def change_promotion_status(
    session: AsyncSession, promotion_id: int, target: PromotionStatus, actor: str
) -> Promotion:
    """Move a promotion one step along DRAFT → ACTIVE → ENDED."""
    promotion = await get_promotion(session, promotion_id)
    current = S(promotion.status)
    check_transition(current, target)
    promotion.status = target.value
    if target == S.active:
        promotion.activated_at = utcnow()
    elif target == S.ended:
        promotion.ended_at = utcnow()
    record_audit(
        session, actor, f"promotion.{target}", "promotion", promotion.id, {"from": current.value}
    )
    await session.commit()
    return promotion


async def subscribe_to_promotion(
    session: AsyncSession, data: PromotionSubscriptionCreate, actor: str
) -> PromotionSubscription:
    subscriber = await find_subscriber(session, data.subscriber_id)
    promotion = await get_promotion(session, data.promotion_id)
    if promotion.status != S.active:
        raise PromotionNotActive(
            f"promotion {promotion.id} is {promotion.status}; only active promotions take "
            "subscriptions"
        )
    subscriber_id, promotion_id = subscriber.id, promotion.id
    subscription = PromotionSubscription(
        subscriber_id=subscriber_id, promotion_id=promotion_id, meta=data.metadata, is_active=True
    )
    session.add(subscription)
    duplicate = DuplicatePromotionSubscription(
        f"subscriber {subscriber_id} is already subscribed to promotion {promotion_id}"
    )
    await flush_unique(
        session, duplicate, "promotion_subscriptions", "subscriber_id", "promotion_id"
    )
    record_audit(
        session,
        actor,
        "promotion_subscription.create",
        "promotion_subscription",
        subscription.id,
        {"subscriber_id": subscriber_id, "promotion_id": promotion_id},
    )
    await session.commit()
    return subscription


@dataclass(frozen=True)
class SubscriptionFilter:
    subscriber_id: int | None = None
    promotion_id: int | None = None
    is_active: bool | None = None

    def __post_init__(self) -> None:
        if (self.subscriber_id is None) == (self.promotion_id is None):
            raise RuleViolation("give exactly one of user_id (or subscriber_id) and promotion_id")


async def list_promotion_subscriptions(
    session: AsyncSession, filters: SubscriptionFilter, *, limit: int, offset: int
) -> tuple[list[PromotionSubscription], int]:
    query = select(PromotionSubscription)
    if filters.subscriber_id is not None:
        query = query.where(PromotionSubscription.subscriber_id == filters.subscriber_id)
    if filters.promotion_id is not None:
        query = query.where(PromotionSubscription.promotion_id == filters.promotion_id)
    if filters.is_active is not None:
        query = query.where(PromotionSubscription.is_active == filters.is_active)
    total = int(await session.scalar(select(func.count()).select_from(query.subquery())) or 0)
    rows = await session.scalars(
        query.order_by(PromotionSubscription.id).limit(limit).offset(offset)
    )
    return list(rows.all()), total


async def deactivate_promotion_subscription(
    session: AsyncSession, subscription_id: int, actor: str
) -> PromotionSubscription:
    """Soft delete: the row stays for history, marked inactive with a timestamp."""
    subscription = await get_by_id(session, PromotionSubscription, subscription_id)
    if subscription is None:
        raise SubscriptionNotFound(f"no subscription with id {subscription_id}")
    if not subscription.is_active:
        raise SubscriptionAlreadyInactive(f"subscription {subscription_id} is already inactive")
    subscription.is_active = False
    subscription.deactivated_at = utcnow()
    record_audit(
        session,
        actor,
        "promotion_subscription.deactivate",
        "promotion_subscription",
        subscription.id,
    )
    await session.commit()
    return subscription
