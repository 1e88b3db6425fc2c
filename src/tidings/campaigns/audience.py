"""Whom a campaign goes to: topics, a segment, a promotion and tags, as one segment rule.

Every criterion given must hold (subscribed to any of the topics, in the segment, signed up to
the promotion, carrying any of the tags), and a recipient is always an active subscriber whose
address is not suppressed. The criteria become one rule of the segment DSL, so there is one
compiler of audience SQL for segments, counts and sends.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from tidings.audience.models import Subscriber, SubscriberStatus, Suppression
from tidings.audience.segment_rules import AllOf, Condition, Rule, compile_rule
from tidings.audience.segments import get_segment, segment_rule


@dataclass(frozen=True)
class Audience:
    topic_ids: tuple[int, ...] = ()
    segment_id: int | None = None
    promotion_id: int | None = None
    tags: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Audience:
        return cls(
            topic_ids=tuple(data.get("topic_ids") or ()),
            segment_id=data.get("segment_id"),
            promotion_id=data.get("promotion_id"),
            tags=tuple(data.get("tags") or ()),
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "topic_ids": list(self.topic_ids),
            "segment_id": self.segment_id,
            "promotion_id": self.promotion_id,
            "tags": list(self.tags),
        }

    @property
    def is_everyone(self) -> bool:
        return not (self.topic_ids or self.segment_id or self.promotion_id or self.tags)


async def audience_rule(session: AsyncSession, audience: Audience) -> Rule:
    """The audience's criteria as one rule (the segment's current rule, read now)."""
    rules: list[Rule] = []
    if audience.topic_ids:
        rules.append(Condition("topic", "in", audience.topic_ids))
    if audience.segment_id is not None:
        rules.append(segment_rule(await get_segment(session, audience.segment_id)))
    if audience.promotion_id is not None:
        rules.append(Condition("promotion", "in", (audience.promotion_id,)))
    if audience.tags:
        rules.append(Condition("tag", "in", audience.tags))
    return AllOf(tuple(rules))


def recipients_condition(rule: Rule, dialect: str, now: datetime) -> ColumnElement[bool]:
    """WHERE clause over ``subscribers``: the rule, active, and not suppressed."""
    suppressed = exists(select(1).where(Suppression.email_hash == Subscriber.email_hash))
    conditions = [Subscriber.status == SubscriberStatus.active.value, ~suppressed]
    if rule != AllOf(()):  # everyone
        conditions.append(compile_rule(rule, dialect, now))
    return and_(*conditions)
