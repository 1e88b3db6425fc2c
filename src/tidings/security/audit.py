"""Append-only audit log: who did what, when, to which target."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tidings.security.models import AuditEntry

SYSTEM_ACTOR = "system"
CLI_ACTOR = "cli"


def record_audit(
    session: AsyncSession,
    actor: str,
    action: str,
    target_type: str,
    target_id: object | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Add an audit row to the caller's transaction, so it commits (or not) with the change."""
    session.add(
        AuditEntry(
            actor=actor,
            action=action,
            target_type=target_type,
            target_id=None if target_id is None else str(target_id),
            detail=detail,
        )
    )


async def list_audit(
    session: AsyncSession, *, limit: int, offset: int, action: str | None = None
) -> list[AuditEntry]:
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit).offset(offset)
    if action:
        query = query.where(AuditEntry.action == action)
    return list((await session.scalars(query)).all())
