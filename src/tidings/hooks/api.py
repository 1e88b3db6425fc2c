"""HTTP routes of /webhook-endpoints (admin scope: endpoints hold signing secrets and receive
what happens to every subscriber's mail)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, status

from tidings.deps import AdminActor, SessionDep, get_runtime
from tidings.hooks import service
from tidings.hooks.models import HookStatus
from tidings.hooks.schemas import (
    DeliveryOut,
    EndpointCreate,
    EndpointOut,
    EndpointUpdate,
    EndpointWithSecret,
)
from tidings.pagination import DEFAULT_LIMIT, Limit, Offset, Page, PathId, page

router = APIRouter(prefix="/webhook-endpoints", tags=["webhooks"])


def _allow_private(request: Request) -> bool:
    return get_runtime(request).settings.webhook_allow_private


AllowPrivate = Annotated[bool, Depends(_allow_private)]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=EndpointWithSecret)
async def create_endpoint(
    body: EndpointCreate, session: SessionDep, actor: AdminActor, allow_private: AllowPrivate
) -> object:
    """Register an endpoint. The answer holds its signing secret: the only time it is shown."""
    return await service.create_endpoint(session, body, actor.label, allow_private=allow_private)


@router.get("", response_model=Page[EndpointOut])
async def list_endpoints(
    session: SessionDep, _: AdminActor, limit: Limit = DEFAULT_LIMIT, offset: Offset = 0
) -> object:
    items, total = await service.list_endpoints(session, limit=limit, offset=offset)
    return page(items, total, limit, offset)


@router.get("/{endpoint_id}", response_model=EndpointOut)
async def get_endpoint(endpoint_id: PathId, session: SessionDep, _: AdminActor) -> object:
    return await service.get_endpoint(session, endpoint_id)


@router.patch("/{endpoint_id}", response_model=EndpointOut)
async def update_endpoint(
    endpoint_id: PathId,
    body: EndpointUpdate,
    session: SessionDep,
    actor: AdminActor,
    allow_private: AllowPrivate,
) -> object:
    """Change the name, URL or event types; ``enabled: true`` re-enables a disabled endpoint
    and sends its pending deliveries now."""
    return await service.update_endpoint(
        session, endpoint_id, body, actor.label, allow_private=allow_private
    )


@router.delete("/{endpoint_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_endpoint(endpoint_id: PathId, session: SessionDep, actor: AdminActor) -> None:
    """Delete the endpoint and its delivery log."""
    await service.delete_endpoint(session, endpoint_id, actor.label)


@router.post("/{endpoint_id}/rotate-secret", response_model=EndpointWithSecret)
async def rotate_secret(endpoint_id: PathId, session: SessionDep, actor: AdminActor) -> object:
    """Replace the signing secret; the answer holds the new one, shown this once."""
    return await service.rotate_secret(session, endpoint_id, actor.label)


@router.get("/{endpoint_id}/deliveries", response_model=Page[DeliveryOut])
async def list_deliveries(
    endpoint_id: PathId,
    session: SessionDep,
    _: AdminActor,
    status: HookStatus | None = None,
    limit: Limit = DEFAULT_LIMIT,
    offset: Offset = 0,
) -> object:
    """The endpoint's deliveries, newest first, with the last answer of each."""
    items, total = await service.list_deliveries(
        session, endpoint_id, status=status, limit=limit, offset=offset
    )
    return page(items, total, limit, offset)


@router.post("/{endpoint_id}/test", status_code=status.HTTP_201_CREATED, response_model=DeliveryOut)
async def send_test(endpoint_id: PathId, session: SessionDep, actor: AdminActor) -> object:
    """Queue a synthetic ``test`` delivery to the endpoint; follow it in its deliveries."""
    return await service.enqueue_test(session, endpoint_id, actor.label)
