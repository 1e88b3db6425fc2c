"""GDPR: everything held about a person (Art. 15/20), and erasure (Art. 17).

Erasure keeps a tombstone row without personal data, so that references (subscriptions, and
later deliveries and events) stay valid and aggregates stay correct, and keeps the address's
blind index in the suppression list so it is never mailed again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tidings.audience.models import (
    Subscriber,
    SubscriberStatus,
    Suppression,
    SuppressionReason,
    TopicSubscription,
    TopicSubscriptionStatus,
)
from tidings.audience.subscribers import find_subscriber, set_status
from tidings.campaigns.models import Delivery
from tidings.db.types import UTCDateTime, utcnow
from tidings.promotions.models import PromotionSubscription
from tidings.security.audit import record_audit
from tidings.security.models import AuditEntry
from tidings.tracking.models import Event

ERASED_REPLY = "[the server's reply was erased with the subscriber]"


@dataclass(frozen=True)
class PersonalData:
    subscriber: Subscriber
    topic_subscriptions: list[TopicSubscription]
    promotion_subscriptions: list[PromotionSubscription]
    history: list[AuditEntry]
    events: list[Event]
    exported_at: datetime


async def personal_data(session: AsyncSession, ref: str | int, actor: str) -> PersonalData:
    subscriber = await find_subscriber(session, ref)
    topics = await session.scalars(
        select(TopicSubscription)
        .where(TopicSubscription.subscriber_id == subscriber.id)
        .order_by(TopicSubscription.id)
    )
    promotions = await session.scalars(
        select(PromotionSubscription)
        .where(PromotionSubscription.subscriber_id == subscriber.id)
        .order_by(PromotionSubscription.id)
    )
    history = await session.scalars(
        select(AuditEntry)
        .where(AuditEntry.target_type == "subscriber", AuditEntry.target_id == str(subscriber.id))
        .order_by(AuditEntry.id)
    )
    events = await session.scalars(
        select(Event).where(Event.subscriber_id == subscriber.id).order_by(Event.id)
    )
    data = PersonalData(
        subscriber, list(topics), list(promotions), list(history), list(events), utcnow()
    )
    record_audit(session, actor, "subscriber.export_personal_data", "subscriber", subscriber.id)
    await session.commit()
    return data


async def erase_subscriber(session: AsyncSession, ref: str | int, actor: str) -> Subscriber:
    """Delete a person's data, keep an anonymous tombstone and suppress the address. Idempotent."""
    subscriber = await find_subscriber(session, ref)
    if subscriber.status == SubscriberStatus.erased:
        return subscriber
    now = utcnow()
    suppression = await session.scalar(
        select(Suppression).where(Suppression.email_hash == subscriber.email_hash)
    )
    if suppression is None:
        session.add(Suppression(email_hash=subscriber.email_hash, reason=SuppressionReason.erased))
    else:
        suppression.reason = SuppressionReason.erased.value
    set_status(subscriber, SubscriberStatus.erased)
    subscriber.email = ""
    subscriber.email_hash = f"erased:{subscriber.id}"  # frees the unique index, names nobody
    subscriber.email_domain = ""
    subscriber.name = ""
    subscriber.attributes = {}
    subscriber.tags = []
    subscriber.phone = None
    subscriber.timezone = None
    subscriber.last_opened_at = None
    subscriber.last_import_id = None
    subscriber.engagement_sum, subscriber.engagement_score, subscriber.engaged_at = 0.0, 0.0, None
    await session.execute(
        update(TopicSubscription)
        .where(
            TopicSubscription.subscriber_id == subscriber.id,
            TopicSubscription.status != TopicSubscriptionStatus.unsubscribed.value,
        )
        .values(
            status=TopicSubscriptionStatus.unsubscribed.value,
            unsubscribed_at=now,
            source=None,
            updated_at=now,
        )
    )
    await session.execute(
        update(PromotionSubscription)
        .where(PromotionSubscription.subscriber_id == subscriber.id)
        .values(
            meta={},
            is_active=False,
            deactivated_at=func.coalesce(
                PromotionSubscription.deactivated_at, literal(now, UTCDateTime())
            ),
            updated_at=now,
        )
    )
    # Servers quote the address in their replies ("550 5.1.1 <ann@example.com>: unknown").
    await session.execute(
        update(Delivery)
        .where(Delivery.subscriber_id == subscriber.id, Delivery.error.is_not(None))
        .values(error=ERASED_REPLY)
    )
    # Events keep their type and time (campaign statistics stay right) but nothing that could
    # name the person: providers' payloads and replies quote the address, URLs may carry it.
    await session.execute(
        update(Event)
        .where(Event.subscriber_id == subscriber.id)
        .values(raw=None, user_agent=None, url=None, reason=None)
    )
    record_audit(session, actor, "subscriber.erase", "subscriber", subscriber.id)
    await session.commit()
    return subscriber
