"""The segment rule DSL: parse JSON rules into a typed tree, and compile the tree to SQL.

A rule is either a condition ``{"field": F, "op": O, "value": V}`` or a combination
``{"all": [rules]}``, ``{"any": [rules]}``, ``{"not": rule}``. Fields and the operators each takes:

==================  =========================================================
email_domain        eq ne in contains
name                eq ne in contains exists
status              eq ne in
tag                 eq (has the tag) ne (lacks it) in (has any of them)
topic, promotion    eq ne in (active membership, by id)
engagement_score    eq ne in gt lt between
created_at          gt lt between within_days
last_opened_at      gt lt between within_days exists
attributes.a.b      eq ne in contains gt lt between exists
==================  =========================================================

Comparisons are typed: ``{"field": "attributes.seats", "op": "gt", "value": 5}`` matches JSON
numbers only, a string value compares strings (by code point), ``true``/``false`` match booleans.
``contains`` is a case-sensitive substring test. ``ne`` is exactly ``not eq``. Rules never become
raw SQL: every value is a bound parameter and every path segment is checked against a pattern.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, TypeAlias

from sqlalchemy import (
    ColumnElement,
    Float,
    String,
    and_,
    case,
    cast,
    exists,
    func,
    not_,
    or_,
    select,
    true,
    type_coerce,
)
from sqlalchemy.dialects.postgresql import ARRAY

from tidings.audience.models import (
    Subscriber,
    SubscriberStatus,
    TopicSubscription,
    TopicSubscriptionStatus,
)
from tidings.db.types import as_utc
from tidings.errors import RuleViolation

MAX_DEPTH = 8
MAX_CONDITIONS = 100
MAX_LIST = 1000
MAX_NUMBER = 1e15  # beyond this, SQL doubles and Python numbers stop comparing alike
# A name, never a number: PostgreSQL would read a numeric segment as an array index.
PATH_SEGMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")

Scalar: TypeAlias = str | int | float | bool
Op = Literal["eq", "ne", "in", "contains", "gt", "lt", "between", "exists", "within_days"]

FIELD_OPS: dict[str, frozenset[str]] = {
    "email_domain": frozenset({"eq", "ne", "in", "contains"}),
    "name": frozenset({"eq", "ne", "in", "contains", "exists"}),
    "status": frozenset({"eq", "ne", "in"}),
    "tag": frozenset({"eq", "ne", "in"}),
    "topic": frozenset({"eq", "ne", "in"}),
    "promotion": frozenset({"eq", "ne", "in"}),
    "engagement_score": frozenset({"eq", "ne", "in", "gt", "lt", "between"}),
    "created_at": frozenset({"gt", "lt", "between", "within_days"}),
    "last_opened_at": frozenset({"gt", "lt", "between", "within_days", "exists"}),
    "attributes": frozenset({"eq", "ne", "in", "contains", "gt", "lt", "between", "exists"}),
}
DATE_FIELDS = frozenset({"created_at", "last_opened_at"})
ID_FIELDS = frozenset({"topic", "promotion"})


class InvalidRule(RuleViolation):
    code = "invalid_segment_rule"


@dataclass(frozen=True)
class Condition:
    field: str  # "attributes" for attribute conditions, with the path in ``path``
    op: str
    value: Any
    path: tuple[str, ...] = ()


@dataclass(frozen=True)
class AllOf:
    rules: tuple[Rule, ...]


@dataclass(frozen=True)
class AnyOf:
    rules: tuple[Rule, ...]


@dataclass(frozen=True)
class Not:
    rule: Rule


Rule: TypeAlias = Condition | AllOf | AnyOf | Not


# --- parsing -------------------------------------------------------------------------------------


def parse_rule(data: object) -> Rule:
    """Validate a JSON rule and return its tree; errors name the place, e.g. ``rule.all[1].op``."""
    counter = [0]
    return _parse(data, "rule", 0, counter)


def _parse(data: object, where: str, depth: int, counter: list[int]) -> Rule:
    if depth > MAX_DEPTH:
        raise InvalidRule(f"{where}: rules nest at most {MAX_DEPTH} levels deep")
    if not isinstance(data, dict):
        raise InvalidRule(f'{where}: expected an object such as {{"all": [...]}} or a condition')
    keys = set(data)
    if keys in ({"all"}, {"any"}):
        (key,) = keys
        items = data[key]
        if not isinstance(items, list) or not items:
            raise InvalidRule(f"{where}.{key}: expected a non-empty list of rules")
        rules = tuple(
            _parse(item, f"{where}.{key}[{i}]", depth + 1, counter) for i, item in enumerate(items)
        )
        return AllOf(rules) if key == "all" else AnyOf(rules)
    if keys == {"not"}:
        return Not(_parse(data["not"], f"{where}.not", depth + 1, counter))
    if "field" in keys and "op" in keys and keys <= {"field", "op", "value"}:
        counter[0] += 1
        if counter[0] > MAX_CONDITIONS:
            raise InvalidRule(f"a rule may hold at most {MAX_CONDITIONS} conditions")
        return _parse_condition(data, where)
    raise InvalidRule(
        f"{where}: expected exactly one of 'all', 'any', 'not', or a condition with "
        f"'field', 'op' and 'value'; got keys {sorted(map(str, keys))}"
    )


def _parse_condition(data: dict[str, Any], where: str) -> Condition:
    field, op = data["field"], data["op"]
    if not isinstance(field, str):
        raise InvalidRule(f"{where}.field: expected a string")
    path: tuple[str, ...] = ()
    if field.startswith("attributes."):
        path = tuple(field.split(".")[1:])
        bad = [p for p in path if not PATH_SEGMENT.match(p)]
        if bad or len(path) > MAX_DEPTH:
            raise InvalidRule(
                f"{where}.field: attribute paths are dot-separated names of letters, digits and "
                f"'_', not starting with a digit (at most {MAX_DEPTH}); got {field!r}"
            )
        field = "attributes"
    if field not in FIELD_OPS:
        known = ", ".join([*sorted(set(FIELD_OPS) - {"attributes"}), "attributes.<path>"])
        raise InvalidRule(f"{where}.field: unknown field {field!r}; known: {known}")
    op = op.replace("-", "_") if isinstance(op, str) else op
    if op not in FIELD_OPS[field]:
        allowed = ", ".join(sorted(FIELD_OPS[field]))
        raise InvalidRule(f"{where}.op: {op!r} is not allowed for {field}; allowed: {allowed}")
    if "value" not in data:
        raise InvalidRule(f"{where}.value: missing")
    value = _parse_value(field, op, data["value"], f"{where}.value")
    return Condition(field=field, op=op, value=value, path=path)


def _parse_value(field: str, op: str, value: Any, where: str) -> Any:
    if op == "exists":
        return _expect(isinstance(value, bool), value, where, "true or false")
    if op == "within_days":
        ok = _is_number(value) and 0 < value <= 36_500
        return float(_expect(ok, value, where, "a number of days between 0 and 36500"))
    if op == "in":
        if not isinstance(value, list) or not 0 < len(value) <= MAX_LIST:
            raise InvalidRule(f"{where}: expected a list of 1 to {MAX_LIST} values")
        return tuple(_parse_scalar(field, v, f"{where}[{i}]") for i, v in enumerate(value))
    if op == "between":
        if not isinstance(value, list) or len(value) != 2:
            raise InvalidRule(f"{where}: expected a list of two values [low, high]")
        low, high = (_parse_scalar(field, v, f"{where}[{i}]") for i, v in enumerate(value))
        if type(low) is not type(high) and not (_is_number(low) and _is_number(high)):
            raise InvalidRule(f"{where}: low and high must be of the same type")
        return (low, high)
    if op == "contains":
        _expect(isinstance(value, str) and value != "", value, where, "a non-empty string")
        return value.lower() if field == "email_domain" else value
    if op in ("gt", "lt") and isinstance(value, bool):
        raise InvalidRule(f"{where}: {op} compares numbers, strings or dates, not booleans")
    return _parse_scalar(field, value, where)


def _parse_scalar(field: str, value: Any, where: str) -> Scalar | datetime:
    if field in DATE_FIELDS:
        if isinstance(value, str):
            try:
                return as_utc(datetime.fromisoformat(value))
            except ValueError:
                pass
        raise InvalidRule(f"{where}: expected an ISO 8601 date-time such as 2026-01-31T00:00:00Z")
    if field in ID_FIELDS:
        ok = isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**63
        return _expect(ok, value, where, "a positive integer id")  # type: ignore[no-any-return]
    if field == "engagement_score":
        return _expect(_is_number(value), value, where, "a number")  # type: ignore[no-any-return]
    if field == "status":
        allowed = [s.value for s in SubscriberStatus]
        return _expect(value in allowed, value, where, f"one of {', '.join(allowed)}")  # type: ignore[no-any-return]
    if field in ("tag", "email_domain"):
        ok = isinstance(value, str) and 0 < len(value) <= 255
        return _expect(ok, value, where, "a non-empty string").lower()  # type: ignore[no-any-return]
    if field == "name":
        return _expect(isinstance(value, str), value, where, "a string")  # type: ignore[no-any-return]
    ok = isinstance(value, str | bool) or _is_number(value)
    return _expect(ok, value, where, "a string, number or boolean")  # type: ignore[no-any-return]


def _is_number(value: object) -> bool:
    return (
        isinstance(value, int | float) and not isinstance(value, bool) and abs(value) < MAX_NUMBER
    )


def _expect(ok: bool, value: Any, where: str, expected: str) -> Any:
    if not ok:
        raise InvalidRule(f"{where}: expected {expected}; got {value!r}")
    return value


# --- compiling -----------------------------------------------------------------------------------


def compile_rule(rule: Rule, dialect: str, now: datetime) -> ColumnElement[bool]:
    """The rule as a WHERE clause over ``subscribers``; ``now`` anchors within_days."""
    return _RuleCompiler(dialect, now).compile(rule)


class _RuleCompiler:
    def __init__(self, dialect: str, now: datetime) -> None:
        self.json = _PostgresJson() if dialect == "postgresql" else _SqliteJson()
        self.dialect = dialect
        self.now = now

    def compile(self, rule: Rule) -> ColumnElement[bool]:
        if isinstance(rule, AllOf):
            return and_(*(self.compile(r) for r in rule.rules))
        if isinstance(rule, AnyOf):
            return or_(*(self.compile(r) for r in rule.rules))
        if isinstance(rule, Not):
            return _complement(self.compile(rule.rule))
        if rule.op == "ne":
            return _complement(self.condition(Condition(rule.field, "eq", rule.value, rule.path)))
        return self.condition(rule)

    def condition(self, c: Condition) -> ColumnElement[bool]:
        if c.field == "attributes":
            return self.attribute(c)
        if c.field in ("tag", "topic", "promotion"):
            return self.membership(c.field, c.value if c.op == "in" else (c.value,))
        column = {
            "email_domain": Subscriber.email_domain,
            "name": Subscriber.name,
            "status": Subscriber.status,
            "engagement_score": Subscriber.engagement_score,
            "created_at": Subscriber.created_at,
            "last_opened_at": Subscriber.last_opened_at,
        }[c.field]
        if c.op == "exists":
            present = (
                column.is_not(None) & (column != "") if c.field == "name" else column.is_not(None)
            )
            return present if c.value else not_(present)
        if c.op == "within_days":
            return column >= self.now - timedelta(days=c.value)
        if c.op == "contains":
            return self.substring(column, c.value)
        return self.compare(column, c.op, c.value)

    def compare(self, column: Any, op: str, value: Any) -> ColumnElement[bool]:
        if op == "eq":
            return column == value  # type: ignore[no-any-return]
        if op == "in":
            return column.in_(value)  # type: ignore[no-any-return]
        if op == "gt":
            return column > value  # type: ignore[no-any-return]
        if op == "lt":
            return column < value  # type: ignore[no-any-return]
        low, high = value
        return and_(column >= low, column <= high)

    def substring(self, column: Any, value: str) -> ColumnElement[bool]:
        finder = func.strpos if self.dialect == "postgresql" else func.instr
        return finder(column, value) > 0

    def membership(self, field: str, values: tuple[Any, ...]) -> ColumnElement[bool]:
        from tidings.promotions.models import PromotionSubscription

        if field == "tag":
            return self.has_any_tag(values)
        if field == "topic":
            query = select(TopicSubscription.id).where(
                TopicSubscription.subscriber_id == Subscriber.id,
                TopicSubscription.topic_id.in_(values),
                TopicSubscription.status == TopicSubscriptionStatus.active.value,
            )
        else:
            query = select(PromotionSubscription.id).where(
                PromotionSubscription.subscriber_id == Subscriber.id,
                PromotionSubscription.promotion_id.in_(values),
                PromotionSubscription.is_active.is_(True),
            )
        return exists(query)

    def has_any_tag(self, tags: tuple[str, ...]) -> ColumnElement[bool]:
        if self.dialect == "postgresql":  # && on text[], served by the GIN index
            overlap: ColumnElement[bool] = type_coerce(Subscriber.tags, ARRAY(String(64))).overlap(
                list(tags)
            )
            return overlap
        elements = func.json_each(Subscriber.tags).table_valued("value")
        return exists(select(1).select_from(elements).where(elements.c.value.in_(tags)))

    def attribute(self, c: Condition) -> ColumnElement[bool]:
        json, path = self.json, c.path
        if c.op == "exists":
            present: ColumnElement[bool] = and_(
                json.kind(path).is_not(None), json.kind(path) != json.null
            )
            return present if c.value else not_(present)
        if c.op == "contains":
            return and_(json.is_string(path), self.substring(json.text(path), c.value))
        if c.op in ("eq", "in"):
            return or_(*self.attribute_in(path, c.value if c.op == "in" else (c.value,)))
        sample = c.value[0] if c.op == "between" else c.value
        if isinstance(sample, str):
            return and_(json.is_string(path), self.compare(self.text(path), c.op, c.value))
        return and_(json.is_number(path), self.compare(json.number(path), c.op, c.value))

    def attribute_in(self, path: tuple[str, ...], values: tuple[Any, ...]) -> list[Any]:
        """One test per JSON type among the values: strings, numbers, true, false."""
        json = self.json
        strings = [v for v in values if isinstance(v, str)]
        numbers = [v for v in values if _is_number(v)]
        tests = []
        if strings:
            tests.append(and_(json.is_string(path), self.text(path).in_(strings)))
        if numbers:
            tests.append(and_(json.is_number(path), json.number(path).in_(numbers)))
        if any(v is True for v in values):
            tests.append(json.is_true(path))
        if any(v is False for v in values):
            tests.append(json.is_false(path))
        return tests

    def text(self, path: tuple[str, ...]) -> Any:
        text = self.json.text(path)
        # PostgreSQL would order strings by the database's collation; Python and SQLite order
        # them by code point, which "C" gives.
        return text.collate("C") if self.dialect == "postgresql" else text


def _complement(condition: ColumnElement[bool]) -> ColumnElement[bool]:
    """NOT that treats NULL ("unknown", e.g. a missing attribute) as false, as WHERE does.

    Conditions stay bare elsewhere (no COALESCE around them), so indexes can serve them.
    """
    complement: ColumnElement[bool] = condition.is_not(true())
    return complement


class _SqliteJson:
    """JSON access on SQLite: json_type() names the type, json_extract() returns native values."""

    null = "null"

    def _path(self, path: tuple[str, ...]) -> str:
        return "$" + "".join(f'."{p}"' for p in path)

    def kind(self, path: tuple[str, ...]) -> Any:
        return func.json_type(Subscriber.attributes, self._path(path))

    def text(self, path: tuple[str, ...]) -> Any:
        return func.json_extract(Subscriber.attributes, self._path(path))

    def number(self, path: tuple[str, ...]) -> Any:
        return func.json_extract(Subscriber.attributes, self._path(path))

    def is_string(self, path: tuple[str, ...]) -> ColumnElement[bool]:
        return self.kind(path) == "text"  # type: ignore[no-any-return]

    def is_number(self, path: tuple[str, ...]) -> ColumnElement[bool]:
        return self.kind(path).in_(["integer", "real"])  # type: ignore[no-any-return]

    def is_true(self, path: tuple[str, ...]) -> ColumnElement[bool]:
        return self.kind(path) == "true"  # type: ignore[no-any-return]

    def is_false(self, path: tuple[str, ...]) -> ColumnElement[bool]:
        return self.kind(path) == "false"  # type: ignore[no-any-return]


class _PostgresJson:
    """JSON access on PostgreSQL (jsonb): jsonb_typeof() names the type, #>> extracts text.

    Numbers are cast inside a CASE on their type, because PostgreSQL does not promise to test
    ``jsonb_typeof(x) = 'number'`` before evaluating ``CAST(x AS FLOAT)`` in an AND.
    """

    null = "null"

    def _node(self, path: tuple[str, ...]) -> Any:
        return Subscriber.attributes[path]

    def kind(self, path: tuple[str, ...]) -> Any:
        return func.jsonb_typeof(self._node(path))

    def text(self, path: tuple[str, ...]) -> Any:
        return self._node(path).as_string()

    def number(self, path: tuple[str, ...]) -> Any:
        return case((self.kind(path) == "number", cast(self.text(path), Float)), else_=None)

    def is_string(self, path: tuple[str, ...]) -> ColumnElement[bool]:
        return self.kind(path) == "string"  # type: ignore[no-any-return]

    def is_number(self, path: tuple[str, ...]) -> ColumnElement[bool]:
        return self.kind(path) == "number"  # type: ignore[no-any-return]

    def is_true(self, path: tuple[str, ...]) -> ColumnElement[bool]:
        return and_(self.kind(path) == "boolean", self.text(path) == "true")

    def is_false(self, path: tuple[str, ...]) -> ColumnElement[bool]:
        return and_(self.kind(path) == "boolean", self.text(path) == "false")
