"""Stored templates and campaign content: save-time validation and previews.

A template (or a campaign's inline content) is checked when it is saved by rendering it for a
sample subscriber (campaigns.templating.check_template), so a broken template never reaches a
send. Layouts are templates with ``is_layout``; other templates ``{% extends "name" %}`` them.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from tidings.audience.models import Subscriber
from tidings.audience.subscribers import find_subscriber
from tidings.campaigns.models import Campaign, Template
from tidings.campaigns.schemas import TemplateWrite
from tidings.campaigns.templating import (
    LayoutLoader,
    RenderContext,
    RenderedMessage,
    TemplateSource,
    check_template,
    compile_content,
    sample_context,
)
from tidings.db.errors import flush_unique
from tidings.db.ids import get_by_id
from tidings.errors import Conflict, NotFound
from tidings.security.audit import record_audit


class TemplateNotFound(NotFound):
    pass


class DuplicateTemplate(Conflict):
    code = "duplicate_template"


class TemplateInUse(Conflict):
    code = "template_in_use"


async def get_template(session: AsyncSession, template_id: int) -> Template:
    template = await get_by_id(session, Template, template_id)
    if template is None:
        raise TemplateNotFound(f"no template with id {template_id}")
    return template


async def list_templates(
    session: AsyncSession, *, limit: int, offset: int
) -> tuple[list[Template], int]:
    total = await session.scalar(select(func.count()).select_from(Template))
    rows = await session.scalars(select(Template).order_by(Template.id).limit(limit).offset(offset))
    return list(rows.all()), int(total or 0)


async def layout_loader(session: AsyncSession) -> LayoutLoader:
    """Every layout's HTML by name, read now (rendering must not wait for the database)."""
    rows = await session.execute(select(Template.name, Template.html).where(Template.is_layout))
    layouts = {name: html for name, html in rows}
    return layouts.get


async def save_template(
    session: AsyncSession, data: TemplateWrite, actor: str, template_id: int | None = None
) -> Template:
    """Create (no id) or replace a template, after checking that it renders."""
    template = Template() if template_id is None else await get_template(session, template_id)
    loader = await layout_loader(session)
    source = TemplateSource(data.subject, data.html, data.text)
    check_template(source, _without(loader, template.name) if template_id else loader)
    template.name, template.description = data.name, data.description
    template.is_layout = data.is_layout
    template.subject, template.html, template.text = data.subject, data.html, data.text
    if template_id is None:
        session.add(template)
    duplicate = DuplicateTemplate(f"a template named {data.name!r} exists")
    await flush_unique(session, duplicate, "templates", "name")
    action = "template.create" if template_id is None else "template.update"
    record_audit(session, actor, action, "template", template.id, {"name": data.name})
    await session.commit()
    return template


def _without(loader: LayoutLoader, name: str) -> LayoutLoader:
    """A layout being replaced may not extend itself."""
    return lambda wanted: None if wanted == name else loader(wanted)


async def delete_template(session: AsyncSession, template_id: int, actor: str) -> None:
    template = await get_template(session, template_id)
    users = await session.scalar(
        select(func.count()).select_from(Campaign).where(Campaign.template_id == template_id)
    )
    if users:
        raise TemplateInUse(f"template {template_id} is used by {users} campaign(s)")
    await session.delete(template)
    record_audit(session, actor, "template.delete", "template", template_id, None)
    await session.commit()


async def campaign_source(session: AsyncSession, campaign: Campaign) -> TemplateSource:
    """What a campaign sends: its template (its own subject, when set, wins) or inline content."""
    if campaign.template_id is None:
        return TemplateSource(campaign.subject or campaign.name, campaign.html or "", campaign.text)
    template = await get_template(session, campaign.template_id)
    return TemplateSource(campaign.subject or template.subject, template.html, template.text)


async def check_campaign_content(session: AsyncSession, campaign: Campaign) -> None:
    """Refuse content that would fail at send time (TemplateProblem, a 422 naming the line)."""
    check_template(await campaign_source(session, campaign), await layout_loader(session))


async def preview(
    session: AsyncSession,
    source: TemplateSource,
    subscriber_ref: str | int | None,
    campaign_name: str = "Preview",
) -> RenderedMessage:
    """The content rendered for one subscriber, or for the sample subscriber."""
    context = sample_context()
    if subscriber_ref is not None:
        context = subscriber_context(await find_subscriber(session, subscriber_ref), campaign_name)
    return compile_content(source, await layout_loader(session)).render(context)


def subscriber_context(subscriber: Subscriber, campaign_name: str) -> RenderContext:
    sample = sample_context()  # the links become real with the tracking issue
    return RenderContext(
        subscriber_name=subscriber.name,
        subscriber_email=subscriber.email,
        campaign_name=campaign_name,
        campaign_subject="",
        unsubscribe_url=sample.unsubscribe_url,
        preferences_url=sample.preferences_url,
        view_in_browser_url=sample.view_in_browser_url,
        subscriber_attributes=subscriber.attributes,
        subscriber_tags=subscriber.tags,
    )
