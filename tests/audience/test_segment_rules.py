"""Segment rules: SQL on both databases selects exactly what a plain-Python evaluation selects."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from tests.audience.segment_oracle import Person, matches
from tidings.audience.models import (
    Subscriber,
    Topic,
    TopicSubscription,
)
from tidings.audience.segment_rules import InvalidRule, compile_rule, parse_rule
from tidings.db.types import utcnow
from tidings.promotions.models import Promotion, PromotionSubscription
from tidings.runtime import Runtime

DOMAINS = ["example.com", "mail.example.org", "gmail.com", "corp.io"]
NAMES = ["", "Ann", "Bob Smith", "ann", "Zoë"]
STATUSES = ["active", "unsubscribed", "bounced", "complained"]
TAGS = ["retail", "tech", "finance", "vip"]
SCORES = [0.0, 10.5, 40.0, 55.25, 90.0]
ATTRIBUTE_VALUES: list[Any] = ["pro", "team", "Pro", "free", 1, 5, 2.5, 10, True, False, "5", None]
PATHS = ["plan", "seats", "vip", "address.city", "address", "missing", "score"]
BASE = utcnow().replace(microsecond=0)


def _attributes(rng: random.Random) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    for key in ("plan", "seats", "vip", "score"):
        if rng.random() < 0.8:
            attributes[key] = rng.choice(ATTRIBUTE_VALUES)
    roll = rng.random()
    if roll < 0.5:
        attributes["address"] = {"city": rng.choice(["Berlin", "berlin", "Oslo", 7, None])}
    elif roll < 0.7:
        attributes["address"] = rng.choice(["Berlin", 3, ["Berlin"]])
    return attributes


@pytest.fixture
async def population(db: Runtime) -> list[Person]:
    """Forty subscribers with every kind of value the rules can meet, stored through the ORM."""
    rng = random.Random(20261125)
    people: list[Person] = []
    async with db.database.sessions() as session:
        topics = [Topic(name=f"t{i}") for i in range(3)]
        promotions = [
            Promotion(name=f"p{i}", start_at=BASE, end_at=BASE + timedelta(days=9), status="active")
            for i in range(2)
        ]
        session.add_all([*topics, *promotions])
        await session.flush()
        for i in range(40):
            last_open = rng.choice([None, BASE - timedelta(days=rng.randint(0, 90) + 0.5)])
            row = Subscriber(
                email=f"p{i}@{rng.choice(DOMAINS)}",
                email_hash=f"{i:064d}",
                email_domain=rng.choice(DOMAINS),
                name=rng.choice(NAMES),
                status=rng.choice(STATUSES),
                engagement_score=rng.choice(SCORES),
                created_at=BASE - timedelta(days=rng.randint(0, 100) + 0.5),
                last_opened_at=last_open,
                attributes=_attributes(rng),
                tags=rng.sample(TAGS, rng.randint(0, 3)),
            )
            session.add(row)
            await session.flush()
            person = Person(
                id=row.id,
                email_domain=row.email_domain,
                name=row.name,
                status=row.status,
                engagement_score=row.engagement_score,
                created_at=row.created_at,
                last_opened_at=row.last_opened_at,
                attributes=row.attributes,
                tags=set(row.tags),
            )
            for topic in rng.sample(topics, rng.randint(0, 3)):
                status = rng.choice(["active", "pending", "unsubscribed"])
                session.add(
                    TopicSubscription(topic_id=topic.id, subscriber_id=row.id, status=status)
                )
                if status == "active":
                    person.topics.add(topic.id)
            for promotion in rng.sample(promotions, rng.randint(0, 2)):
                active = rng.random() < 0.7
                session.add(
                    PromotionSubscription(
                        subscriber_id=row.id, promotion_id=promotion.id, is_active=active, meta={}
                    )
                )
                if active:
                    person.promotions.add(promotion.id)
            people.append(person)
        await session.commit()
    return people


def _dates() -> st.SearchStrategy[str]:
    return st.integers(0, 100).map(lambda d: (BASE - timedelta(days=d)).isoformat())


def _pair(values: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any]]:
    return st.lists(values, min_size=2, max_size=2).map(sorted)


def _leaf_values(field: str) -> dict[str, st.SearchStrategy[Any]]:
    """The operators of a field, each with a strategy for its value."""

    def one_of(pool: list[Any]) -> dict[str, st.SearchStrategy[Any]]:
        value = st.sampled_from(pool)
        return {"eq": value, "ne": value, "in": st.lists(value, min_size=1, max_size=3)}

    if field == "email_domain":
        return one_of([*DOMAINS, "nope.net"]) | {
            "contains": st.sampled_from(["example", "MAIL", "com", "x"])
        }
    if field == "name":
        return one_of(NAMES[1:]) | {
            "contains": st.sampled_from(["nn", "Smith", "ö", "A"]),
            "exists": st.booleans(),
        }
    if field == "status":
        return one_of(STATUSES)
    if field == "tag":
        return one_of([*TAGS, "none"])
    if field in ("topic", "promotion"):
        return one_of([1, 2, 3, 999])
    if field == "engagement_score":
        numbers = st.sampled_from([*SCORES, 50, 0])
        return one_of([*SCORES, 50]) | {"gt": numbers, "lt": numbers, "between": _pair(numbers)}
    if field in ("created_at", "last_opened_at"):
        dates = {
            "gt": _dates(),
            "lt": _dates(),
            "between": _pair(_dates()),
            "within_days": st.sampled_from([1, 7, 30, 60]),
        }
        return dates | ({"exists": st.booleans()} if field == "last_opened_at" else {})
    scalars = [v for v in ATTRIBUTE_VALUES if v is not None] + ["Berlin", 7]
    numbers_or_strings = st.sampled_from([1, 5, 3.5, 10, "m", "pro", "Berlin"])
    return one_of(scalars) | {
        "contains": st.sampled_from(["pr", "o", "Ber"]),
        "gt": numbers_or_strings,
        "lt": numbers_or_strings,
        "between": st.one_of(
            _pair(st.sampled_from([1, 2.5, 5, 10])), _pair(st.sampled_from(["a", "m", "pro", "z"]))
        ),
        "exists": st.booleans(),
    }


@st.composite
def conditions(draw: st.DrawFn) -> dict[str, Any]:
    field = draw(
        st.sampled_from(
            [
                "email_domain",
                "name",
                "status",
                "tag",
                "topic",
                "promotion",
                "engagement_score",
                "created_at",
                "last_opened_at",
                "attributes",
            ]
        )
    )
    ops = _leaf_values(field)
    op = draw(st.sampled_from(sorted(ops)))
    name = f"attributes.{draw(st.sampled_from(PATHS))}" if field == "attributes" else field
    return {"field": name, "op": op, "value": draw(ops[op])}


rules = st.recursive(
    conditions(),
    lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=4).map(lambda rs: {"all": rs}),
        st.lists(inner, min_size=1, max_size=4).map(lambda rs: {"any": rs}),
        inner.map(lambda r: {"not": r}),
    ),
    max_leaves=8,
)


@settings(
    max_examples=250,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(raw=rules)
async def test_sql_of_random_rules_selects_exactly_what_python_evaluation_selects(
    raw: dict[str, Any], population: list[Person], db: Runtime
) -> None:
    rule = parse_rule(raw)
    now = utcnow()
    async with db.database.sessions() as session:
        condition = compile_rule(rule, db.database.dialect, now)
        selected = set((await session.scalars(select(Subscriber.id).where(condition))).all())
    expected = {person.id for person in population if matches(rule, person, now)}
    assert selected == expected, raw


@pytest.mark.parametrize(
    ("rule", "fragment"),
    [
        ([], "expected an object"),
        ({"all": []}, "rule.all: expected a non-empty list"),
        ({"all": [{"field": "tag", "op": "gt", "value": "x"}]}, "rule.all[0].op: 'gt' is not"),
        ({"field": "shoe_size", "op": "eq", "value": 1}, "unknown field 'shoe_size'"),
        ({"field": "attributes.a-b", "op": "eq", "value": 1}, "attribute paths"),
        ({"field": "attributes.0", "op": "eq", "value": 1}, "not starting with a digit"),
        ({"field": "status", "op": "eq", "value": "gone"}, "one of active"),
        ({"field": "created_at", "op": "gt", "value": "yesterday"}, "ISO 8601"),
        ({"field": "engagement_score", "op": "between", "value": [1]}, "[low, high]"),
        ({"field": "attributes.x", "op": "gt", "value": True}, "not booleans"),
        ({"field": "topic", "op": "eq", "value": "1"}, "positive integer id"),
        ({"field": "tag", "op": "eq"}, "rule.value: missing"),
        ({"any": [{"field": "tag", "op": "eq", "value": "a"}], "not": {}}, "exactly one of"),
        ({"field": "engagement_score", "op": "gt", "value": 1e300}, "a number"),
    ],
)
def test_invalid_rules_are_refused_with_the_place_and_the_reason(rule: Any, fragment: str) -> None:
    with pytest.raises(InvalidRule) as caught:
        parse_rule(rule)
    assert fragment in caught.value.detail


def test_deep_or_huge_rules_are_refused() -> None:
    deep: dict[str, Any] = {"field": "tag", "op": "eq", "value": "a"}
    for _ in range(10):
        deep = {"not": deep}
    with pytest.raises(InvalidRule, match="nest at most"):
        parse_rule(deep)
    many = {"any": [{"field": "tag", "op": "eq", "value": str(i)} for i in range(101)]}
    with pytest.raises(InvalidRule, match="at most 100 conditions"):
        parse_rule(many)


def test_within_days_may_be_spelled_with_a_hyphen() -> None:
    rule = parse_rule({"field": "created_at", "op": "within-days", "value": 7})
    assert rule.op == "within_days"  # type: ignore[union-attr]
