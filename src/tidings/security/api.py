"""HTTP routes for API keys and the audit log (admin scope)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, status

from tidings.deps import AdminActor, SessionDep
from tidings.pagination import DEFAULT_LIMIT, Limit, Offset
from tidings.security import apikeys
from tidings.security.audit import list_audit
from tidings.security.schemas import ApiKeyCreate, ApiKeyOut, AuditEntryOut, IssuedApiKeyOut

router = APIRouter(tags=["security"])


@router.post("/keys", status_code=status.HTTP_201_CREATED, response_model=IssuedApiKeyOut)
async def create_key(body: ApiKeyCreate, session: SessionDep, actor: AdminActor) -> object:
    issued = await apikeys.create_api_key(session, body.name, body.scope, actor.label)
    return IssuedApiKeyOut(**ApiKeyOut.model_validate(issued.key).model_dump(), key=issued.secret)


@router.get("/keys", response_model=list[ApiKeyOut])
async def list_keys(session: SessionDep, _: AdminActor) -> object:
    return await apikeys.list_api_keys(session)


@router.delete("/keys/{key_ref}", response_model=ApiKeyOut)
async def revoke_key(
    key_ref: Annotated[str, Path(max_length=32, pattern=r"^[A-Za-z0-9_-]+$")],
    session: SessionDep,
    actor: AdminActor,
) -> object:
    return await apikeys.revoke_api_key(session, key_ref, actor.label)


@router.get("/audit-log", response_model=list[AuditEntryOut])
async def audit_log(
    session: SessionDep,
    _: AdminActor,
    action: Annotated[str | None, Query(max_length=64)] = None,
    limit: Limit = DEFAULT_LIMIT,
    offset: Offset = 0,
) -> object:
    return await list_audit(session, limit=limit, offset=offset, action=action)
