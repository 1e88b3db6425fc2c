"""FastAPI application factory: routers, one JSON error shape, request logging, lifespan."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tidings import __version__
from tidings.analytics.api import router as analytics_router
from tidings.audience.api import subscribers, topics
from tidings.audience.bulk_api import router as bulk
from tidings.audience.public_api import router as public_router
from tidings.audience.segment_api import router as segments
from tidings.campaigns.api import campaigns, templates_router
from tidings.campaigns.content_api import router as content_router
from tidings.campaigns.scheduler import run_scheduler
from tidings.config import Settings
from tidings.delivery.api import router as deliveries_router
from tidings.delivery.runner import run_worker
from tidings.deps import get_runtime
from tidings.errors import Conflict, NotFound, RuleViolation, TidingsError
from tidings.hooks.api import router as webhook_endpoints_router
from tidings.hooks.sender import run_webhook_sender
from tidings.logs import get_logger
from tidings.promotions.api import promotions, subscriptions
from tidings.providers.api import router as providers_router
from tidings.providers.routing_api import router as routing_rules_router
from tidings.runtime import Runtime, open_runtime
from tidings.security.api import router as security_router
from tidings.system.api import router as system_router
from tidings.tracking.endpoints import TRACKING_PREFIX, Tracker, answer_tracking
from tidings.tracking.pages_api import router as unsubscribe_router
from tidings.tracking.runtime import build_tracker, start_inbound_mail
from tidings.tracking.scores import run_score_refresh
from tidings.tracking.webhooks_api import install_webhook_errors
from tidings.tracking.webhooks_api import router as webhooks_router

log = get_logger("tidings.http")

ERROR_STATUS: list[tuple[type[TidingsError], int]] = [
    (NotFound, 404),
    (Conflict, 409),
    (RuleViolation, 422),
]
STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    422: "validation_error",
}


class ErrorOut(BaseModel):
    detail: str
    code: str


class HealthOut(BaseModel):
    status: str
    database: str
    version: str


class TidingsApp(FastAPI):
    """The application, which answers the open pixel and click redirects itself before any of
    FastAPI's per-request machinery runs: they are most of an instance's traffic."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(TRACKING_PREFIX):
            tracker: Tracker | None = getattr(self.state, "tracker", None)
            if tracker is not None and await answer_tracking(tracker, scope, send):
                return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None, runtime: Runtime | None = None) -> FastAPI:
    """Build the app. Pass ``runtime`` to share one already opened (tests, CLI); otherwise the
    lifespan opens one from ``settings`` and closes it at shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if runtime is not None:
            app.state.runtime = runtime
            yield
            await app.state.tracker.sink.close()
            return
        opened = await open_runtime(settings or Settings())
        app.state.runtime = opened
        app.state.tracker = build_tracker(opened)
        inbound = await start_inbound_mail(opened, app.state.tracker)
        stop = asyncio.Event()
        loops = []
        if opened.settings.scheduler:
            loops.append(asyncio.create_task(run_scheduler(opened.database, stop)))
            loops.append(asyncio.create_task(run_score_refresh(opened.database, stop)))
            loops.append(
                asyncio.create_task(run_webhook_sender(opened.database, opened.settings, stop))
            )
        if opened.settings.workers:
            loops.append(asyncio.create_task(run_worker(opened, stop)))
        try:
            yield
        finally:
            stop.set()
            if inbound is not None:
                inbound.close()
            await asyncio.gather(*loops)
            await app.state.tracker.sink.close()  # nothing tracked is lost on shutdown
            if getattr(app.state, "webhooks", None) is not None:
                await app.state.webhooks.close()
            await opened.close()

    app = TidingsApp(
        title="tidings",
        version=__version__,
        description="Self-hosted newsletter and campaign platform. Authenticate with "
        "`Authorization: Bearer <API key>`.",
        lifespan=lifespan,
        responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}, 422: {"model": ErrorOut}},
    )
    if runtime is not None:
        app.state.runtime = runtime
        app.state.tracker = build_tracker(runtime)
    app.add_middleware(RejectNulMiddleware)
    app.add_middleware(RequestLogMiddleware)
    _install_error_handlers(app)
    install_webhook_errors(app)
    # Before the subscribers router, whose /subscribers/{ref} would swallow these paths.
    app.include_router(bulk)
    app.include_router(deliveries_router)
    app.include_router(public_router)
    app.include_router(segments)
    app.include_router(subscribers)
    app.include_router(topics)
    app.include_router(security_router)
    app.include_router(promotions)
    app.include_router(subscriptions)
    app.include_router(campaigns)
    app.include_router(templates_router)
    app.include_router(content_router)
    app.include_router(providers_router)
    app.include_router(routing_rules_router)
    app.include_router(system_router)
    app.include_router(unsubscribe_router)
    app.include_router(webhooks_router)
    app.include_router(webhook_endpoints_router)
    app.include_router(analytics_router)
    app.add_api_route(
        "/health",
        health,
        methods=["GET"],
        response_model=HealthOut,
        tags=["system"],
        responses={503: {"model": HealthOut}},
    )
    app.add_api_route(
        "/metrics", metrics, methods=["GET"], tags=["system"], include_in_schema=False
    )
    return app


async def metrics() -> Response:
    """Prometheus counters of this process (text exposition format)."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


async def health(request: Request) -> JSONResponse:
    """Liveness and database reachability."""
    database = "ok"
    try:
        async with get_runtime(request).database.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except Exception as exc:  # any failure to reach the database means "unhealthy"
        log.warning("health.database_unreachable", error=type(exc).__name__)
        database = "unreachable"
    body = HealthOut(
        status="ok" if database == "ok" else "degraded", database=database, version=__version__
    )
    return JSONResponse(body.model_dump(), status_code=200 if database == "ok" else 503)


def _error(status_code: int, detail: str, code: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"detail": detail, "code": code, **extra}, status_code=status_code)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(TidingsError)
    async def domain_error(_: Request, exc: TidingsError) -> JSONResponse:
        status_code = next((s for cls, s in ERROR_STATUS if isinstance(exc, cls)), 400)
        return _error(status_code, exc.detail, exc.code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "loc": [str(part) for part in err.get("loc", ())],
                "msg": str(err.get("msg", "")),
                "type": str(err.get("type", "")),
            }
            for err in exc.errors()
        ]
        summary = (
            "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors) or "invalid request"
        )
        return _error(422, summary, "validation_error", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = getattr(exc, "code", None) or STATUS_CODES.get(exc.status_code, "error")
        response = _error(exc.status_code, str(exc.detail), code)
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(IntegrityError)
    async def concurrent_change(request: Request, exc: IntegrityError) -> JSONResponse:
        # Only a race gets here (e.g. a topic deleted while someone subscribes to it): every
        # constraint a client can break on its own is checked and named by the services.
        log.warning("http.integrity_conflict", path=_loggable_path(request.url.path))
        return _error(409, "the change conflicts with one made at the same time; retry", "conflict")

    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    @app.exception_handler(ConnectionError)
    async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        # The database went away (restarted, failed over, dropped): not the client's fault and
        # not a bug; a load balancer or client retries a 503.
        log.error(
            "http.database_unavailable",
            path=_loggable_path(request.url.path),
            error=type(exc).__name__,
        )
        response = _error(503, "the database is unavailable; retry shortly", "database_unavailable")
        response.headers["Retry-After"] = "5"
        return response

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception(
            "http.unhandled_error", path=_loggable_path(request.url.path), error=type(exc).__name__
        )
        return _error(500, "internal error; it has been logged", "internal_error")


class RequestLogMiddleware:
    """One structured line per request: method, path (never the query string), status, time."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status_code = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            log.info(
                "http.request",
                method=scope["method"],
                path=_loggable_path(scope["path"]),
                status=status_code,
                ms=round((time.perf_counter() - started) * 1000, 1),
            )


# Paths whose next segment is a credential: a subscriber's link token, a webhook's secret path.
_SECRET_AFTER = ("u", "postmark")


def _loggable_path(path: str) -> str:
    """The path with e-mail addresses and credentials masked: /subscribers/ann@x.org ->
    /subscribers/{email}, /u/TOKEN/preferences -> /u/{token}/preferences."""
    parts = path.split("/")
    masked = []
    for index, part in enumerate(parts):
        if "@" in part:
            part = "{email}"
        elif index > 0 and parts[index - 1] in _SECRET_AFTER:
            part = "{token}"
        masked.append(part)
    return "/".join(masked)


class RejectNulMiddleware:
    """Refuse NUL characters anywhere in the URL: no database text column can hold them, so they
    would otherwise surface as a storage error deep inside a query."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and _has_nul(scope):
            response = _error(400, "NUL characters are not allowed in URLs", "bad_request")
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _has_nul(scope: Scope) -> bool:
    raw = scope.get("raw_path") or scope["path"].encode()
    query: bytes = scope.get("query_string", b"")
    return any(
        b"\x00" in part or b"%00" in part for part in (raw, query.lower(), scope["path"].encode())
    )
