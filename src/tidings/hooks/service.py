"""Outgoing webhooks: endpoints (create, change, rotate, delete) and enqueueing events for
them (the sender's queue is ``hooks.queue``)."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import structlog
from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from tidings.db.errors import flush_unique
from tidings.db.ids import get_by_id
from tidings.db.types import utcnow
from tidings.errors import Conflict, NotFound, RuleViolation
from tidings.hooks.models import HookStatus, WebhookDelivery, WebhookEndpoint
from tidings.hooks.schemas import EndpointCreate, EndpointUpdate
from tidings.security.audit import record_audit
from tidings.tracking.events import EventType, StoredEvent
from tidings.tracking.webhooks.standard import generate_secret

log = structlog.get_logger(__name__)

TEST_EVENT = "test"
ALLOWED_TYPES = ", ".join(t.value for t in EventType)
# Bounce diagnostics often quote the address ("550 <ann@example.org>: user unknown"): payloads
# carry no subscriber address, so any is masked.
ADDRESS = re.compile(r"[^\s<>\"'(),;:]+@[^\s<>\"'(),;:]+")


class EndpointNotFound(NotFound):
    pass


class DuplicateEndpoint(Conflict):
    code = "duplicate_webhook_endpoint"


class TargetRefused(RuleViolation):
    """A URL webhooks may not be sent to."""


# Endpoints ------------------------------------------------------------------------------------


async def check_target(url: str, allow_private: bool) -> None:
    """Refuse what is not an http(s) URL with a host and, unless ``allow_private``, a host on
    a loopback, private, link-local or otherwise non-public address (webhooks must not become
    a way to reach the server's own network). Names are resolved, at registration and again
    before each attempt; a name that does not resolve is left to fail when it is sent to.
    Messages never repeat the URL, which may carry a token in its path or query."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError as exc:
        raise TargetRefused(f"url is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise TargetRefused("url must start with http:// or https://")
    if not host:
        raise TargetRefused("url has no host")
    if allow_private:
        return
    if host == "localhost" or host.endswith(".localhost"):
        raise TargetRefused(_private_message(host, "127.0.0.1"))
    for address in await _addresses(host):
        if not address.is_global or address.is_multicast:
            raise TargetRefused(_private_message(host, str(address)))


def _private_message(host: str, address: str) -> str:
    return (
        f"url host {host!r} is a non-public address ({address}); webhooks go to public "
        "addresses unless TIDINGS_WEBHOOK_ALLOW_PRIVATE is true"
    )


async def _addresses(host: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        found = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return []
    # The scope of a link-local IPv6 address (fe80::1%eth0) is not part of the address.
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in found]


def checked_event_types(values: Sequence[str]) -> list[str]:
    """The event types, each once, in EventType order; unknown ones and none at all are 422s."""
    known = {t.value for t in EventType}
    unknown = [v for v in values if v not in known]
    if unknown:
        raise RuleViolation(f"unknown event type {unknown[0]!r}; allowed: {ALLOWED_TYPES}")
    if not values:
        raise RuleViolation(f"event_types needs at least one of: {ALLOWED_TYPES}")
    return [t.value for t in EventType if t.value in values]


async def get_endpoint(session: AsyncSession, endpoint_id: int) -> WebhookEndpoint:
    found = await get_by_id(session, WebhookEndpoint, endpoint_id)
    if found is None:
        raise EndpointNotFound(f"no webhook endpoint {endpoint_id}")
    return found


async def list_endpoints(
    session: AsyncSession, *, limit: int, offset: int
) -> tuple[list[WebhookEndpoint], int]:
    total = await session.scalar(select(func.count()).select_from(WebhookEndpoint))
    rows = await session.scalars(
        select(WebhookEndpoint).order_by(WebhookEndpoint.id).limit(limit).offset(offset)
    )
    return list(rows.all()), int(total or 0)


async def create_endpoint(
    session: AsyncSession, data: EndpointCreate, actor: str, *, allow_private: bool
) -> WebhookEndpoint:
    """Register an endpoint with a new secret (readable on the returned row, this once)."""
    await check_target(data.url, allow_private)
    endpoint = WebhookEndpoint(
        name=data.name,
        url=data.url,
        event_types=checked_event_types(data.event_types),
        secret=generate_secret(),
        enabled=data.enabled,
        consecutive_failures=0,
        disabled_reason=None if data.enabled else "created disabled",
    )
    session.add(endpoint)
    await _save(session, endpoint, actor, "webhook_endpoint.create")
    return endpoint


async def update_endpoint(
    session: AsyncSession,
    endpoint_id: int,
    data: EndpointUpdate,
    actor: str,
    *,
    allow_private: bool,
    now: datetime | None = None,
) -> WebhookEndpoint:
    """Change fields. Re-enabling clears the failure count and makes the endpoint's pending
    deliveries due now; disabling keeps them pending until it is enabled again."""
    now = now or utcnow()
    endpoint = await get_endpoint(session, endpoint_id)
    changes = data.model_dump(exclude_unset=True)
    if "url" in changes:
        await check_target(changes["url"], allow_private)
    if "event_types" in changes:
        changes["event_types"] = checked_event_types(changes["event_types"])
    enabled = changes.pop("enabled", endpoint.enabled)
    if enabled and not endpoint.enabled:
        await _resume(session, endpoint, now)
    elif not enabled and endpoint.enabled:
        endpoint.enabled = False
        endpoint.disabled_reason = f"disabled through the API since {iso(now)}"
    for field, value in changes.items():
        setattr(endpoint, field, value)
    await _save(session, endpoint, actor, "webhook_endpoint.update")
    return endpoint


async def _resume(session: AsyncSession, endpoint: WebhookEndpoint, now: datetime) -> None:
    endpoint.enabled, endpoint.consecutive_failures, endpoint.disabled_reason = True, 0, None
    await session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.endpoint_id == endpoint.id,
            WebhookDelivery.status == HookStatus.pending.value,
            WebhookDelivery.lease_until.is_(None),  # not being attempted right now
            WebhookDelivery.next_attempt_at > now,
        )
        .values(next_attempt_at=now)
    )


async def rotate_secret(session: AsyncSession, endpoint_id: int, actor: str) -> WebhookEndpoint:
    """Give the endpoint a new secret (readable on the returned row, this once); the next
    attempt of every delivery, retries included, is signed with it."""
    endpoint = await get_endpoint(session, endpoint_id)
    endpoint.secret = generate_secret()
    await _save(session, endpoint, actor, "webhook_endpoint.rotate_secret")
    return endpoint


async def delete_endpoint(session: AsyncSession, endpoint_id: int, actor: str) -> None:
    """Delete the endpoint and its deliveries (the foreign key cascades)."""
    endpoint = await get_endpoint(session, endpoint_id)
    await session.delete(endpoint)
    record_audit(session, actor, "webhook_endpoint.delete", "webhook_endpoint", endpoint.id, {
        "name": endpoint.name,
    })  # fmt: skip
    await session.commit()


async def _save(session: AsyncSession, endpoint: WebhookEndpoint, actor: str, action: str) -> None:
    duplicate = DuplicateEndpoint(f"a webhook endpoint named {endpoint.name!r} exists")
    await flush_unique(session, duplicate, "webhook_endpoints", "name")
    # Names what changed hands, never the secret or the URL (which may embed a token).
    record_audit(session, actor, action, "webhook_endpoint", endpoint.id, {"name": endpoint.name})
    await session.commit()


# Enqueueing -----------------------------------------------------------------------------------


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def event_payload(event: StoredEvent) -> dict[str, Any]:
    """The body sent for an event (documented in README.md, "Outgoing webhooks")."""
    return {
        "type": event.type,
        "timestamp": iso(event.occurred_at),
        "data": {
            "event_id": event.id,
            "type": event.type,
            "occurred_at": iso(event.occurred_at),
            "campaign_id": event.campaign_id,
            "subscriber_id": event.subscriber_id,
            "delivery_id": event.delivery_id,
            "bounce": event.bounce,
            "reason": ADDRESS.sub("{email}", event.reason) if event.reason else None,
            "url": event.url,
            "machine": event.machine,
        },
    }


async def enqueue_for_events(
    session: AsyncSession, events: Sequence[StoredEvent], now: datetime | None = None
) -> None:
    """Queue each event for every enabled endpoint that takes its type: one multi-row insert.
    The events must be flushed (have ids). Does not commit, so the deliveries exist exactly
    when the events do."""
    if not events:
        return
    # Read on every call, never cached: an endpoint changed by another process counts at once.
    endpoints = (
        await session.execute(
            select(WebhookEndpoint.id, WebhookEndpoint.event_types).where(
                WebhookEndpoint.enabled.is_(True)
            )
        )
    ).all()
    due = now or utcnow()
    rows = [
        {
            "endpoint_id": endpoint_id,
            "event_id": event.id,
            "event_type": event.type,
            "payload": event_payload(event),
            "status": HookStatus.pending.value,
            "attempts": 0,
            "next_attempt_at": due,
            "created_at": due,
        }
        for event in events
        for endpoint_id, event_types in endpoints
        if event.type in event_types
    ]
    if rows:
        dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
        statement = dialect.insert(WebhookDelivery).on_conflict_do_nothing(
            index_elements=["endpoint_id", "event_id"]
        )
        await session.execute(statement, rows)


async def enqueue_test(
    session: AsyncSession, endpoint_id: int, actor: str, now: datetime | None = None
) -> WebhookDelivery:
    """Queue a synthetic ``test`` delivery for the endpoint (sent once it is enabled)."""
    now = now or utcnow()
    endpoint = await get_endpoint(session, endpoint_id)
    payload = {
        "type": TEST_EVENT,
        "timestamp": iso(now),
        "data": {"endpoint_id": endpoint.id, "message": "a test delivery from tidings"},
    }
    delivery = WebhookDelivery(
        endpoint_id=endpoint.id,
        event_type=TEST_EVENT,
        payload=payload,
        status=HookStatus.pending.value,
        attempts=0,
        next_attempt_at=now,
        created_at=now,
    )
    session.add(delivery)
    await session.flush()
    record_audit(session, actor, "webhook_endpoint.test", "webhook_endpoint", endpoint.id, {
        "delivery": delivery.id,
    })  # fmt: skip
    await session.commit()
    return delivery


async def list_deliveries(
    session: AsyncSession,
    endpoint_id: int,
    *,
    status: HookStatus | None,
    limit: int,
    offset: int,
) -> tuple[list[WebhookDelivery], int]:
    """The endpoint's deliveries, newest first."""
    await get_endpoint(session, endpoint_id)
    where = [WebhookDelivery.endpoint_id == endpoint_id]
    if status is not None:
        where.append(WebhookDelivery.status == status.value)
    total = await session.scalar(select(func.count()).select_from(WebhookDelivery).where(*where))
    rows = await session.scalars(
        select(WebhookDelivery)
        .where(*where)
        .order_by(WebhookDelivery.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return list(rows.all()), int(total or 0)
