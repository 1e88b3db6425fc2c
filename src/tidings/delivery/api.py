"""HTTP routes of the delivery log: a campaign's deliveries, a subscriber's deliveries."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from tidings.campaigns.models import DeliveryStatus
from tidings.delivery import history
from tidings.delivery.schemas import DeliveryOut
from tidings.deps import ReadActor, SessionDep
from tidings.pagination import DEFAULT_LIMIT, Cursor, Limit, Offset, Page, PathId, page

router = APIRouter(tags=["deliveries"])


@router.get("/campaigns/{campaign_id}/deliveries", response_model=Page[DeliveryOut])
async def campaign_deliveries(
    campaign_id: PathId,
    session: SessionDep,
    _: ReadActor,
    status: Annotated[DeliveryStatus | None, Query(description="Only this status.")] = None,
    run_id: Annotated[int | None, Query(ge=1, description="Only this run.")] = None,
    limit: Limit = DEFAULT_LIMIT,
    offset: Offset = 0,
    cursor: Cursor = None,
) -> object:
    """Every recipient of the campaign's runs: status, attempts, last error, provider id."""
    found = await history.campaign_deliveries(
        session,
        campaign_id,
        status=status,
        run_id=run_id,
        limit=limit,
        offset=offset,
        cursor=cursor,
    )
    return page(found.items, found.total, limit, offset, found.next_cursor)


@router.get("/subscribers/{ref}/deliveries", response_model=Page[DeliveryOut])
async def subscriber_deliveries(
    ref: str,
    session: SessionDep,
    _: ReadActor,
    limit: Limit = DEFAULT_LIMIT,
    offset: Offset = 0,
    cursor: Cursor = None,
) -> object:
    """Every message sent (or to be sent) to one subscriber, by id or e-mail address."""
    found = await history.subscriber_deliveries(
        session, ref, limit=limit, offset=offset, cursor=cursor
    )
    return page(found.items, found.total, limit, offset, found.next_cursor)
