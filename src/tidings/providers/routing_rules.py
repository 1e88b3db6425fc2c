"""Routing rules: create, change, list (in the order routing tries them), delete.

A rule sends recipients at some domains, or with an engagement score of at least a bound, to one
provider (or to the usable provider with the best reputation). Workers reload the enabled rules
every few seconds, so a change here takes effect without a restart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from tidings.db.errors import flush_unique
from tidings.db.ids import get_by_id_or_name
from tidings.errors import Conflict, NotFound, RuleViolation
from tidings.providers.models import Provider, RoutingRule
from tidings.providers.routing_schemas import RoutingRuleCreate, RoutingRuleUpdate
from tidings.providers.service import ProviderNotFound, get_provider
from tidings.security.audit import record_audit


class RoutingRuleNotFound(NotFound):
    pass


class DuplicateRoutingRule(Conflict):
    code = "duplicate_routing_rule"


async def get_rule(session: AsyncSession, ref: str | int) -> RoutingRule:
    """By numeric id or by name."""
    found = await get_by_id_or_name(session, RoutingRule, RoutingRule.name, ref)
    if found is None:
        raise RoutingRuleNotFound(f"no routing rule {str(ref)!r}")
    return found


def _is_engagement_rule(session: AsyncSession) -> ColumnElement[int]:
    """0 for a domain rule, 1 for an engagement rule: the first key of the order routing tries
    them in (``routing.Rule.order``). The JSON list's length, in each database's spelling."""
    length = (
        func.jsonb_array_length(RoutingRule.recipient_domains)
        if session.get_bind().dialect.name == "postgresql"
        else func.json_array_length(RoutingRule.recipient_domains)
    )
    return case((length > 0, 0), else_=1)


async def list_rules(
    session: AsyncSession, *, limit: int, offset: int
) -> tuple[list[RoutingRule], int]:
    total = await session.scalar(select(func.count()).select_from(RoutingRule))
    rows = await session.scalars(
        select(RoutingRule)
        .order_by(_is_engagement_rule(session), RoutingRule.position, RoutingRule.id)
        .limit(limit)
        .offset(offset)
    )
    return list(rows.all()), int(total or 0)


async def describe_rules(
    session: AsyncSession, rules: Sequence[RoutingRule]
) -> list[dict[str, Any]]:
    """The API's view of rules, with their providers' names (read in one query)."""
    ids = {rule.provider_id for rule in rules if rule.provider_id is not None}
    names: dict[int, str] = {}
    if ids:
        found = await session.execute(
            select(Provider.id, Provider.name).where(Provider.id.in_(ids))
        )
        names = {provider_id: name for provider_id, name in found}
    return [_describe(rule, names) for rule in rules]


def _describe(rule: RoutingRule, names: dict[int, str]) -> dict[str, Any]:
    fields = {c.key: getattr(rule, c.key) for c in RoutingRule.__table__.columns}
    return {
        **fields,
        "kind": "domain" if rule.recipient_domains else "engagement",
        "provider": names.get(rule.provider_id) if rule.provider_id is not None else None,
    }


async def create_rule(session: AsyncSession, data: RoutingRuleCreate, actor: str) -> RoutingRule:
    values = data.model_dump(exclude={"provider"})
    rule = RoutingRule(**values, provider_id=await _provider_id(session, data.provider))
    _check_matches_someone(rule)
    session.add(rule)
    await _save(session, rule, actor, "routing_rule.create", sorted(data.model_fields_set))
    return rule


async def update_rule(
    session: AsyncSession, ref: str | int, data: RoutingRuleUpdate, actor: str
) -> RoutingRule:
    rule = await get_rule(session, ref)
    changes = data.model_dump(exclude_unset=True)
    if "provider" in changes:
        rule.provider_id = await _provider_id(session, changes.pop("provider"))
    for field, value in changes.items():
        setattr(rule, field, value)
    _check_matches_someone(rule)
    await _save(session, rule, actor, "routing_rule.update", sorted(data.model_fields_set))
    return rule


async def delete_rule(session: AsyncSession, ref: str | int, actor: str) -> None:
    rule = await get_rule(session, ref)
    await session.delete(rule)
    record_audit(
        session, actor, "routing_rule.delete", "routing_rule", rule.id, {"name": rule.name}
    )
    await session.commit()


async def _provider_id(session: AsyncSession, ref: int | str | None) -> int | None:
    """The id of the provider a request names by id or name (None: best reputation)."""
    if ref is None:
        return None
    try:
        return (await get_provider(session, ref)).id
    except ProviderNotFound:
        raise RuleViolation(f"provider: no provider {str(ref)!r}; give an id or a name") from None


def _check_matches_someone(rule: RoutingRule) -> None:
    # A rule with neither condition would match every recipient and make load balancing
    # unreachable; a catch-all is what the providers' priorities and weights are for.
    if not rule.recipient_domains and rule.min_engagement_score is None:
        raise RuleViolation("a routing rule needs recipient_domains, min_engagement_score or both")


async def _save(
    session: AsyncSession, rule: RoutingRule, actor: str, action: str, fields: list[str]
) -> None:
    duplicate = DuplicateRoutingRule(f"a routing rule named {rule.name!r} exists")
    await flush_unique(session, duplicate, "routing_rules", "name")
    detail = {"name": rule.name, "fields": fields, "provider_id": rule.provider_id}
    record_audit(session, actor, action, "routing_rule", rule.id, detail)
    await session.commit()
