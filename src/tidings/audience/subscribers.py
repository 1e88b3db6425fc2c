"""Subscriber rules: create (no duplicates), find by id or e-mail, update, unsubscribe."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from tidings.audience.models import (
    Subscriber,
    SubscriberStatus,
    Suppression,
    TopicSubscription,
    TopicSubscriptionStatus,
)
from tidings.audience.schemas import SubscriberCreate, SubscriberUpdate
from tidings.audience.segment_rules import Condition, Rule, compile_rule
from tidings.db.errors import flush_unique
from tidings.db.ids import MAX_ID
from tidings.db.types import utcnow
from tidings.errors import Conflict, NotFound, RuleViolation
from tidings.pagination import decode_cursor, encode_cursor
from tidings.security.audit import record_audit
from tidings.security.crypto import InvalidEmail, active_cipher, parse_email

SelectT = TypeVar("SelectT", bound=Select[Any])


class SubscriberNotFound(NotFound):
    pass


class DuplicateSubscriber(Conflict):
    code = "duplicate_subscriber"


class InvalidSubscriber(RuleViolation):
    code = "invalid_subscriber"


@dataclass(frozen=True)
class SubscriberFilter:
    status: SubscriberStatus | None = None
    tag: str | None = None
    topic_id: int | None = None
    email: str | None = None
    rule: Rule | None = None  # a segment rule, compiled to SQL


@dataclass(frozen=True)
class SubscriberPage:
    items: list[Subscriber]
    total: int
    next_cursor: str | None


def email_fields(raw: str) -> tuple[str, str]:
    """Return (stored address, blind index) or raise a 422-mapped error naming the problem."""
    try:
        parsed = parse_email(raw)
    except InvalidEmail as exc:
        raise InvalidSubscriber(f"email {raw!r} is invalid: {exc}") from None
    return parsed.address, active_cipher().blind_index(parsed.index_key)


class SuppressedAddress(Conflict):
    code = "suppressed_address"


async def _refuse_suppressed(session: AsyncSession, email_hash: str, address: str) -> None:
    reason = await session.scalar(
        select(Suppression.reason).where(Suppression.email_hash == email_hash)
    )
    if reason is not None:
        raise SuppressedAddress(f"{address!r} is suppressed ({reason}) and cannot be added")


def domain_of(address: str) -> str:
    return address.rsplit("@", 1)[1].lower()


async def find_subscriber(session: AsyncSession, ref: str | int) -> Subscriber:
    """Find by numeric id, or by e-mail address through the blind index."""
    subscriber: Subscriber | None = None
    if isinstance(ref, int) or (ref.isascii() and ref.isdigit()):
        number = int(ref)
        if number <= MAX_ID:
            subscriber = await session.get(Subscriber, number)
    else:
        try:
            email_hash = active_cipher().blind_index(parse_email(ref).index_key)
        except InvalidEmail:
            email_hash = None
        if email_hash is not None:
            subscriber = await session.scalar(
                select(Subscriber).where(Subscriber.email_hash == email_hash)
            )
    if subscriber is None:
        raise SubscriberNotFound(f"no subscriber with id or email {ref!r}")
    return subscriber


async def create_subscriber(
    session: AsyncSession, data: SubscriberCreate, actor: str
) -> Subscriber:
    from tidings.audience.topics import get_topic, subscribe_to_topic

    address, email_hash = email_fields(data.email)
    if await session.scalar(select(Subscriber.id).where(Subscriber.email_hash == email_hash)):
        raise DuplicateSubscriber(f"a subscriber with email {address!r} already exists")
    await _refuse_suppressed(session, email_hash, address)
    topics = [await get_topic(session, topic_id) for topic_id in dict.fromkeys(data.topic_ids)]
    subscriber = Subscriber(
        email=address,
        email_hash=email_hash,
        email_domain=domain_of(address),
        name=data.name.strip(),
        attributes=data.attributes,
        timezone=data.timezone,
        phone=data.phone,
        status=SubscriberStatus.active.value,
        tags=data.tags,
    )
    session.add(subscriber)
    duplicate = DuplicateSubscriber(f"a subscriber with email {address!r} already exists")
    await flush_unique(session, duplicate, "subscribers", "email_hash")
    for topic in topics:
        await subscribe_to_topic(
            session, topic, subscriber, source="api", actor=actor, commit=False
        )
    record_audit(session, actor, "subscriber.create", "subscriber", subscriber.id)
    await session.commit()
    return subscriber


async def update_subscriber(
    session: AsyncSession, ref: str | int, data: SubscriberUpdate, actor: str
) -> Subscriber:
    subscriber = await find_subscriber(session, ref)
    if subscriber.status == SubscriberStatus.erased:
        raise InvalidSubscriber(f"subscriber {subscriber.id} was erased and cannot be changed")
    if data.status == SubscriberStatus.erased:
        raise InvalidSubscriber("erase a subscriber with POST /subscribers/{id}/erase")
    changed = data.model_dump(exclude_unset=True)
    if data.email is not None:
        address, email_hash = email_fields(data.email)
        if email_hash != subscriber.email_hash:
            taken = await session.scalar(
                select(Subscriber.id).where(Subscriber.email_hash == email_hash)
            )
            if taken:
                raise DuplicateSubscriber(f"a subscriber with email {address!r} already exists")
            await _refuse_suppressed(session, email_hash, address)
            subscriber.email, subscriber.email_hash = address, email_hash
            subscriber.email_domain = domain_of(address)
    for field in ("timezone", "phone"):  # nullable: an explicit null clears them
        if field in changed:
            setattr(subscriber, field, changed[field])
    for field in ("name", "attributes"):
        if changed.get(field) is not None:
            setattr(subscriber, field, changed[field])
    if data.tags is not None:
        subscriber.tags = data.tags
    if data.status is not None:
        set_status(subscriber, data.status)
    record_audit(
        session,
        actor,
        "subscriber.update",
        "subscriber",
        subscriber.id,
        {"fields": sorted(changed)},
    )
    duplicate = DuplicateSubscriber("another subscriber took that email address meanwhile")
    await flush_unique(session, duplicate, "subscribers", "email_hash", commit=True)
    return subscriber


async def unsubscribe_subscriber(session: AsyncSession, ref: str | int, actor: str) -> Subscriber:
    """Seed 002's DELETE: the subscriber stops receiving mail; the row and its history stay."""
    subscriber = await find_subscriber(session, ref)
    if subscriber.status != SubscriberStatus.unsubscribed:
        set_status(subscriber, SubscriberStatus.unsubscribed)
        record_audit(session, actor, "subscriber.unsubscribe", "subscriber", subscriber.id)
        await session.commit()
    return subscriber


def set_status(subscriber: Subscriber, status: SubscriberStatus) -> None:
    """Change the status, keeping when it changed (and when the subscriber unsubscribed)."""
    if subscriber.status == status:
        return
    now = utcnow()
    subscriber.status, subscriber.status_changed_at = status.value, now
    if status == SubscriberStatus.unsubscribed:
        subscriber.unsubscribed_at = now


async def list_subscribers(
    session: AsyncSession,
    filters: SubscriberFilter,
    *,
    limit: int,
    offset: int = 0,
    cursor: str | None = None,
) -> SubscriberPage:
    query = filtered_query(select(Subscriber), filters, session)
    total = int(await session.scalar(select(func.count()).select_from(query.subquery())) or 0)
    if cursor is not None:
        query = query.where(Subscriber.id > decode_cursor(cursor))
    else:
        query = query.offset(offset)
    items = list((await session.scalars(query.order_by(Subscriber.id).limit(limit))).all())
    next_cursor = encode_cursor(items[-1].id) if len(items) == limit else None
    return SubscriberPage(items=items, total=total, next_cursor=next_cursor)


def filtered_query(query: SelectT, filters: SubscriberFilter, session: AsyncSession) -> SelectT:
    """``query`` (over subscribers) narrowed to the filters."""
    dialect = session.get_bind().dialect.name
    if filters.status is not None:
        query = query.where(Subscriber.status == filters.status.value)
    if filters.tag is not None:
        has_tag = Condition(field="tag", op="eq", value=filters.tag.strip().lower())
        query = query.where(compile_rule(has_tag, dialect, utcnow()))
    if filters.topic_id is not None:
        members = select(TopicSubscription.subscriber_id).where(
            TopicSubscription.topic_id == filters.topic_id,
            TopicSubscription.status == TopicSubscriptionStatus.active.value,
        )
        query = query.where(Subscriber.id.in_(members))
    if filters.email is not None:
        try:
            _, email_hash = email_fields(filters.email)
        except InvalidSubscriber:
            email_hash = ""  # matches nothing: an invalid address is simply not on the list
        query = query.where(Subscriber.email_hash == email_hash)
    if filters.rule is not None:
        query = query.where(compile_rule(filters.rule, dialect, utcnow()))
    return query
