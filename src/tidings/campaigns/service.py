"""Campaign rules: creating and editing, the status machine, and the schedule's next run.

The scheduler (campaigns/scheduler.py) fires due campaigns; everything a user does to a campaign
(create, edit, reschedule, send now, pause, resume, cancel, delete) happens here, for the API,
the CLI and the UI alike.
"""

from __future__ import annotations

import html
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tidings import transitions
from tidings.audience.models import Topic
from tidings.audience.segments import find_segment_by_name, get_segment
from tidings.campaigns.audience import Audience
from tidings.campaigns.models import (
    Campaign,
    CampaignRun,
    CampaignStatus,
    Delivery,
    RunStatus,
    Template,
)
from tidings.campaigns.recurrence import ScheduleError, first_run, next_run_after
from tidings.campaigns.schemas import CampaignCreate, CampaignUpdate
from tidings.campaigns.templates import check_campaign_content
from tidings.db.ids import get_by_id
from tidings.db.types import utcnow
from tidings.errors import NotFound, RuleViolation
from tidings.promotions.models import Promotion
from tidings.security.audit import record_audit

S = CampaignStatus
# The status machine, as data. The scheduler moves scheduled → running (a run fires) and
# running → scheduled / done (the run finished; more runs to come or not).
TRANSITIONS: dict[CampaignStatus, tuple[CampaignStatus, ...]] = {
    S.draft: (S.scheduled, S.running, S.cancelled),
    S.scheduled: (S.running, S.paused, S.cancelled),
    S.running: (S.scheduled, S.paused, S.done, S.cancelled),
    S.paused: (S.scheduled, S.running, S.cancelled),
    S.done: (),
    S.cancelled: (),
}
CONTENT_FIELDS = frozenset(
    ("channel", "subject", "message", "html", "text", "template_id", "from_name", "from_email",
     "reply_to", "topic_ids", "segment_id", "target_segment", "promotion_id", "tags")
)  # fmt: skip
LEAVE_WHEN_NULL = frozenset(  # columns with defaults: null in a request means "leave as is"
    ("subject", "from_name", "timezone", "interval", "catch_up", "track_opens", "track_clicks",
     "utm")
)  # fmt: skip
SCHEDULE_FIELDS = frozenset(
    ("type", "schedule_time", "timezone", "frequency", "interval", "rrule", "until", "count",
     "catch_up")
)  # fmt: skip


class CampaignError(RuleViolation):
    code = "campaign_rule"


class IllegalTransition(CampaignError):
    code = "illegal_transition"


class ReadOnlyField(CampaignError):
    code = "read_only_field"


class InvalidSchedule(CampaignError):
    code = "invalid_schedule"


class CampaignNotFound(NotFound):
    pass


def check_transition(current: CampaignStatus, target: CampaignStatus) -> None:
    transitions.check_transition(TRANSITIONS, current, target, "campaign", IllegalTransition)


async def get_campaign(session: AsyncSession, campaign_id: int) -> Campaign:
    campaign = await get_by_id(session, Campaign, campaign_id)
    if campaign is None:
        raise CampaignNotFound(f"no campaign with id {campaign_id}")
    return campaign


async def list_campaigns(
    session: AsyncSession,
    *,
    status: CampaignStatus | None = None,
    origin: str | None = None,
    limit: int,
    offset: int,
) -> tuple[list[Campaign], int]:
    query = select(Campaign)
    if status is not None:
        query = query.where(Campaign.status == status.value)
    if origin is not None:
        query = query.where(Campaign.origin == origin)
    total = await session.scalar(select(func.count()).select_from(query.subquery()))
    rows = await session.scalars(query.order_by(Campaign.id).limit(limit).offset(offset))
    return list(rows.all()), int(total or 0)


async def list_runs(
    session: AsyncSession, campaign_id: int, *, limit: int, offset: int
) -> tuple[list[CampaignRun], int]:
    await get_campaign(session, campaign_id)
    query = select(CampaignRun).where(CampaignRun.campaign_id == campaign_id)
    total = await session.scalar(select(func.count()).select_from(query.subquery()))
    rows = await session.scalars(query.order_by(CampaignRun.id.desc()).limit(limit).offset(offset))
    return list(rows.all()), int(total or 0)


async def create_campaign(
    session: AsyncSession, data: CampaignCreate, actor: str, origin: str = "api"
) -> Campaign:
    campaign = Campaign(  # defaults set now: _apply reads them before the row is flushed
        origin=origin,
        status=S.draft.value,
        channel="email",
        subject="",
        from_name="",
        audience={},
        timezone="UTC",
        interval=1,
        catch_up=False,
        runs=0,
        track_opens=True,
        track_clicks=True,
        utm={},
    )
    await _apply(session, campaign, data.given())
    if campaign.schedule_time is not None:
        campaign.status = S.scheduled.value
    session.add(campaign)
    await session.flush()
    record_audit(session, actor, "campaign.create", "campaign", campaign.id, {"name": data.name})
    await session.commit()
    return campaign


async def update_campaign(
    session: AsyncSession, campaign_id: int, data: CampaignUpdate, actor: str
) -> Campaign:
    campaign = await get_campaign(session, campaign_id)
    changes = data.given()
    _check_editable(campaign, set(changes))
    await _apply(session, campaign, changes)
    if campaign.status == S.draft and campaign.schedule_time is not None:
        campaign.status = S.scheduled.value
    record_audit(
        session, actor, "campaign.update", "campaign", campaign.id, {"fields": sorted(changes)}
    )
    await session.commit()
    return campaign


def _check_editable(campaign: Campaign, fields: set[str]) -> None:
    status = CampaignStatus(campaign.status)
    if status in (S.done, S.cancelled) and fields:
        raise ReadOnlyField(f"a {status} campaign cannot be changed")
    locked = sorted(fields & CONTENT_FIELDS) if status == S.running else []
    if locked:
        raise ReadOnlyField(
            f"a running campaign's content and audience cannot change ({', '.join(locked)}); "
            "pause it first, or change only name and schedule"
        )


async def reschedule_campaign(
    session: AsyncSession, campaign_id: int, schedule_time: datetime, actor: str
) -> Campaign:
    """Seed 003: move the next run (the first, for a campaign that has not run yet)."""
    campaign = await get_campaign(session, campaign_id)
    _check_editable(campaign, {"schedule_time"})
    await _apply(session, campaign, {"schedule_time": schedule_time})
    if campaign.status == S.draft:
        campaign.status = S.scheduled.value
    record_audit(session, actor, "campaign.reschedule", "campaign", campaign.id, None)
    await session.commit()
    return campaign


async def send_now(session: AsyncSession, campaign_id: int, actor: str) -> CampaignRun:
    """Fire a run at once; the scheduler writes its deliveries within a second."""
    campaign = await get_campaign(session, campaign_id)
    check_transition(CampaignStatus(campaign.status), S.running)
    run = CampaignRun(campaign_id=campaign.id, scheduled_for=utcnow())
    session.add(run)
    campaign.status = S.running.value
    campaign.runs += 1
    campaign.last_run_at = run.scheduled_for
    if campaign.next_run_at is not None and campaign.frequency is None and not campaign.rrule:
        campaign.next_run_at = None  # a one-time campaign sent now is not sent again later
    await session.flush()
    record_audit(session, actor, "campaign.send", "campaign", campaign.id, {"run": run.id})
    await session.commit()
    return run


async def change_status(
    session: AsyncSession, campaign_id: int, action: str, actor: str
) -> Campaign:
    """pause, resume or cancel; a campaign's unfinished runs follow it."""
    campaign = await get_campaign(session, campaign_id)
    current = CampaignStatus(campaign.status)
    if action == "resume":
        if current != S.paused:
            raise IllegalTransition(f"only a paused campaign can be resumed; this one is {current}")
        unfinished = (RunStatus.materializing, RunStatus.sending, RunStatus.paused)
        runs_left = await session.scalar(
            select(func.count())
            .select_from(CampaignRun)
            .where(CampaignRun.campaign_id == campaign.id, CampaignRun.status.in_(unfinished))
        )
        target = S.running if runs_left else S.scheduled
        run_status = RunStatus.sending
    else:
        target = S.paused if action == "pause" else S.cancelled
        run_status = RunStatus.paused if action == "pause" else RunStatus.cancelled
    check_transition(current, target)
    campaign.status = target.value
    await session.execute(
        update(CampaignRun)
        .where(
            CampaignRun.campaign_id == campaign.id,
            CampaignRun.status.in_((RunStatus.sending, RunStatus.paused)),
        )
        .values(status=run_status.value)
    )
    record_audit(session, actor, f"campaign.{action}", "campaign", campaign.id, None)
    await session.commit()
    return campaign


async def delete_campaign(session: AsyncSession, campaign_id: int, actor: str) -> None:
    campaign = await get_campaign(session, campaign_id)
    if campaign.status in (S.running, S.paused):
        raise IllegalTransition(f"a {campaign.status} campaign cannot be deleted; cancel it first")
    runs = select(CampaignRun.id).where(CampaignRun.campaign_id == campaign_id)
    await session.execute(delete(Delivery).where(Delivery.run_id.in_(runs)))
    await session.delete(campaign)  # its runs go with it (ON DELETE CASCADE)
    record_audit(session, actor, "campaign.delete", "campaign", campaign_id, None)
    await session.commit()


# --- applying fields -----------------------------------------------------------------------------


async def _apply(session: AsyncSession, campaign: Campaign, fields: dict[str, Any]) -> None:
    """Set the given fields, check references, and recompute the next run when the schedule
    changed (any other edit leaves it: it may be past a downtime's missed slots)."""
    changed = set(fields)
    fields = dict(fields)
    if "message" in fields:  # seed 003: a plain message is the text, and the HTML made from it
        message = fields.pop("message") or ""
        fields.setdefault("text", message)
        fields.setdefault("html", _paragraphs(message))
    for name in ("schedule_time", "until"):  # schedules run on whole seconds
        if fields.get(name) is not None:
            fields[name] = fields[name].replace(microsecond=0)
    audience = await _audience(session, campaign, fields)
    for name in ("type", "topic_ids", "segment_id", "target_segment", "promotion_id", "tags"):
        fields.pop(name, None)
    if fields.get("template_id") is not None:
        await _require(session, Template, fields["template_id"], "template")
    for name, value in fields.items():
        if value is None and name in LEAVE_WHEN_NULL:
            continue
        setattr(campaign, name, value)
    if not campaign.subject and campaign.template_id is None:
        campaign.subject = campaign.name
    campaign.audience = audience.as_json()
    if changed & SCHEDULE_FIELDS:
        _schedule_next(campaign)
    if changed & CONTENT_FIELDS:
        await check_campaign_content(session, campaign)


async def _audience(session: AsyncSession, campaign: Campaign, fields: dict[str, Any]) -> Audience:
    current = Audience.from_json(campaign.audience or {})
    topic_ids = (
        tuple(dict.fromkeys(fields.get("topic_ids") or ()))
        if "topic_ids" in fields
        else current.topic_ids
    )
    for topic_id in topic_ids:
        await _require(session, Topic, topic_id, "topic")
    segment_id = fields.get("segment_id", current.segment_id)
    tags = tuple(fields["tags"] or ()) if "tags" in fields else current.tags
    target = fields.get("target_segment")
    if target:  # seed 003: a segment of that name, else the tag of that name
        segment = await find_segment_by_name(session, target)
        if segment is not None:
            segment_id = segment.id
        else:
            tags = tuple(sorted({*tags, target.strip().lower()}))
    if segment_id is not None:
        await get_segment(session, segment_id)
    promotion_id = fields.get("promotion_id", current.promotion_id)
    if promotion_id is not None:
        await _require(session, Promotion, promotion_id, "promotion")
    return Audience(topic_ids, segment_id, promotion_id, tags)


async def _require(session: AsyncSession, model: type[Any], row_id: int, what: str) -> None:
    if await get_by_id(session, model, row_id) is None:
        raise CampaignError(f"no {what} with id {row_id}")


def _schedule_next(campaign: Campaign) -> None:
    """The next run after a schedule change: the schedule's first run, unless the campaign
    already ran at or after it, then the first slot after its last run (never a slot twice)."""
    try:
        schedule = campaign.schedule()
    except ScheduleError as exc:
        raise InvalidSchedule(str(exc)) from None
    if schedule is None:
        if campaign.frequency or campaign.rrule:
            raise InvalidSchedule("a recurring campaign needs a schedule_time for its first run")
        campaign.next_run_at = None
        return
    first = first_run(schedule)
    last = campaign.last_run_at
    campaign.next_run_at = first if last is None or first > last else next_run_after(schedule, last)


def _paragraphs(message: str) -> str:
    """Seed 003's plain message as simple HTML: escaped, one paragraph per blank-line block."""
    blocks = [b.strip() for b in message.replace("\r\n", "\n").split("\n\n") if b.strip()]
    return "".join(f"<p>{html.escape(b).replace(chr(10), '<br>')}</p>" for b in blocks)
