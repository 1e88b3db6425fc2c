"""HTTP routes of /system (read scope): seed 002's status, providers and warming reports."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from tidings.deps import ReadActor, SessionDep, get_runtime
from tidings.system import service, warming
from tidings.system.schemas import ProvidersReportOut, StatusOut, WarmingReportOut

router = APIRouter(prefix="/system", tags=["system"])


@router.get(
    "/status",
    response_model=StatusOut,
    responses={503: {"model": StatusOut, "description": "The database is unreachable."}},
)
async def system_status(request: Request, session: SessionDep, _: ReadActor) -> object:
    """ok, degraded (with the problems named) or down: the database, the live workers, the
    outbox's backlog and each provider's pause and circuit."""
    transport = get_runtime(request).settings.mail_transport
    report = await service.system_status(session, transport)
    if report.status == "down":
        return JSONResponse(report.model_dump(mode="json"), status_code=503)
    return report


@router.get("/providers", response_model=ProvidersReportOut)
async def system_providers(
    request: Request,
    session: SessionDep,
    _: ReadActor,
    window: Annotated[service.Window, Query(description="The rolling window.")] = "24h",
) -> object:
    """Each provider's figures over the window: sends, deliveries, bounces, complaints, rates,
    send-call latency, reputation; with its pause and circuit state."""
    transport = get_runtime(request).settings.mail_transport
    return await service.provider_report(session, window, transport)


@router.get("/warming", response_model=WarmingReportOut)
async def system_warming(session: SessionDep, _: ReadActor) -> object:
    """Each provider with a warming plan: its day, today's cap and use, and the adjustments."""
    return await warming.warming_report(session)
