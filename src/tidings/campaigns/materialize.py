"""Materializing a campaign run: one delivery row per recipient, written by one set-based
``INSERT ... SELECT`` (no Python loop over recipients, constant memory for any audience).

The statement and the run's new status commit together, and ``ON CONFLICT DO NOTHING`` on
(run_id, subscriber_id) makes a repeat harmless: a run whose materialization was interrupted is
still ``materializing`` and is simply materialized again.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import CursorResult, literal, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from tidings.audience.models import Subscriber
from tidings.campaigns.audience import Audience, audience_rule, recipients_condition
from tidings.campaigns.models import Campaign, CampaignRun, Delivery, DeliveryStatus, RunStatus
from tidings.db.types import UTCDateTime, utcnow


async def materialize_run(session: AsyncSession, run: CampaignRun, campaign: Campaign) -> int:
    """Write the run's deliveries and mark it sending; returns how many it holds. Commits."""
    now = utcnow()
    dialect = session.get_bind().dialect.name
    rule = await audience_rule(session, Audience.from_json(campaign.audience))
    recipients = (
        select(
            literal(run.id),
            Subscriber.id,
            literal(DeliveryStatus.queued.value),
            literal(0),
            literal(now, UTCDateTime()),
            literal(now, UTCDateTime()),
        )
        .where(recipients_condition(rule, dialect, now))
        .order_by(Subscriber.id)
    )
    columns = ["run_id", "subscriber_id", "status", "attempts", "next_attempt_at", "created_at"]
    statement = _insert(dialect).from_select(columns, recipients).on_conflict_do_nothing()
    result = cast(CursorResult[Any], await session.execute(statement))
    written = result.rowcount
    run.total = run.queued = run.total + max(written, 0)
    run.status = RunStatus.sending.value
    run.materialized_at = now
    await session.commit()
    return run.total


def _insert(dialect: str) -> postgresql.Insert | sqlite.Insert:
    return postgresql.insert(Delivery) if dialect == "postgresql" else sqlite.insert(Delivery)
