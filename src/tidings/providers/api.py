"""HTTP routes of /providers (admin scope: they hold credentials)."""

from __future__ import annotations

from fastapi import APIRouter, status

from tidings.deps import AdminActor, SessionDep
from tidings.pagination import DEFAULT_LIMIT, Limit, Offset, Page, page
from tidings.providers import service
from tidings.providers.schemas import ProviderCreate, ProviderOut, ProviderUpdate

router = APIRouter(prefix="/providers", tags=["providers"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ProviderOut)
async def create_provider(body: ProviderCreate, session: SessionDep, actor: AdminActor) -> object:
    """Add a sending provider; its credentials are stored encrypted and never shown again."""
    provider = await service.create_provider(session, body, actor.label)
    return await service.describe_one(session, provider)


@router.get("", response_model=Page[ProviderOut])
async def list_providers(
    session: SessionDep, _: AdminActor, limit: Limit = DEFAULT_LIMIT, offset: Offset = 0
) -> object:
    items, total = await service.list_providers(session, limit=limit, offset=offset)
    return page(await service.describe_all(session, items), total, limit, offset)


@router.get("/{ref}", response_model=ProviderOut)
async def get_provider(ref: str, session: SessionDep, _: AdminActor) -> object:
    """By id or name."""
    return await service.describe_one(session, await service.get_provider(session, ref))


@router.patch("/{ref}", response_model=ProviderOut)
async def update_provider(
    ref: str, body: ProviderUpdate, session: SessionDep, actor: AdminActor
) -> object:
    """Change fields; ``credentials`` replaces the secrets it names (null removes one)."""
    provider = await service.update_provider(session, ref, body, actor.label)
    return await service.describe_one(session, provider)


@router.post(
    "/{ref}/resume",
    response_model=ProviderOut,
    responses={409: {"description": "The provider is not paused (code `not_paused`)."}},
)
async def resume_provider(ref: str, session: SessionDep, actor: AdminActor) -> object:
    """Send through a provider again after warming paused it (409 ``not_paused`` if it is not)."""
    provider = await service.resume_provider(session, ref, actor.label)
    return await service.describe_one(session, provider)


@router.delete("/{ref}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_provider(ref: str, session: SessionDep, actor: AdminActor) -> None:
    await service.delete_provider(session, ref, actor.label)
