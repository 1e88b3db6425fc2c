"""Unsubscribing from a message's link, without logging in: the link's token names the
delivery, and so the subscriber and the campaign.

"This list" means the campaign's topics (a campaign sent to everyone has none, and then it
means everything); "everything" makes the subscriber unsubscribed, which no campaign mails. The
change is committed before the answer, so the next delivery claimed for that subscriber is
skipped at composing (see ``delivery.compose``). Each unsubscribe writes an event and an audit
row; doing it twice changes nothing more.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tidings.audience.models import (
    Subscriber,
    SubscriberStatus,
    Topic,
    TopicSubscription,
    TopicSubscriptionStatus,
)
from tidings.audience.subscribers import set_status
from tidings.campaigns.audience import Audience
from tidings.campaigns.models import Campaign, CampaignRun, Delivery
from tidings.hooks.service import enqueue_for_events
from tidings.security.audit import record_audit
from tidings.tracking.events import EventType
from tidings.tracking.models import Event

ACTOR = "subscriber:link"


@dataclass(frozen=True)
class Recipient:
    """Whom an unsubscribe link is for, and the lists of the message it came in."""

    delivery_id: int
    campaign_id: int
    subscriber: Subscriber
    topics: list[Topic]  # the campaign's topics; empty: it went to everyone

    @property
    def can_be_mailed(self) -> bool:
        return self.subscriber.status == SubscriberStatus.active.value


async def find_recipient(session: AsyncSession, delivery_id: int) -> Recipient | None:
    row = (
        await session.execute(
            select(Delivery.id, Campaign, Subscriber)
            .join(CampaignRun, CampaignRun.id == Delivery.run_id)
            .join(Campaign, Campaign.id == CampaignRun.campaign_id)
            .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
            .where(Delivery.id == delivery_id)
        )
    ).first()
    if row is None:
        return None
    delivery_id, campaign, subscriber = row
    topic_ids = Audience.from_json(campaign.audience).topic_ids
    topics = (
        list((await session.scalars(select(Topic).where(Topic.id.in_(topic_ids)))).all())
        if topic_ids
        else []
    )
    return Recipient(delivery_id, campaign.id, subscriber, topics)


async def unsubscribe(
    session: AsyncSession, recipient: Recipient, *, everything: bool, now: datetime
) -> None:
    """Unsubscribe from the message's lists (or from everything). Commits."""
    subscriber = recipient.subscriber
    if subscriber.status == SubscriberStatus.erased.value:
        return  # nothing left to unsubscribe, and an erased row must stay as it is
    if everything or not recipient.topics:
        set_status(subscriber, SubscriberStatus.unsubscribed)
        await _leave_topics(session, subscriber.id, None, now)
        scope = "everything"
    else:
        await _leave_topics(session, subscriber.id, [t.id for t in recipient.topics], now)
        scope = "topics " + ",".join(str(t.id) for t in recipient.topics)
    session.add(
        event := Event(
            type=EventType.unsubscribed.value,
            occurred_at=now,
            received_at=now,
            source="unsubscribe",
            delivery_id=recipient.delivery_id,
            campaign_id=recipient.campaign_id,
            subscriber_id=subscriber.id,
            reason=scope,
            machine=False,
        )
    )
    await session.flush()  # the event's id, which its webhook deliveries name
    await enqueue_for_events(session, [event], now)
    record_audit(session, ACTOR, "subscriber.unsubscribe_link", "subscriber", subscriber.id, {
        "scope": scope, "delivery": recipient.delivery_id,
    })  # fmt: skip
    await session.commit()


async def topic_choices(session: AsyncSession, subscriber_id: int) -> list[tuple[Topic, bool]]:
    """The topics a subscriber may choose from (public ones, and any they are in), each with
    whether they receive it."""
    subscribed = set(
        (
            await session.scalars(
                select(TopicSubscription.topic_id).where(
                    TopicSubscription.subscriber_id == subscriber_id,
                    TopicSubscription.status == TopicSubscriptionStatus.active.value,
                )
            )
        ).all()
    )
    topics = await session.scalars(
        select(Topic)
        .where(Topic.is_public.is_(True) | Topic.id.in_(subscribed or {0}))
        .order_by(Topic.name)
    )
    return [(topic, topic.id in subscribed) for topic in topics]


async def choose_topics(
    session: AsyncSession, recipient: Recipient, wanted: set[int], now: datetime
) -> None:
    """Keep the subscriber in exactly the ``wanted`` topics among those offered. Commits.

    Joining needs no confirmation mail: the link came to this mailbox, which is what double
    opt-in proves."""
    subscriber = recipient.subscriber
    offered = {topic.id: member for topic, member in await topic_choices(session, subscriber.id)}
    leave = [t for t, member in offered.items() if member and t not in wanted]
    join = [t for t, member in offered.items() if not member and t in wanted]
    if leave:
        await _leave_topics(session, subscriber.id, leave, now)
    for topic_id in join:
        await _join_topic(session, subscriber.id, topic_id, now)
    if join and subscriber.status == SubscriberStatus.unsubscribed.value:
        set_status(subscriber, SubscriberStatus.active)  # choosing a topic is opting back in
    record_audit(session, ACTOR, "subscriber.preferences", "subscriber", subscriber.id, {
        "joined": join, "left": leave,
    })  # fmt: skip
    await session.commit()


async def _leave_topics(
    session: AsyncSession, subscriber_id: int, topic_ids: list[int] | None, now: datetime
) -> None:
    statement = update(TopicSubscription).where(
        TopicSubscription.subscriber_id == subscriber_id,
        TopicSubscription.status != TopicSubscriptionStatus.unsubscribed.value,
    )
    if topic_ids is not None:
        statement = statement.where(TopicSubscription.topic_id.in_(topic_ids))
    await session.execute(
        statement.values(status=TopicSubscriptionStatus.unsubscribed.value, unsubscribed_at=now)
    )


async def _join_topic(
    session: AsyncSession, subscriber_id: int, topic_id: int, now: datetime
) -> None:
    row = await session.scalar(
        select(TopicSubscription).where(
            TopicSubscription.subscriber_id == subscriber_id,
            TopicSubscription.topic_id == topic_id,
        )
    )
    if row is None:
        row = TopicSubscription(topic_id=topic_id, subscriber_id=subscriber_id)
        session.add(row)
    row.status, row.source, row.subscribed_at = (
        TopicSubscriptionStatus.active.value, "preferences", now,
    )  # fmt: skip
