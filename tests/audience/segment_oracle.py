"""A plain-Python evaluation of segment rules: the oracle the SQL is checked against."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from tidings.audience.segment_rules import AllOf, AnyOf, Condition, Not, Rule

MISSING = object()


@dataclass
class Person:
    id: int
    email_domain: str
    name: str
    status: str
    engagement_score: float
    created_at: datetime
    last_opened_at: datetime | None
    attributes: dict[str, Any]
    tags: set[str] = field(default_factory=set)
    topics: set[int] = field(default_factory=set)  # active topic memberships
    promotions: set[int] = field(default_factory=set)  # active promotion subscriptions


def matches(rule: Rule, person: Person, now: datetime) -> bool:
    if isinstance(rule, AllOf):
        return all(matches(r, person, now) for r in rule.rules)
    if isinstance(rule, AnyOf):
        return any(matches(r, person, now) for r in rule.rules)
    if isinstance(rule, Not):
        return not matches(rule.rule, person, now)
    return _condition(rule, person, now)


def _condition(c: Condition, p: Person, now: datetime) -> bool:
    if c.op == "ne":
        return not _condition(Condition(c.field, "eq", c.value, c.path), p, now)
    if c.field in ("tag", "topic", "promotion"):
        held = {"tag": p.tags, "topic": p.topics, "promotion": p.promotions}[c.field]
        wanted = set(c.value) if c.op == "in" else {c.value}
        return bool(held & wanted)
    if c.field == "attributes":
        return _attribute(c, _lookup(p.attributes, c.path))
    value = getattr(p, c.field)
    if c.op == "exists":
        present = value is not None and value != ""
        return present == c.value
    if value is None:
        return False
    if c.op == "within_days":
        return bool(value >= now - timedelta(days=c.value))
    if c.op == "contains":
        return c.value in value
    return _compare(value, c.op, c.value)


def _compare(value: Any, op: str, target: Any) -> bool:
    if op == "eq":
        return bool(value == target)
    if op == "in":
        return value in target
    if op == "gt":
        return bool(value > target)
    if op == "lt":
        return bool(value < target)
    low, high = target
    return bool(low <= value <= high)


def _lookup(data: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return MISSING
        data = data[key]
    return data


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "other"


def _attribute(c: Condition, value: Any) -> bool:
    if c.op == "exists":
        return (value is not MISSING and value is not None) == c.value
    if value is MISSING or value is None:
        return False
    if c.op == "contains":
        return isinstance(value, str) and c.value in value
    if c.op in ("eq", "in"):
        targets = c.value if c.op == "in" else (c.value,)
        return any(_kind(t) == _kind(value) and t == value for t in targets)
    sample = c.value[0] if c.op == "between" else c.value
    return _kind(sample) == _kind(value) and _compare(value, c.op, c.value)
