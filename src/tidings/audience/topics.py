"""Topic rules: CRUD, and subscriptions whose history survives unsubscribing (a row is removed
only with its topic)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from tidings.audience.models import (
    OptIn,
    Subscriber,
    Topic,
    TopicSubscription,
    TopicSubscriptionStatus,
)
from tidings.audience.schemas import TopicCreate, TopicUpdate
from tidings.db.errors import flush_unique
from tidings.db.ids import get_by_id
from tidings.db.types import utcnow
from tidings.errors import Conflict, NotFound
from tidings.security.audit import record_audit


class TopicNotFound(NotFound):
    pass


class DuplicateTopic(Conflict):
    code = "duplicate_topic"


class AlreadySubscribed(Conflict):
    code = "already_subscribed"


class NotSubscribed(NotFound):
    pass


@dataclass(frozen=True)
class TopicSubscriptionResult:
    subscription: TopicSubscription
    created: bool  # a new row, as opposed to a reactivated one


async def get_topic(session: AsyncSession, topic_id: int) -> Topic:
    topic = await get_by_id(session, Topic, topic_id)
    if topic is None:
        raise TopicNotFound(f"no topic with id {topic_id}")
    return topic


async def create_topic(session: AsyncSession, data: TopicCreate, actor: str) -> Topic:
    name = data.name.strip()
    await _ensure_name_free(session, name)
    topic = Topic(
        name=name, description=data.description, is_public=data.is_public, optin=data.optin.value
    )
    session.add(topic)
    await _flush_unique_name(session, name)
    record_audit(session, actor, "topic.create", "topic", topic.id, {"name": name})
    await session.commit()
    return topic


async def list_topics(session: AsyncSession, *, limit: int, offset: int) -> tuple[list[Topic], int]:
    total = int(await session.scalar(select(func.count()).select_from(Topic)) or 0)
    topics = await session.scalars(select(Topic).order_by(Topic.id).limit(limit).offset(offset))
    return list(topics.all()), total


async def update_topic(
    session: AsyncSession, topic_id: int, data: TopicUpdate, actor: str
) -> Topic:
    topic = await get_topic(session, topic_id)
    changed = data.model_dump(exclude_unset=True, exclude_none=True)
    if "name" in changed:
        changed["name"] = changed["name"].strip()
        if changed["name"] != topic.name:
            await _ensure_name_free(session, changed["name"])
    for field, value in changed.items():
        setattr(topic, field, value.value if isinstance(value, OptIn) else value)
    await _flush_unique_name(session, topic.name)
    record_audit(session, actor, "topic.update", "topic", topic.id, {"fields": sorted(changed)})
    await session.commit()
    return topic


async def delete_topic(session: AsyncSession, topic_id: int, actor: str) -> None:
    topic = await get_topic(session, topic_id)
    await session.delete(topic)
    record_audit(session, actor, "topic.delete", "topic", topic_id, {"name": topic.name})
    await session.commit()


async def _ensure_name_free(session: AsyncSession, name: str) -> None:
    if await session.scalar(select(Topic.id).where(Topic.name == name)):
        raise DuplicateTopic(f"a topic named {name!r} already exists")


async def _flush_unique_name(session: AsyncSession, name: str) -> None:
    duplicate = DuplicateTopic(f"a topic named {name!r} already exists")
    await flush_unique(session, duplicate, "topics", "name")


async def subscribe_to_topic(
    session: AsyncSession,
    topic: Topic,
    subscriber: Subscriber,
    *,
    source: str | None,
    actor: str,
    commit: bool = True,
) -> TopicSubscriptionResult:
    """Subscribe, or reactivate an earlier unsubscription. A live subscription is a conflict.

    Double opt-in topics start the subscription as pending until it is confirmed.
    """
    status = (
        TopicSubscriptionStatus.pending
        if topic.optin == OptIn.double
        else TopicSubscriptionStatus.active
    )
    # Kept as plain ints: a rollback below expires the ORM objects, and reading their attributes
    # afterwards would need a lazy load (MissingGreenlet under asyncio, i.e. a 500).
    topic_id, subscriber_id = topic.id, subscriber.id
    row = await _subscription(session, topic_id, subscriber_id)
    created = row is None
    if row is None:
        row = TopicSubscription(topic_id=topic.id, subscriber_id=subscriber.id)
        session.add(row)
    elif row.status != TopicSubscriptionStatus.unsubscribed:
        raise AlreadySubscribed(
            f"subscriber {subscriber.id} is already subscribed to topic {topic.id}"
        )
    row.status, row.source, row.subscribed_at = status.value, source, utcnow()
    row.topic = topic
    duplicate = AlreadySubscribed(
        f"subscriber {subscriber_id} is already subscribed to topic {topic_id}"
    )
    await flush_unique(session, duplicate, "topic_subscriptions", "topic_id", "subscriber_id")
    action = "topic.subscribe" if created else "topic.resubscribe"
    record_audit(
        session,
        actor,
        action,
        "topic_subscription",
        row.id,
        {"topic_id": topic.id, "subscriber_id": subscriber.id},
    )
    if commit:
        await session.commit()
    return TopicSubscriptionResult(subscription=row, created=created)


async def unsubscribe_from_topic(
    session: AsyncSession, topic: Topic, subscriber: Subscriber, *, actor: str
) -> TopicSubscription:
    """Mark the subscription unsubscribed; the row and its timestamps stay. Idempotent."""
    row = await _subscription(session, topic.id, subscriber.id)
    if row is None:
        raise NotSubscribed(f"subscriber {subscriber.id} is not subscribed to topic {topic.id}")
    if row.status != TopicSubscriptionStatus.unsubscribed:
        row.status, row.unsubscribed_at = TopicSubscriptionStatus.unsubscribed.value, utcnow()
        record_audit(
            session,
            actor,
            "topic.unsubscribe",
            "topic_subscription",
            row.id,
            {"topic_id": topic.id, "subscriber_id": subscriber.id},
        )
        await session.commit()
    return row


async def _subscription(
    session: AsyncSession, topic_id: int, subscriber_id: int
) -> TopicSubscription | None:
    return await session.scalar(
        select(TopicSubscription).where(
            TopicSubscription.topic_id == topic_id, TopicSubscription.subscriber_id == subscriber_id
        )
    )


async def list_topic_members(
    session: AsyncSession,
    topic_id: int,
    *,
    status: TopicSubscriptionStatus | None,
    limit: int,
    offset: int,
) -> tuple[list[tuple[TopicSubscription, Subscriber]], int]:
    await get_topic(session, topic_id)
    query = (
        select(TopicSubscription, Subscriber)
        .join(Subscriber, Subscriber.id == TopicSubscription.subscriber_id)
        .where(TopicSubscription.topic_id == topic_id)
    )
    if status is not None:
        query = query.where(TopicSubscription.status == status.value)
    total = int(await session.scalar(select(func.count()).select_from(query.subquery())) or 0)
    rows = await session.execute(query.order_by(TopicSubscription.id).limit(limit).offset(offset))
    return [(sub, member) for sub, member in rows], total


async def list_subscriber_topics(
    session: AsyncSession, subscriber: Subscriber
) -> list[TopicSubscription]:
    rows = await session.scalars(
        select(TopicSubscription)
        .where(TopicSubscription.subscriber_id == subscriber.id)
        .order_by(TopicSubscription.topic_id)
    )
    return list(rows.all())
