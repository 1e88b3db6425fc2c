"""Analytics routes: seed 002's ``/campaigns/{id}/stats``, ``/analytics/trends`` and
``/analytics/subscriber/{id}/history``, seed 003's ``/analytics/`` and
``/analytics/{campaign_id}``, and seed 002's ``POST /engagement/track``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Query, Request, status

from tidings.analytics import service
from tidings.analytics.schemas import CampaignStatsOut, HistoryItemOut, TrendPointOut
from tidings.db.types import utcnow
from tidings.deps import ReadActor, SessionDep, WriteActor
from tidings.errors import RuleViolation
from tidings.pagination import DEFAULT_LIMIT, Limit, Offset, Page, PathId, page
from tidings.tracking.endpoints import Tracker
from tidings.tracking.webhooks.standard import MAX_EVENTS, GenericEvent

router = APIRouter(tags=["analytics"])
SubscriberRef = Annotated[
    str, Path(min_length=1, max_length=320, description="A subscriber id or e-mail address.")
]


@router.get("/campaigns/{campaign_id}/stats", response_model=CampaignStatsOut)
async def campaign_stats(campaign_id: PathId, session: SessionDep, _: ReadActor) -> object:
    """Sent, failed, delivered, opened and clicked (unique, by people), bounced, complained,
    unsubscribed, with rates over messages sent."""
    return await service.campaign_stats(session, campaign_id)


@router.get("/analytics/", response_model=Page[CampaignStatsOut])
async def all_campaigns(
    session: SessionDep, _: ReadActor, limit: Limit = DEFAULT_LIMIT, offset: Offset = 0
) -> object:
    """Every campaign's statistics (seed 003)."""
    items, total = await service.all_campaign_stats(session, limit=limit, offset=offset)
    return page(items, total, limit, offset)


@router.get("/analytics/trends", response_model=list[TrendPointOut])
async def trends(
    session: SessionDep,
    _: ReadActor,
    days: Annotated[int, Query(ge=1, le=366, description="Days back from today (UTC).")] = 30,
) -> object:
    """Per day: messages sent, and messages opened, clicked (by people), bounced, complained,
    and unsubscribes."""
    return await service.trends(session, days, utcnow())


@router.get("/analytics/subscriber/{ref}/history", response_model=Page[HistoryItemOut])
async def subscriber_history(
    ref: SubscriberRef,
    session: SessionDep,
    _: ReadActor,
    limit: Limit = DEFAULT_LIMIT,
    offset: Offset = 0,
) -> object:
    """Every delivery to the subscriber and every event about them, newest first."""
    found = await service.subscriber_history(session, ref, limit=limit, offset=offset)
    return page(found.items, found.total, limit, offset)


@router.get("/analytics/{campaign_id}", response_model=CampaignStatsOut)
async def campaign_analytics(campaign_id: PathId, session: SessionDep, _: ReadActor) -> object:
    """One campaign's statistics (seed 003); the same as ``/campaigns/{id}/stats``."""
    return await service.campaign_stats(session, campaign_id)


@router.post("/engagement/track", status_code=status.HTTP_202_ACCEPTED, tags=["tracking"])
async def track(
    request: Request,
    _: WriteActor,
    events: Annotated[
        GenericEvent | list[GenericEvent],
        Body(description=f"One event or a list of up to {MAX_EVENTS}; `id` makes it idempotent."),
    ],
) -> dict[str, int]:
    """Record events from a trusted client (an app that saw an open, a CRM that took an
    unsubscribe): the same shape as ``/webhooks/generic``, stored before the answer."""
    batch = events if isinstance(events, list) else [events]
    if len(batch) > MAX_EVENTS:
        raise RuleViolation(f"{len(batch)} events in one request; at most {MAX_EVENTS}")
    tracker: Tracker = request.app.state.tracker
    await tracker.sink.write_now([event.to_event(source="api") for event in batch])
    return {"accepted": len(batch)}
