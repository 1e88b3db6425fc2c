"""The webhook sender: claims due deliveries in batches, POSTs them signed per Standard Webhooks,
a few at once, and records each result as soon as it is known.

Any number of senders may run (one per ``tidings serve``): the claim's lease keeps them off each
other's rows. ``webhook-id`` is the delivery's, the same on every retry, so a receiver that saw
an attempt whose answer we never got can tell the retry is a duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime

import httpx
import structlog
from sqlalchemy.exc import SQLAlchemyError

from tidings.config import Settings
from tidings.db.engine import Database
from tidings.db.types import utcnow
from tidings.hooks.queue import Attempt, Claimed, RetryPolicy, claim_due, record_result
from tidings.hooks.service import TargetRefused, check_target
from tidings.tracking.webhooks.standard import sign
from tidings.transports.http import retry_after_seconds

log = structlog.get_logger(__name__)

USER_AGENT = "tidings-webhooks"
RESPONSE_BYTES = 1024  # of a response body, kept to show users what the receiver said
ERROR_CHARS = 500
RETRY_AFTER_STATUSES = (429, 503)


@dataclass(frozen=True)
class SenderOptions:
    batch_size: int = 32
    concurrency: int = 8  # requests in flight at once, per sender
    timeout_seconds: float = 10.0  # per request: connect, each read, each write
    # Longer than a batch can take (batch_size / concurrency rounds of one timeout each), so
    # a live sender never loses its claim.
    lease_seconds: float = 120.0
    idle_seconds: float = 1.0  # how long to wait when nothing was due
    retry: RetryPolicy = field(default_factory=RetryPolicy)


async def run_webhook_sender(
    database: Database,
    settings: Settings,
    stop: asyncio.Event,
    client: httpx.AsyncClient | None = None,
    options: SenderOptions | None = None,
) -> None:
    """Send due webhook deliveries until ``stop`` is set (the batch in flight is finished)."""
    options = options or SenderOptions()
    async with _http_client(client, options) as http:
        while not stop.is_set():
            try:
                attempted = await deliver_due_once(database, settings, http, options=options)
            except* (SQLAlchemyError, OSError) as failed:
                # The database went away: claims not recorded are retried when leases end.
                errors = sorted({type(exc).__name__ for exc in failed.exceptions})
                log.warning("webhook.sender_error", errors=errors)
                attempted = 0
            if attempted < options.batch_size:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), options.idle_seconds)


async def deliver_due_once(
    database: Database,
    settings: Settings,
    client: httpx.AsyncClient | None = None,
    *,
    now: datetime | None = None,
    options: SenderOptions | None = None,
) -> int:
    """Claim one batch of due deliveries, attempt each and record the results; returns how
    many were attempted. ``now`` fixes the clock (tests); otherwise it is read at each step."""
    options = options or SenderOptions()
    clock: Callable[[], datetime] = (lambda: now) if now is not None else utcnow
    async with database.sessions() as session:
        claimed = await claim_due(session, options.batch_size, options.lease_seconds, clock())
    if not claimed:
        return 0
    gate = asyncio.Semaphore(options.concurrency)
    allow_private = settings.webhook_allow_private

    async def attempt_and_record(http: httpx.AsyncClient, delivery: Claimed) -> None:
        async with gate:
            attempt = await post_delivery(http, delivery, clock(), allow_private, options)
        async with database.sessions() as session:
            await record_result(session, delivery, attempt, clock(), options.retry)
        log.info(
            "webhook.attempted",
            delivery=delivery.id,
            endpoint=delivery.endpoint_id,
            attempt=delivery.attempts,
            status=attempt.status_code,
            ok=attempt.succeeded,
        )

    async with _http_client(client, options) as http, asyncio.TaskGroup() as group:
        for delivery in claimed:
            group.create_task(attempt_and_record(http, delivery))
    return len(claimed)


@contextlib.asynccontextmanager
async def _http_client(
    client: httpx.AsyncClient | None, options: SenderOptions
) -> AsyncIterator[httpx.AsyncClient]:
    """The caller's client, or one of our own, closed afterwards."""
    if client is not None:
        yield client
        return
    limits = httpx.Limits(max_connections=options.concurrency)
    async with httpx.AsyncClient(limits=limits, follow_redirects=False) as own:
        yield own


def signed_request(delivery: Claimed, now: datetime) -> tuple[bytes, dict[str, str]]:
    """The body and headers of an attempt: signed at ``now``, identified by the delivery."""
    body = json.dumps(delivery.payload, separators=(",", ":"), sort_keys=True).encode()
    message_id = f"msg_{delivery.id}"
    timestamp = int(now.timestamp())
    headers = {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(delivery.secret, message_id, timestamp, body),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }
    return body, headers


async def post_delivery(
    client: httpx.AsyncClient,
    delivery: Claimed,
    now: datetime,
    allow_private: bool,
    options: SenderOptions,
) -> Attempt:
    """POST one delivery; never raises for what the receiver or the network did."""
    body, headers = signed_request(delivery, now)
    try:
        # httpx's timeout bounds each step; this bounds the whole (a receiver trickling bytes).
        async with asyncio.timeout(options.timeout_seconds):
            await check_target(delivery.url, allow_private)  # again: DNS may have changed
            async with client.stream(
                "POST",
                delivery.url,
                content=body,
                headers=headers,
                timeout=options.timeout_seconds,
                follow_redirects=False,  # a redirect could lead anywhere, past check_target
            ) as response:
                head = await _read_head(response)
    except TargetRefused as exc:
        return Attempt(error=exc.detail[:ERROR_CHARS])
    except TimeoutError:
        return Attempt(error=f"no answer within {options.timeout_seconds:g} s")
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        return Attempt(error=f"{type(exc).__name__}: {exc}"[:ERROR_CHARS])
    return _answered(response, head, now)


async def _read_head(response: httpx.Response) -> str:
    """The first KB of the body; the rest is never read (a receiver may answer with a lot)."""
    head = b""
    async for chunk in response.aiter_bytes():
        head += chunk
        if len(head) >= RESPONSE_BYTES:
            break
    # No database text column holds NUL.
    return head[:RESPONSE_BYTES].decode("utf-8", errors="replace").replace("\x00", "")


def _answered(response: httpx.Response, head: str, now: datetime) -> Attempt:
    status = response.status_code
    error = None
    if 300 <= status < 400:
        error = f"HTTP {status}: redirects are not followed; register the final URL"
    elif not 200 <= status < 300:
        error = f"HTTP {status}"
    retry_after = retry_after_seconds(response, now) if status in RETRY_AFTER_STATUSES else None
    return Attempt(status_code=status, response=head or None, error=error, retry_after=retry_after)
