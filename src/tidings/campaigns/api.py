"""HTTP routes of campaigns: seed 003's /campaigns/ and reschedule, seed 002's send, and the
status actions. Each route parses and calls campaigns.service."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from tidings.campaigns import service, templates
from tidings.campaigns.models import CampaignStatus
from tidings.campaigns.schemas import (
    CampaignCreate,
    CampaignOut,
    CampaignRunOut,
    CampaignUpdate,
    PreviewOut,
    PreviewRequest,
    Reschedule,
    TemplateOut,
    TemplateWrite,
)
from tidings.campaigns.templating import RenderedMessage, TemplateSource
from tidings.deps import ReadActor, SessionDep, WriteActor
from tidings.pagination import DEFAULT_LIMIT, Limit, Offset, Page, PathId, page

campaigns = APIRouter(prefix="/campaigns", tags=["campaigns"])
templates_router = APIRouter(prefix="/templates", tags=["templates"])


@campaigns.post("/", status_code=status.HTTP_201_CREATED, response_model=CampaignOut)
async def create_campaign(body: CampaignCreate, session: SessionDep, actor: WriteActor) -> object:
    """Create a campaign: scheduled when it has a schedule_time, else a draft."""
    return await service.create_campaign(session, body, actor.label)


@campaigns.get("/", response_model=Page[CampaignOut])
async def list_campaigns(
    session: SessionDep,
    _: ReadActor,
    status_: Annotated[CampaignStatus | None, Query(alias="status")] = None,
    limit: Limit = DEFAULT_LIMIT,
    offset: Offset = 0,
) -> object:
    items, total = await service.list_campaigns(session, status=status_, limit=limit, offset=offset)
    return page(items, total, limit, offset)


@campaigns.get("/{campaign_id}", response_model=CampaignOut)
async def get_campaign(campaign_id: PathId, session: SessionDep, _: ReadActor) -> object:
    return await service.get_campaign(session, campaign_id)


@campaigns.patch("/{campaign_id}", response_model=CampaignOut)
async def update_campaign(
    campaign_id: PathId, body: CampaignUpdate, session: SessionDep, actor: WriteActor
) -> object:
    """Change fields; a running campaign's content and audience are locked (pause it first)."""
    return await service.update_campaign(session, campaign_id, body, actor.label)


@campaigns.delete("/{campaign_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_campaign(campaign_id: PathId, session: SessionDep, actor: WriteActor) -> None:
    await service.delete_campaign(session, campaign_id, actor.label)


@campaigns.patch("/{campaign_id}/reschedule", response_model=CampaignOut)
async def reschedule_campaign(
    campaign_id: PathId, body: Reschedule, session: SessionDep, actor: WriteActor
) -> object:
    """Seed 003: move the campaign's next run to ``schedule_time``."""
    return await service.reschedule_campaign(session, campaign_id, body.schedule_time, actor.label)


@campaigns.post(
    "/{campaign_id}/send", status_code=status.HTTP_202_ACCEPTED, response_model=CampaignRunOut
)
async def send_campaign(campaign_id: PathId, session: SessionDep, actor: WriteActor) -> object:
    """Seed 002: send now. Returns the new run; its deliveries are written within a second."""
    return await service.send_now(session, campaign_id, actor.label)


@campaigns.get("/{campaign_id}/runs", response_model=Page[CampaignRunOut])
async def list_runs(
    campaign_id: PathId,
    session: SessionDep,
    _: ReadActor,
    limit: Limit = DEFAULT_LIMIT,
    offset: Offset = 0,
) -> object:
    items, total = await service.list_runs(session, campaign_id, limit=limit, offset=offset)
    return page(items, total, limit, offset)


def _action_route(action: str) -> None:
    async def change(campaign_id: PathId, session: SessionDep, actor: WriteActor) -> object:
        return await service.change_status(session, campaign_id, action, actor.label)

    change.__name__ = f"{action}_campaign"
    change.__doc__ = {
        "pause": "Pause: no new runs fire and no more deliveries are claimed.",
        "resume": "Resume a paused campaign where it stopped (nothing is sent twice).",
        "cancel": "Cancel for good: unsent deliveries are never sent.",
    }[action]
    campaigns.post(f"/{{campaign_id}}/{action}", response_model=CampaignOut)(change)


for _action in ("pause", "resume", "cancel"):
    _action_route(_action)


@campaigns.post("/{campaign_id}/preview", response_model=PreviewOut)
async def preview_campaign(
    campaign_id: PathId, body: PreviewRequest, session: SessionDep, _: ReadActor
) -> RenderedMessage:
    """The campaign's message as one subscriber (or the sample subscriber) would get it."""
    campaign = await service.get_campaign(session, campaign_id)
    source = await templates.campaign_source(session, campaign)
    return await templates.preview(session, source, body.subscriber, campaign.name)


@templates_router.post("", status_code=status.HTTP_201_CREATED, response_model=TemplateOut)
async def create_template(body: TemplateWrite, session: SessionDep, actor: WriteActor) -> object:
    """Save a template after rendering it for a sample subscriber (errors name the line)."""
    return await templates.save_template(session, body, actor.label)


@templates_router.get("", response_model=Page[TemplateOut])
async def list_templates(
    session: SessionDep, _: ReadActor, limit: Limit = DEFAULT_LIMIT, offset: Offset = 0
) -> object:
    items, total = await templates.list_templates(session, limit=limit, offset=offset)
    return page(items, total, limit, offset)


@templates_router.get("/{template_id}", response_model=TemplateOut)
async def get_template(template_id: PathId, session: SessionDep, _: ReadActor) -> object:
    return await templates.get_template(session, template_id)


@templates_router.put("/{template_id}", response_model=TemplateOut)
async def replace_template(
    template_id: PathId, body: TemplateWrite, session: SessionDep, actor: WriteActor
) -> object:
    return await templates.save_template(session, body, actor.label, template_id)


@templates_router.delete("/{template_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_template(template_id: PathId, session: SessionDep, actor: WriteActor) -> None:
    await templates.delete_template(session, template_id, actor.label)


@templates_router.post("/{template_id}/preview", response_model=PreviewOut)
async def preview_template(
    template_id: PathId, body: PreviewRequest, session: SessionDep, _: ReadActor
) -> RenderedMessage:
    """The template rendered for one subscriber (or the sample subscriber)."""
    template = await templates.get_template(session, template_id)
    source = TemplateSource(template.subject, template.html, template.text)
    return await templates.preview(session, source, body.subscriber, template.name)
