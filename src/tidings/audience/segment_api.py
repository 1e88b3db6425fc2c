"""HTTP routes of segments, and seed 002's GET /subscribers/segment/{segment}."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status
from sqlalchemy.ext.asyncio import AsyncSession

from tidings.audience import segments as segment_service
from tidings.audience.schemas import SegmentCount, SegmentOut, SegmentWrite, SubscriberOut
from tidings.audience.segment_rules import Condition, Rule
from tidings.audience.subscribers import SubscriberFilter, list_subscribers
from tidings.deps import ReadActor, SessionDep, WriteActor
from tidings.pagination import DEFAULT_LIMIT, Cursor, Limit, Offset, Page, PathId, page

router = APIRouter(tags=["segments"])


@router.post("/segments", status_code=status.HTTP_201_CREATED, response_model=SegmentOut)
async def create_segment(body: SegmentWrite, session: SessionDep, actor: WriteActor) -> object:
    """Save a named rule. It is checked now and evaluated live each time it is used."""
    return await segment_service.create_segment(session, body, actor.label)


@router.get("/segments", response_model=Page[SegmentOut])
async def list_segments(
    session: SessionDep, _: ReadActor, limit: Limit = DEFAULT_LIMIT, offset: Offset = 0
) -> object:
    items, total = await segment_service.list_segments(session, limit=limit, offset=offset)
    return page(items, total, limit, offset)


@router.get("/segments/{segment_id}", response_model=SegmentOut)
async def get_segment(segment_id: PathId, session: SessionDep, _: ReadActor) -> object:
    return await segment_service.get_segment(session, segment_id)


@router.put("/segments/{segment_id}", response_model=SegmentOut)
async def replace_segment(
    segment_id: PathId, body: SegmentWrite, session: SessionDep, actor: WriteActor
) -> object:
    return await segment_service.replace_segment(session, segment_id, body, actor.label)


@router.delete("/segments/{segment_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_segment(segment_id: PathId, session: SessionDep, actor: WriteActor) -> Response:
    await segment_service.delete_segment(session, segment_id, actor.label)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/segments/{segment_id}/count", response_model=SegmentCount)
async def count_segment(segment_id: PathId, session: SessionDep, _: ReadActor) -> object:
    """How many subscribers match the rule right now (any status)."""
    segment = await segment_service.get_segment(session, segment_id)
    count = await segment_service.count_matching(session, segment_service.segment_rule(segment))
    return SegmentCount(segment_id=segment_id, count=count)


@router.get("/segments/{segment_id}/subscribers", response_model=Page[SubscriberOut])
async def segment_subscribers(
    segment_id: PathId,
    session: SessionDep,
    _: ReadActor,
    limit: Limit = DEFAULT_LIMIT,
    offset: Offset = 0,
    cursor: Cursor = None,
) -> object:
    segment = await segment_service.get_segment(session, segment_id)
    return await _members(session, segment_service.segment_rule(segment), limit, offset, cursor)


@router.get(
    "/subscribers/segment/{segment}", response_model=Page[SubscriberOut], tags=["subscribers"]
)
async def subscribers_in_segment(
    segment: Annotated[str, Path(min_length=1, max_length=200)],
    session: SessionDep,
    _: ReadActor,
    limit: Limit = DEFAULT_LIMIT,
    offset: Offset = 0,
    cursor: Cursor = None,
) -> object:
    """Seed 002: the subscribers of a saved segment of that name, or else carrying that tag."""
    saved = await segment_service.find_segment_by_name(session, segment)
    rule = (
        segment_service.segment_rule(saved)
        if saved is not None
        else Condition(field="tag", op="eq", value=segment.strip().lower())
    )
    return await _members(session, rule, limit, offset, cursor)


async def _members(
    session: AsyncSession, rule: Rule, limit: int, offset: int, cursor: str | None
) -> dict[str, object]:
    found = await list_subscribers(
        session, SubscriberFilter(rule=rule), limit=limit, offset=offset, cursor=cursor
    )
    return page(found.items, found.total, limit, offset, found.next_cursor)
