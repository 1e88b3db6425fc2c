"""Reading the per-recipient log: a campaign's deliveries, a subscriber's deliveries."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from tidings.audience.subscribers import find_subscriber
from tidings.campaigns.models import CampaignRun, Delivery, DeliveryStatus
from tidings.campaigns.service import get_campaign
from tidings.pagination import decode_cursor, encode_cursor


@dataclass(frozen=True)
class DeliveryPage:
    items: list[Delivery]
    total: int
    next_cursor: str | None


async def campaign_deliveries(
    session: AsyncSession,
    campaign_id: int,
    *,
    status: DeliveryStatus | None,
    run_id: int | None,
    limit: int,
    offset: int,
    cursor: str | None,
) -> DeliveryPage:
    """Deliveries of a campaign's runs (or of one run), oldest first."""
    await get_campaign(session, campaign_id)
    runs = select(CampaignRun.id).where(CampaignRun.campaign_id == campaign_id)
    if run_id is not None:
        runs = runs.where(CampaignRun.id == run_id)
    query = select(Delivery).where(Delivery.run_id.in_(runs.scalar_subquery()))
    if status is not None:
        query = query.where(Delivery.status == status.value)
    return await _page(session, query, limit, offset, cursor)


async def subscriber_deliveries(
    session: AsyncSession, ref: str | int, *, limit: int, offset: int, cursor: str | None
) -> DeliveryPage:
    subscriber = await find_subscriber(session, ref)
    query = select(Delivery).where(Delivery.subscriber_id == subscriber.id)
    return await _page(session, query, limit, offset, cursor)


async def _page(
    session: AsyncSession,
    query: Select[Delivery],
    limit: int,
    offset: int,
    cursor: str | None,
) -> DeliveryPage:
    total = await session.scalar(select(func.count()).select_from(query.subquery()))
    if cursor is not None:  # keyset: constant time at any depth, unlike a large offset
        query = query.where(Delivery.id > decode_cursor(cursor))
        offset = 0
    rows = await session.scalars(query.order_by(Delivery.id).limit(limit).offset(offset))
    items = list(rows.all())
    next_cursor = encode_cursor(items[-1].id) if len(items) == limit else None
    return DeliveryPage(items, int(total or 0), next_cursor)
