"""Public sign-up (no API key) with double opt-in: the rules, independent of HTTP.

Every outcome looks the same from outside (known or new address, already subscribed or not),
so the form cannot be used to find out who is on a list.
"""

from __future__ import annotations

import enum
from html import escape

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tidings.audience.models import (
    OptIn,
    Subscriber,
    SubscriberStatus,
    Suppression,
    Topic,
    TopicSubscription,
    TopicSubscriptionStatus,
)
from tidings.audience.schemas import SubscriberCreate
from tidings.audience.subscribers import create_subscriber, email_fields
from tidings.audience.topics import TopicNotFound, subscribe_to_topic
from tidings.config import Settings
from tidings.db.ids import get_by_id
from tidings.db.types import utcnow
from tidings.security.audit import record_audit
from tidings.security.tokens import InvalidToken, TokenSigner
from tidings.transports.mailbox import OutgoingMail, send_transactional

CONFIRM_PURPOSE = "confirm-subscription"
CONFIRM_TTL_SECONDS = 7 * 24 * 3600
PUBLIC_ACTOR = "public sign-up"


class SignupOutcome(enum.StrEnum):
    subscribed = "subscribed"  # single opt-in: at once
    confirmation_sent = "confirmation_sent"
    ignored = "ignored"  # suppressed, inactive or already subscribed: nothing to do


async def public_topic(session: AsyncSession, topic_id: int) -> Topic:
    topic = await get_by_id(session, Topic, topic_id)
    if topic is None or not topic.is_public:
        raise TopicNotFound(f"no public topic with id {topic_id}")
    return topic


async def public_subscribe(
    session: AsyncSession,
    settings: Settings,
    signer: TokenSigner,
    *,
    email: str,
    name: str,
    topic_id: int,
) -> SignupOutcome:
    topic = await public_topic(session, topic_id)
    address, email_hash = email_fields(email)
    if await session.scalar(select(Suppression.id).where(Suppression.email_hash == email_hash)):
        return SignupOutcome.ignored
    subscriber = await session.scalar(select(Subscriber).where(Subscriber.email_hash == email_hash))
    if subscriber is None:
        subscriber = await create_subscriber(
            session, SubscriberCreate(email=address, name=name), PUBLIC_ACTOR
        )
    elif subscriber.status != SubscriberStatus.active:
        return SignupOutcome.ignored
    row = await session.scalar(
        select(TopicSubscription).where(
            TopicSubscription.topic_id == topic.id,
            TopicSubscription.subscriber_id == subscriber.id,
        )
    )
    if row is None or row.status == TopicSubscriptionStatus.unsubscribed:
        row = (
            await subscribe_to_topic(
                session, topic, subscriber, source="public", actor=PUBLIC_ACTOR
            )
        ).subscription
    elif row.status == TopicSubscriptionStatus.active:
        return SignupOutcome.ignored
    if topic.optin == OptIn.single:
        return SignupOutcome.subscribed
    token = signer.sign(
        CONFIRM_PURPOSE, {"subscription": row.id, "subscriber": subscriber.id}, CONFIRM_TTL_SECONDS
    )
    await send_transactional(settings, confirmation_mail(settings, address, topic, token))
    return SignupOutcome.confirmation_sent


def confirmation_mail(settings: Settings, address: str, topic: Topic, token: str) -> OutgoingMail:
    link = f"{settings.base_url}/public/confirm?token={token}"
    text = (
        f"Please confirm that you want to receive {topic.name}:\n\n{link}\n\n"
        "The link is valid for 7 days. If you did not ask for this, ignore this message: "
        "nothing will be sent to you.\n"
    )
    html = (
        f"<p>Please confirm that you want to receive <strong>{escape(topic.name)}</strong>.</p>"
        f'<p><a href="{escape(link)}">Confirm my subscription</a></p>'
        "<p>The link is valid for 7 days. If you did not ask for this, ignore this message: "
        "nothing will be sent to you.</p>"
    )
    return OutgoingMail(
        to=address, subject=f"Confirm your subscription to {topic.name}", text=text, html=html
    )


async def confirm_subscription(
    session: AsyncSession, signer: TokenSigner, token: str
) -> TopicSubscription:
    """Activate a pending subscription from its link. Idempotent; a cancelled one stays so."""
    payload = signer.verify(CONFIRM_PURPOSE, token)
    row = await session.get(TopicSubscription, int(payload.get("subscription", 0)))
    if row is None or row.subscriber_id != payload.get("subscriber"):
        raise InvalidToken("this link is not valid")
    if row.status == TopicSubscriptionStatus.unsubscribed:
        raise InvalidToken("this subscription was cancelled since; please subscribe again")
    if row.status == TopicSubscriptionStatus.pending:
        row.status, row.subscribed_at = TopicSubscriptionStatus.active.value, utcnow()
        record_audit(
            session,
            PUBLIC_ACTOR,
            "topic.confirm",
            "topic_subscription",
            row.id,
            {"topic_id": row.topic_id, "subscriber_id": row.subscriber_id},
        )
        await session.commit()
    return row
