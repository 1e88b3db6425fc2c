"""Segments: named rules saved once and evaluated live, in one query, whenever they are used."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from tidings.audience.models import Segment, Subscriber
from tidings.audience.schemas import SegmentWrite
from tidings.audience.segment_rules import Rule, compile_rule, parse_rule
from tidings.db.errors import flush_unique
from tidings.db.ids import get_by_id
from tidings.db.types import utcnow
from tidings.errors import Conflict, NotFound
from tidings.security.audit import record_audit


class SegmentNotFound(NotFound):
    pass


class DuplicateSegment(Conflict):
    code = "duplicate_segment"


async def get_segment(session: AsyncSession, segment_id: int) -> Segment:
    segment = await get_by_id(session, Segment, segment_id)
    if segment is None:
        raise SegmentNotFound(f"no segment with id {segment_id}")
    return segment


async def find_segment_by_name(session: AsyncSession, name: str) -> Segment | None:
    return await session.scalar(select(Segment).where(Segment.name == name))


async def list_segments(
    session: AsyncSession, *, limit: int, offset: int
) -> tuple[list[Segment], int]:
    total = int(await session.scalar(select(func.count()).select_from(Segment)) or 0)
    rows = await session.scalars(select(Segment).order_by(Segment.id).limit(limit).offset(offset))
    return list(rows.all()), total


async def create_segment(session: AsyncSession, data: SegmentWrite, actor: str) -> Segment:
    parse_rule(data.rule)  # refuse a bad rule before anything is stored
    await _ensure_name_free(session, data.name)
    segment = Segment(name=data.name, description=data.description, rule=data.rule)
    session.add(segment)
    await _flush_unique(session, data.name)
    record_audit(session, actor, "segment.create", "segment", segment.id, {"name": data.name})
    await session.commit()
    return segment


async def replace_segment(
    session: AsyncSession, segment_id: int, data: SegmentWrite, actor: str
) -> Segment:
    segment = await get_segment(session, segment_id)
    parse_rule(data.rule)
    await _ensure_name_free(session, data.name, segment_id)
    segment.name, segment.description, segment.rule = data.name, data.description, data.rule
    await _flush_unique(session, data.name)
    record_audit(session, actor, "segment.update", "segment", segment.id, {"name": data.name})
    await session.commit()
    return segment


async def delete_segment(session: AsyncSession, segment_id: int, actor: str) -> None:
    segment = await get_segment(session, segment_id)
    await session.delete(segment)
    record_audit(session, actor, "segment.delete", "segment", segment_id, {"name": segment.name})
    await session.commit()


async def _ensure_name_free(session: AsyncSession, name: str, segment_id: int = 0) -> None:
    taken = select(Segment.id).where(Segment.name == name, Segment.id != segment_id)
    if await session.scalar(taken):
        raise DuplicateSegment(f"a segment named {name!r} already exists")


async def _flush_unique(session: AsyncSession, name: str) -> None:
    duplicate = DuplicateSegment(f"a segment named {name!r} already exists")
    await flush_unique(session, duplicate, "segments", "name")


def segment_rule(segment: Segment) -> Rule:
    return parse_rule(segment.rule)


async def count_matching(session: AsyncSession, rule: Rule) -> int:
    """How many subscribers match, counted by the database in one query."""
    condition = compile_rule(rule, session.get_bind().dialect.name, utcnow())
    query = select(func.count()).select_from(Subscriber).where(condition)
    return int(await session.scalar(query) or 0)
