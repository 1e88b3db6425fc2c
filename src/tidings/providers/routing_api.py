"""HTTP routes of /routing-rules (admin scope, like the providers they route to)."""

from __future__ import annotations

from fastapi import APIRouter, status

from tidings.deps import AdminActor, SessionDep
from tidings.pagination import DEFAULT_LIMIT, Limit, Offset, Page, page
from tidings.providers import routing_rules as service
from tidings.providers.routing_schemas import (
    RoutingRuleCreate,
    RoutingRuleOut,
    RoutingRuleUpdate,
)

router = APIRouter(prefix="/routing-rules", tags=["providers"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=RoutingRuleOut)
async def create_rule(body: RoutingRuleCreate, session: SessionDep, actor: AdminActor) -> object:
    """Send recipients at some domains, or engaged enough, to one provider before load
    balancing; ``provider`` is an id or a name (null: the one with the best reputation)."""
    rule = await service.create_rule(session, body, actor.label)
    return (await service.describe_rules(session, [rule]))[0]


@router.get("", response_model=Page[RoutingRuleOut])
async def list_rules(
    session: SessionDep, _: AdminActor, limit: Limit = DEFAULT_LIMIT, offset: Offset = 0
) -> object:
    """In the order routing tries them: domain rules, then engagement rules, each by position."""
    items, total = await service.list_rules(session, limit=limit, offset=offset)
    return page(await service.describe_rules(session, items), total, limit, offset)


@router.get("/{ref}", response_model=RoutingRuleOut)
async def get_rule(ref: str, session: SessionDep, _: AdminActor) -> object:
    """By id or name."""
    rule = await service.get_rule(session, ref)
    return (await service.describe_rules(session, [rule]))[0]


@router.patch("/{ref}", response_model=RoutingRuleOut)
async def update_rule(
    ref: str, body: RoutingRuleUpdate, session: SessionDep, actor: AdminActor
) -> object:
    rule = await service.update_rule(session, ref, body, actor.label)
    return (await service.describe_rules(session, [rule]))[0]


@router.delete("/{ref}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_rule(ref: str, session: SessionDep, actor: AdminActor) -> None:
    await service.delete_rule(session, ref, actor.label)
