"""HTTP routes of seed 004: /promotions and /subscriptions, exactly as its README describes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from tidings.db.ids import MAX_ID
from tidings.deps import ReadActor, SessionDep, WriteActor
from tidings.errors import RuleViolation
from tidings.pagination import DEFAULT_LIMIT, Limit, Offset, Page, PathId, page
from tidings.promotions import service
from tidings.promotions.models import PromotionStatus, PromotionSubscription
from tidings.promotions.schemas import (
    PromotionCreate,
    PromotionOut,
    PromotionSubscriptionCreate,
    PromotionSubscriptionOut,
    PromotionUpdate,
    StatusChange,
)

promotions = APIRouter(prefix="/promotions", tags=["promotions"])
subscriptions = APIRouter(prefix="/subscriptions", tags=["promotions"])

OptionalId = Annotated[int | None, Query(ge=1, le=MAX_ID)]


@promotions.post("", status_code=status.HTTP_201_CREATED, response_model=PromotionOut)
async def create_promotion(body: PromotionCreate, session: SessionDep, actor: WriteActor) -> object:
    """Create a promotion; it starts as a draft."""
    return await service.create_promotion(session, body, actor.label)


@promotions.get("", response_model=Page[PromotionOut])
async def list_promotions(
    session: SessionDep,
    _: ReadActor,
    status_: Annotated[PromotionStatus | None, Query(alias="status")] = None,
    limit: Limit = DEFAULT_LIMIT,
    offset: Offset = 0,
) -> object:
    items, total = await service.list_promotions(
        session, status=status_, limit=limit, offset=offset
    )
    return page(items, total, limit, offset)


@promotions.get("/{promotion_id}", response_model=PromotionOut)
async def get_promotion(promotion_id: PathId, session: SessionDep, _: ReadActor) -> object:
    return await service.get_promotion(session, promotion_id)


@promotions.patch("/{promotion_id}", response_model=PromotionOut)
async def update_promotion(
    promotion_id: PathId, body: PromotionUpdate, session: SessionDep, actor: WriteActor
) -> object:
    """Draft: every field may change. Active: name and description only. Ended: nothing."""
    return await service.update_promotion(session, promotion_id, body, actor.label)


@promotions.post("/{promotion_id}/status", response_model=PromotionOut)
async def change_status(
    promotion_id: PathId, body: StatusChange, session: SessionDep, actor: WriteActor
) -> object:
    """One step along draft → active → ended; never back, never skipping."""
    return await service.change_promotion_status(session, promotion_id, body.status, actor.label)


def _subscription_out(row: PromotionSubscription) -> PromotionSubscriptionOut:
    return PromotionSubscriptionOut(
        id=row.id,
        user_id=row.subscriber_id,
        subscriber_id=row.subscriber_id,
        promotion_id=row.promotion_id,
        is_active=row.is_active,
        metadata=row.meta,
        created_at=row.created_at,
        updated_at=row.updated_at,
        deactivated_at=row.deactivated_at,
    )


@subscriptions.post(
    "", status_code=status.HTTP_201_CREATED, response_model=PromotionSubscriptionOut
)
async def create_subscription(
    body: PromotionSubscriptionCreate, session: SessionDep, actor: WriteActor
) -> object:
    """Subscribe a subscriber (user_id) to an active promotion."""
    return _subscription_out(await service.subscribe_to_promotion(session, body, actor.label))


@subscriptions.get("", response_model=Page[PromotionSubscriptionOut])
async def list_subscriptions(
    session: SessionDep,
    _: ReadActor,
    user_id: OptionalId = None,
    subscriber_id: OptionalId = None,
    promotion_id: OptionalId = None,
    is_active: bool | None = None,
    limit: Limit = DEFAULT_LIMIT,
    offset: Offset = 0,
) -> object:
    """Exactly one of user_id (alias subscriber_id) and promotion_id."""
    if user_id is not None and subscriber_id is not None and user_id != subscriber_id:
        raise RuleViolation("user_id and subscriber_id name the same thing; give one")
    filters = service.SubscriptionFilter(
        subscriber_id=user_id if user_id is not None else subscriber_id,
        promotion_id=promotion_id,
        is_active=is_active,
    )
    rows, total = await service.list_promotion_subscriptions(
        session, filters, limit=limit, offset=offset
    )
    return page([_subscription_out(r) for r in rows], total, limit, offset)


@subscriptions.patch("/{subscription_id}/deactivate", response_model=PromotionSubscriptionOut)
async def deactivate_subscription(
    subscription_id: PathId, session: SessionDep, actor: WriteActor
) -> object:
    """Soft delete: the subscription stays on record as inactive."""
    row = await service.deactivate_promotion_subscription(session, subscription_id, actor.label)
    return _subscription_out(row)
