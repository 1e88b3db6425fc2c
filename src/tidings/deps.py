"""FastAPI dependencies shared by all routers: the database session and the calling API key."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from tidings.runtime import Runtime
from tidings.security.apikeys import KEY_PREFIX, authenticate
from tidings.security.models import Scope

CREDENTIAL_PARAMS = frozenset(
    {"api_key", "apikey", "api-key", "key", "token", "access_token", "auth", "authorization"}
)

bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer tdg_...`")


class HttpProblem(HTTPException):
    """An HTTP error raised by the web layer itself, with a stable machine-readable code."""

    def __init__(
        self, status_code: int, code: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(status_code=status_code, detail=detail, headers=headers)
        self.code = code


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with get_runtime(request).database.sessions() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


@dataclass(frozen=True)
class Actor:
    """Who is calling: recorded in the audit log as ``label``."""

    key_id: int
    scope: Scope
    label: str


def require_scope(needed: Scope) -> Callable[..., Coroutine[Any, Any, Actor]]:
    async def dependency(
        request: Request,
        session: SessionDep,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Actor:
        _refuse_credentials_in_query(request)
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise HttpProblem(
                401,
                "unauthorized",
                "missing API key: send 'Authorization: Bearer <key>'",
                {"WWW-Authenticate": "Bearer"},
            )
        key = await authenticate(session, credentials.credentials)
        if key is not None:
            actor = Actor(key_id=key.id, scope=Scope(key.scope), label=f"{key.name} ({key.prefix})")
        # End the lookup's transaction: on SQLite the process has one connection, and a route
        # that streams or imports through fresh sessions must not wait for this one.
        await session.rollback()
        if key is None:
            raise HttpProblem(
                401, "unauthorized", "invalid or revoked API key", {"WWW-Authenticate": "Bearer"}
            )
        if not actor.scope.allows(needed):
            raise HttpProblem(
                403,
                "forbidden",
                f"this key has scope '{actor.scope}'; this action needs '{needed}'",
            )
        return actor

    return dependency


def _refuse_credentials_in_query(request: Request) -> None:
    # URLs end up in proxy and access logs; a key in one is a leaked key.
    for name, value in request.query_params.multi_items():
        if name.lower() in CREDENTIAL_PARAMS or value.startswith(KEY_PREFIX):
            raise HttpProblem(
                400,
                "credentials_in_query",
                "API keys are accepted only in the Authorization header, never in the URL",
            )


ReadActor = Annotated[Actor, Depends(require_scope(Scope.read))]
WriteActor = Annotated[Actor, Depends(require_scope(Scope.write))]
AdminActor = Annotated[Actor, Depends(require_scope(Scope.admin))]
