"""The outgoing webhooks' queue: claim what is due, record what an attempt came to.

A delivery is claimed like the outbox's deliveries: one statement locks the due rows with
``FOR UPDATE SKIP LOCKED`` (SQLite, one writer, runs it plainly), counts an attempt and leases
them by moving ``next_attempt_at`` to the end of the lease, so a sender that dies mid-batch
leaves its rows to be claimed again once the lease ends. A result is recorded only for the
attempt that was claimed, so a sender that outlived its lease cannot overwrite a newer one.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tidings.hooks.models import HookStatus, WebhookDelivery, WebhookEndpoint
from tidings.hooks.service import iso
from tidings.security.audit import SYSTEM_ACTOR, record_audit

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery claimed for one attempt, with what sending it needs."""

    id: int
    endpoint_id: int
    attempts: int  # this attempt's number, from 1
    url: str
    secret: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one POST came to: an HTTP answer (its status and the start of its body), or an
    error before any answer (refused target, connection, timeout)."""

    status_code: int | None = None
    response: str | None = None
    error: str | None = None
    retry_after: float | None = None  # seconds the receiver asked for (429 and 503 only)

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    def describe(self) -> str:
        return self.error or f"HTTP {self.status_code}"


@dataclass(frozen=True)
class RetryPolicy:
    """When a failed attempt is tried again: after each of ``delays`` in turn (± ``jitter``, so
    many deliveries failing together do not retry together), then never (failed). A receiver's
    Retry-After replaces the delay, bounded to [``min_retry_after``, ``max_retry_after``]."""

    delays: tuple[float, ...] = (30, 120, 600, 3600, 6 * 3600, 12 * 3600, 24 * 3600)
    jitter: float = 0.2
    min_retry_after: float = 1.0
    max_retry_after: float = 6 * 3600
    disable_after: int = 20  # failed attempts in a row, across deliveries, disable the endpoint

    @property
    def max_attempts(self) -> int:
        return len(self.delays) + 1

    def delay(self, attempts: int, retry_after: float | None) -> float | None:
        """Seconds until the next attempt after ``attempts`` failed ones; None: give up."""
        if attempts >= self.max_attempts:
            return None
        if retry_after is not None:
            return min(max(retry_after, self.min_retry_after), self.max_retry_after)
        base = self.delays[attempts - 1]
        return base * random.uniform(1 - self.jitter, 1 + self.jitter)


async def claim_due(
    session: AsyncSession, limit: int, lease_seconds: float, now: datetime
) -> list[Claimed]:
    """Claim up to ``limit`` pending deliveries of enabled endpoints due at ``now``, oldest due
    first, leased for ``lease_seconds``. Commits."""
    lease_end = now + timedelta(seconds=lease_seconds)
    claimable = (
        select(WebhookDelivery.id)
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
        .where(
            WebhookDelivery.status == HookStatus.pending.value,
            WebhookDelivery.next_attempt_at <= now,
            WebhookEndpoint.enabled.is_(True),
        )
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(limit)
        .with_for_update(of=WebhookDelivery, skip_locked=True)
        .cte("claimable")
    )
    rows = (
        await session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == claimable.c.id)
            .values(
                attempts=WebhookDelivery.attempts + 1,
                lease_until=lease_end,
                next_attempt_at=lease_end,
            )
            .returning(
                WebhookDelivery.id,
                WebhookDelivery.endpoint_id,
                WebhookDelivery.attempts,
                WebhookDelivery.payload,
            )
        )
    ).all()
    targets = await _targets(session, {row.endpoint_id for row in rows})
    await session.commit()
    return [
        Claimed(row.id, row.endpoint_id, row.attempts, *targets[row.endpoint_id], row.payload)
        for row in rows
    ]


async def _targets(session: AsyncSession, endpoint_ids: set[int]) -> dict[int, tuple[str, str]]:
    """URL and secret by endpoint, read as the batch is claimed (a rotated secret counts)."""
    if not endpoint_ids:
        return {}
    rows = await session.execute(
        select(WebhookEndpoint.id, WebhookEndpoint.url, WebhookEndpoint.secret).where(
            WebhookEndpoint.id.in_(sorted(endpoint_ids))
        )
    )
    return {endpoint_id: (url, secret) for endpoint_id, url, secret in rows}


async def record_result(
    session: AsyncSession, claimed: Claimed, attempt: Attempt, now: datetime, policy: RetryPolicy
) -> bool:
    """Record an attempt: succeeded, retried later, or failed after the last attempt; count
    it on the endpoint, which a run of ``policy.disable_after`` failures disables. Returns
    False (and changes nothing) if the delivery is no longer this attempt's. Commits."""
    values: dict[str, Any] = {
        "lease_until": None,
        "last_status_code": attempt.status_code,
        "last_response": attempt.response,
        "last_error": attempt.error,
    }
    if attempt.succeeded:
        values.update(status=HookStatus.succeeded.value, delivered_at=now)
    else:
        delay = policy.delay(claimed.attempts, attempt.retry_after)
        if delay is None:
            values["status"] = HookStatus.failed.value
        else:
            values["next_attempt_at"] = now + timedelta(seconds=delay)
    recorded = await session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == claimed.id,
            WebhookDelivery.attempts == claimed.attempts,
            WebhookDelivery.status == HookStatus.pending.value,
        )
        .values(**values)
        .returning(WebhookDelivery.id)
    )
    if recorded.first() is None:
        await session.rollback()
        return False
    await _count_on_endpoint(session, claimed.endpoint_id, attempt, now, policy)
    await session.commit()
    return True


async def _count_on_endpoint(
    session: AsyncSession, endpoint_id: int, attempt: Attempt, now: datetime, policy: RetryPolicy
) -> None:
    endpoint = WebhookEndpoint.__table__.c
    if attempt.succeeded:
        await session.execute(
            update(WebhookEndpoint)
            .where(endpoint.id == endpoint_id)
            .values(consecutive_failures=0, last_success_at=now)
        )
        return
    # Counted in SQL (SET reads the row as it is), so concurrent results each count; the
    # update locks the row to the end of the transaction, so exactly one result disables it.
    failures = await session.scalar(
        update(WebhookEndpoint)
        .where(endpoint.id == endpoint_id)
        .values(consecutive_failures=endpoint.consecutive_failures + 1, last_failure_at=now)
        .returning(endpoint.consecutive_failures)
    )
    if failures is not None and failures >= policy.disable_after:
        await _disable(session, endpoint_id, attempt, now, policy)


async def _disable(
    session: AsyncSession, endpoint_id: int, attempt: Attempt, now: datetime, policy: RetryPolicy
) -> None:
    reason = (
        f"{policy.disable_after} consecutive failed attempts; disabled since {iso(now)} "
        f"(last: {attempt.describe()[:200]})"
    )
    disabled = await session.scalar(
        update(WebhookEndpoint)
        .where(WebhookEndpoint.id == endpoint_id, WebhookEndpoint.enabled.is_(True))
        .values(enabled=False, disabled_reason=reason)
        .returning(WebhookEndpoint.id)
    )
    if disabled is not None:  # not already disabled (by an earlier failure, or a user)
        log.warning("webhook.endpoint_disabled", endpoint=endpoint_id, reason=reason)
        record_audit(session, SYSTEM_ACTOR, "webhook_endpoint.disable", "webhook_endpoint",
                     endpoint_id, {"reason": reason})  # fmt: skip
