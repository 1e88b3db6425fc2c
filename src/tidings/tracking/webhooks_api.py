"""Provider webhooks: ``/webhooks/{amazon-ses,sendgrid,postmark,mailgun,azure,generic}``.

Each request is verified before anything is read from it (an unsigned or badly signed one is a
401 and changes nothing), normalized into events, and written before the answer: a provider
retries what we did not acknowledge, and a replay of what we stored is a no-op. Secrets come
from the ``TIDINGS_WEBHOOK_*`` settings; an endpoint whose secret is not set refuses everything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import httpx
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import SecretStr

from tidings.db.types import utcnow
from tidings.deps import get_runtime
from tidings.tracking.endpoints import Tracker
from tidings.tracking.events import InboundEvent
from tidings.tracking.nonces import DatabaseReplayGuard
from tidings.tracking.webhooks import azure, mailgun, postmark, sendgrid, sns, standard
from tidings.tracking.webhooks.base import (
    ReplayGuard,
    WebhookError,
    WebhookMalformed,
    WebhookRejected,
    WebhookUnavailable,
)

router = APIRouter(prefix="/webhooks", tags=["webhooks"])
MAX_BODY = 20 * 1024 * 1024
STATUS = {WebhookRejected: 401, WebhookMalformed: 400, WebhookUnavailable: 503}
CODES = {401: "unauthorized", 400: "bad_request", 503: "unavailable", 413: "too_large"}


@dataclass
class WebhookServices:
    """What verifying needs beyond the settings, one per process (tests may replace it)."""

    client: httpx.AsyncClient  # fetches SNS certificates and confirms SNS subscriptions
    certificates: sns.CertificateCache
    replay: ReplayGuard

    async def close(self) -> None:
        await self.client.aclose()


def webhook_services(request: Request) -> WebhookServices:
    services: WebhookServices | None = getattr(request.app.state, "webhooks", None)
    if services is None:
        client = httpx.AsyncClient(timeout=10.0, follow_redirects=False)
        replay = DatabaseReplayGuard(get_runtime(request).database)
        services = WebhookServices(client, sns.CertificateCache(client), replay)
        request.app.state.webhooks = services
    return services


@router.post("/amazon-ses", summary="Amazon SES events through an SNS subscription")
async def amazon_ses(request: Request) -> Response:
    body = await _body(request)
    services = webhook_services(request)
    topics = get_runtime(request).settings.webhook_ses_topics
    message = await sns.verify_sns(body, services.certificates, topics)
    if message.type == "SubscriptionConfirmation":
        await sns.confirm_subscription(message, services.client)
        return _stored(0)
    if message.type != "Notification":
        return _stored(0)
    return await _store(request, sns.normalize_ses(message))


@router.post("/sendgrid", summary="SendGrid Event Webhook (signed)")
async def sendgrid_events(request: Request) -> Response:
    body = await _body(request)
    key = get_runtime(request).settings.webhook_sendgrid_public_key or ""
    sendgrid.verify_sendgrid(
        key,
        request.headers.get("X-Twilio-Email-Event-Webhook-Signature"),
        request.headers.get("X-Twilio-Email-Event-Webhook-Timestamp"),
        body,
        utcnow(),
    )
    return await _store(request, sendgrid.normalize_sendgrid(body))


@router.post("/postmark", summary="Postmark webhooks (basic auth in the webhook URL)")
async def postmark_events(request: Request) -> Response:
    body = await _body(request)
    settings = get_runtime(request).settings
    postmark.verify_basic_auth(
        settings.webhook_postmark_user or "",
        _secret(settings.webhook_postmark_password),
        request.headers.get("Authorization"),
    )
    return await _store(request, postmark.normalize_postmark(body))


@router.post("/postmark/{secret}", summary="Postmark webhooks (secret path)")
async def postmark_events_by_path(secret: str, request: Request) -> Response:
    body = await _body(request)
    settings = get_runtime(request).settings
    postmark.verify_path_secret(_secret(settings.webhook_postmark_path_secret), secret)
    return await _store(request, postmark.normalize_postmark(body))


@router.post("/mailgun", summary="Mailgun webhooks (signed, each token once)")
async def mailgun_events(request: Request) -> Response:
    body = await _body(request)
    key = _secret(get_runtime(request).settings.webhook_mailgun_signing_key)
    await mailgun.verify_mailgun(key, body, utcnow(), webhook_services(request).replay)
    return await _store(request, mailgun.normalize_mailgun(body))


@router.options("/azure", summary="CloudEvents webhook handshake (Azure Event Grid)")
async def azure_handshake(request: Request) -> Response:
    headers = azure.cloudevents_handshake(request.headers.get("WebHook-Request-Origin"))
    if headers is None:
        return _problem(WebhookRejected("not an Event Grid CloudEvents handshake"))
    return Response(status_code=200, headers=headers)


@router.post("/azure", summary="Azure Communication Services Email events (Event Grid)")
async def azure_events(request: Request) -> Response:
    body = await _body(request)
    validation = azure.validation_response(body)
    if validation is not None:
        return JSONResponse(validation)
    key = _secret(get_runtime(request).settings.webhook_azure_key)
    azure.verify_azure_key(key, request.headers.get(azure.KEY_HEADER))
    return await _store(request, azure.normalize_azure(body))


@router.post("/generic", summary="Any provider, signed per Standard Webhooks")
async def generic_events(request: Request) -> Response:
    body = await _body(request)
    secret = _secret(get_runtime(request).settings.webhook_generic_secret)
    standard.verify_standard(secret, request.headers, body, utcnow())
    return await _store(request, standard.normalize_generic(body))


async def _body(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise WebhookBodyTooLarge()
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise WebhookBodyTooLarge()
    return bytes(body)


async def _store(request: Request, events: Sequence[InboundEvent]) -> Response:
    tracker: Tracker = request.app.state.tracker
    await tracker.sink.write_now(events)
    return _stored(len(events))


def _stored(count: int) -> JSONResponse:
    return JSONResponse({"events": count})


def _secret(value: SecretStr | None) -> str:
    return value.get_secret_value() if value is not None else ""


class WebhookBodyTooLarge(Exception):
    pass


def _problem(error: WebhookError) -> JSONResponse:
    status = next(code for kind, code in STATUS.items() if isinstance(error, kind))
    return JSONResponse({"detail": error.reason, "code": CODES[status]}, status_code=status)


def install_webhook_errors(app: FastAPI) -> None:
    """Map verification errors to 401 / 400 / 503 and an oversized body to 413."""

    @app.exception_handler(WebhookError)
    async def webhook_error(_: Request, exc: WebhookError) -> JSONResponse:
        return _problem(exc)

    @app.exception_handler(WebhookBodyTooLarge)
    async def too_large(_: Request, exc: WebhookBodyTooLarge) -> JSONResponse:
        detail = f"a webhook body is at most {MAX_BODY} bytes"
        return JSONResponse({"detail": detail, "code": CODES[413]}, status_code=413)
