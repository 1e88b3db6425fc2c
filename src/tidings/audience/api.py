"""HTTP routes of the audience: subscribers (seeds 000, 002, 004) and topics (seed 000)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status

from tidings.audience import privacy
from tidings.audience import subscribers as subscriber_service
from tidings.audience import topics as topic_service
from tidings.audience.models import SubscriberStatus, TopicSubscriptionStatus
from tidings.audience.schemas import (
    PersonalDataOut,
    SubscriberCreate,
    SubscriberOut,
    SubscriberTopicOut,
    SubscriberUpdate,
    TopicCreate,
    TopicMemberOut,
    TopicOut,
    TopicSubscribe,
    TopicSubscriptionOut,
    TopicUpdate,
)
from tidings.db.ids import MAX_ID
from tidings.deps import AdminActor, ReadActor, SessionDep, WriteActor
from tidings.pagination import DEFAULT_LIMIT, Cursor, Limit, Offset, Page, PathId, page

subscribers = APIRouter(prefix="/subscribers", tags=["subscribers"])
topics = APIRouter(prefix="/topics", tags=["topics"])

SubscriberRef = Annotated[
    str,
    Path(min_length=1, max_length=320, description="Numeric subscriber id or e-mail address."),
]


@subscribers.post("/", status_code=status.HTTP_201_CREATED, response_model=SubscriberOut)
async def create_subscriber(
    body: SubscriberCreate, session: SessionDep, actor: WriteActor
) -> object:
    return await subscriber_service.create_subscriber(session, body, actor.label)


@subscribers.get("/", response_model=Page[SubscriberOut])
async def list_subscribers(
    session: SessionDep,
    _: ReadActor,
    status_: Annotated[SubscriberStatus | None, Query(alias="status")] = None,
    tag: Annotated[str | None, Query(max_length=64)] = None,
    topic_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    email: Annotated[str | None, Query(max_length=320, description="Exact address.")] = None,
    limit: Limit = DEFAULT_LIMIT,
    offset: Offset = 0,
    cursor: Cursor = None,
) -> object:
    filters = subscriber_service.SubscriberFilter(
        status=status_, tag=tag, topic_id=topic_id, email=email
    )
    found = await subscriber_service.list_subscribers(
        session, filters, limit=limit, offset=offset, cursor=cursor
    )
    return page(found.items, found.total, limit, offset, found.next_cursor)


@subscribers.get("/{ref}", response_model=SubscriberOut)
async def get_subscriber(ref: SubscriberRef, session: SessionDep, _: ReadActor) -> object:
    return await subscriber_service.find_subscriber(session, ref)


@subscribers.put("/{ref}", response_model=SubscriberOut)
async def update_subscriber(
    ref: SubscriberRef, body: SubscriberUpdate, session: SessionDep, actor: WriteActor
) -> object:
    return await subscriber_service.update_subscriber(session, ref, body, actor.label)


@subscribers.delete("/{ref}", response_model=SubscriberOut)
async def unsubscribe_subscriber(
    ref: SubscriberRef, session: SessionDep, actor: WriteActor
) -> object:
    """Unsubscribe: the subscriber gets no more mail; the record and its history are kept."""
    return await subscriber_service.unsubscribe_subscriber(session, ref, actor.label)


@subscribers.get("/{ref}/export", response_model=PersonalDataOut, response_model_by_alias=True)
async def export_personal_data(
    ref: SubscriberRef, session: SessionDep, actor: AdminActor
) -> object:
    """GDPR access / portability: everything held about this person, as JSON (admin scope)."""
    return await privacy.personal_data(session, ref, actor.label)


@subscribers.post("/{ref}/erase", response_model=SubscriberOut)
async def erase_subscriber(ref: SubscriberRef, session: SessionDep, actor: AdminActor) -> object:
    """GDPR erasure: personal data deleted, an anonymous record kept, the address suppressed."""
    return await privacy.erase_subscriber(session, ref, actor.label)


@subscribers.get("/{ref}/topics", response_model=list[SubscriberTopicOut])
async def list_subscriber_topics(ref: SubscriberRef, session: SessionDep, _: ReadActor) -> object:
    subscriber = await subscriber_service.find_subscriber(session, ref)
    return await topic_service.list_subscriber_topics(session, subscriber)


@topics.post("/", status_code=status.HTTP_201_CREATED, response_model=TopicOut)
async def create_topic(body: TopicCreate, session: SessionDep, actor: WriteActor) -> object:
    return await topic_service.create_topic(session, body, actor.label)


@topics.get("/", response_model=Page[TopicOut])
async def list_topics(
    session: SessionDep, _: ReadActor, limit: Limit = DEFAULT_LIMIT, offset: Offset = 0
) -> object:
    items, total = await topic_service.list_topics(session, limit=limit, offset=offset)
    return page(items, total, limit, offset)


@topics.get("/{topic_id}", response_model=TopicOut)
async def get_topic(topic_id: PathId, session: SessionDep, _: ReadActor) -> object:
    return await topic_service.get_topic(session, topic_id)


@topics.patch("/{topic_id}", response_model=TopicOut)
async def update_topic(
    topic_id: PathId, body: TopicUpdate, session: SessionDep, actor: WriteActor
) -> object:
    return await topic_service.update_topic(session, topic_id, body, actor.label)


@topics.delete("/{topic_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_topic(topic_id: PathId, session: SessionDep, actor: WriteActor) -> Response:
    await topic_service.delete_topic(session, topic_id, actor.label)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@topics.post(
    "/{topic_id}/subscribers",
    status_code=status.HTTP_201_CREATED,
    response_model=TopicSubscriptionOut,
    responses={200: {"description": "An earlier unsubscription was reactivated."}},
)
async def subscribe_to_topic(
    topic_id: PathId,
    body: TopicSubscribe,
    response: Response,
    session: SessionDep,
    actor: WriteActor,
) -> object:
    topic = await topic_service.get_topic(session, topic_id)
    subscriber = await subscriber_service.find_subscriber(session, body.subscriber_ref)
    result = await topic_service.subscribe_to_topic(
        session, topic, subscriber, source=body.source or "api", actor=actor.label
    )
    if not result.created:
        response.status_code = status.HTTP_200_OK
    return result.subscription


@topics.delete("/{topic_id}/subscribers/{ref}", response_model=TopicSubscriptionOut)
async def unsubscribe_from_topic(
    topic_id: PathId, ref: SubscriberRef, session: SessionDep, actor: WriteActor
) -> object:
    topic = await topic_service.get_topic(session, topic_id)
    subscriber = await subscriber_service.find_subscriber(session, ref)
    return await topic_service.unsubscribe_from_topic(session, topic, subscriber, actor=actor.label)


@topics.get("/{topic_id}/subscribers", response_model=Page[TopicMemberOut])
async def list_topic_subscribers(
    topic_id: PathId,
    session: SessionDep,
    _: ReadActor,
    status_: Annotated[
        TopicSubscriptionStatus | None, Query(alias="status", description="Default: all.")
    ] = None,
    limit: Limit = DEFAULT_LIMIT,
    offset: Offset = 0,
) -> object:
    rows, total = await topic_service.list_topic_members(
        session, topic_id, status=status_, limit=limit, offset=offset
    )
    items = [
        TopicMemberOut.model_validate(
            {
                **TopicSubscriptionOut.model_validate(sub).model_dump(),
                "subscriber": SubscriberOut.model_validate(member),
            }
        )
        for sub, member in rows
    ]
    return page(items, total, limit, offset)
