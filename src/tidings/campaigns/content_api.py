"""Seed 000's content API: a content item is a campaign (title → name and subject, body → HTML,
topic → audience, scheduled_time → its one run), so it is scheduled, sent and logged by the same
code as every campaign. Its id is the campaign's id."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status

from tidings.campaigns import service
from tidings.campaigns.models import Campaign
from tidings.campaigns.schemas import (
    CampaignCreate,
    CampaignRunOut,
    CampaignUpdate,
    ContentCreate,
    ContentOut,
    ContentUpdate,
)
from tidings.deps import ReadActor, SessionDep, WriteActor
from tidings.pagination import DEFAULT_LIMIT, Limit, Offset, Page, PathId, page

router = APIRouter(prefix="/content", tags=["content"])
ORIGIN = "content"


def content_out(campaign: Campaign) -> ContentOut:
    topics = campaign.audience.get("topic_ids") or [None]
    return ContentOut(
        id=campaign.id,
        title=campaign.name,
        body=campaign.html or "",
        topic_id=topics[0],
        scheduled_time=campaign.schedule_time,
        sent=campaign.runs > 0,
        status=campaign.status,
        created_at=campaign.created_at,
        updated_at=campaign.updated_at,
    )


def _campaign_fields(item: ContentCreate | ContentUpdate) -> dict[str, Any]:
    given = item.model_fields_set
    fields: dict[str, Any] = {}
    if "title" in given:
        fields["name"] = fields["subject"] = item.title
    if "body" in given:
        fields["html"] = item.body
    if "topic_id" in given:
        fields["topic_ids"] = [item.topic_id] if item.topic_id else []
    if "scheduled_time" in given:
        fields["schedule_time"] = item.scheduled_time
    return fields


async def _content(session: SessionDep, content_id: int) -> Campaign:
    campaign = await service.get_campaign(session, content_id)
    if campaign.origin != ORIGIN:
        raise service.CampaignNotFound(f"no content item with id {content_id}")
    return campaign


@router.post("/", status_code=status.HTTP_201_CREATED, response_model=ContentOut)
async def create_content(body: ContentCreate, session: SessionDep, actor: WriteActor) -> object:
    """Create a content item; with a scheduled_time it is sent then to the topic's subscribers."""
    data = CampaignCreate.model_validate(_campaign_fields(body))
    return content_out(await service.create_campaign(session, data, actor.label, ORIGIN))


@router.get("/", response_model=Page[ContentOut])
async def list_content(
    session: SessionDep, _: ReadActor, limit: Limit = DEFAULT_LIMIT, offset: Offset = 0
) -> object:
    items, total = await service.list_campaigns(session, origin=ORIGIN, limit=limit, offset=offset)
    return page([content_out(c) for c in items], total, limit, offset)


@router.get("/{content_id}", response_model=ContentOut)
async def get_content(content_id: PathId, session: SessionDep, _: ReadActor) -> object:
    return content_out(await _content(session, content_id))


@router.patch("/{content_id}", response_model=ContentOut)
async def update_content(
    content_id: PathId, body: ContentUpdate, session: SessionDep, actor: WriteActor
) -> object:
    await _content(session, content_id)
    data = CampaignUpdate.model_validate(_campaign_fields(body))
    return content_out(await service.update_campaign(session, content_id, data, actor.label))


@router.delete("/{content_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_content(content_id: PathId, session: SessionDep, actor: WriteActor) -> None:
    await _content(session, content_id)
    await service.delete_campaign(session, content_id, actor.label)


@router.post(
    "/{content_id}/send-now", status_code=status.HTTP_202_ACCEPTED, response_model=CampaignRunOut
)
async def send_content_now(content_id: PathId, session: SessionDep, actor: WriteActor) -> object:
    """Seed 000's manual trigger: send the item now (its scheduled send is then not repeated)."""
    await _content(session, content_id)
    return await service.send_now(session, content_id, actor.label)
