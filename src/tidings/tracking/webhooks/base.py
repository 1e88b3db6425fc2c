"""What every provider webhook shares: the errors a route maps to HTTP statuses, the replay
guard for one-time tokens, the timestamp window, and the rules that read a provider's verdict on
a bounce or an open the same way for every provider."""

from __future__ import annotations

import heapq
import hmac
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

from tidings.tracking.bounces import classify
from tidings.tracking.events import BounceKind

# Long enough for a provider's clock drift and a slow queue, short enough that a captured
# request is useless soon after; the window SendGrid, Mailgun and Standard Webhooks suggest.
TIMESTAMP_TOLERANCE = timedelta(minutes=5)


class WebhookError(Exception):
    """A webhook request we do not act on; ``reason`` is safe to log and to return (never a
    secret, never a full payload)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class WebhookRejected(WebhookError):
    """Not shown to come from the provider (bad or missing signature, credentials, timestamp,
    replayed token, unknown topic): HTTP 401."""


class WebhookMalformed(WebhookError):
    """Authentic, but not the shape the provider documents: HTTP 400."""


class WebhookUnavailable(WebhookError):
    """Could not be checked right now (the provider's certificate could not be fetched): HTTP
    503, so that the provider retries instead of dropping the event as delivered."""


class ReplayGuard(Protocol):
    async def first_use(self, key: str, expires_at: datetime) -> bool:
        """True the first time ``key`` is seen before ``expires_at``; False for a replay."""
        ...


class MemoryReplayGuard:
    """A ``ReplayGuard`` in process memory, for tests and a single process.

    Bounded: when ``max_entries`` keys are live, the one expiring soonest is forgotten first, so a
    flood of fresh tokens costs memory up to the bound and nothing more. A guard shared by several
    processes must live in the database or Redis instead.
    """

    def __init__(
        self,
        max_entries: int = 100_000,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.max_entries = max_entries
        self.clock = clock
        self._expiry: dict[str, datetime] = {}
        self._by_expiry: list[tuple[datetime, str]] = []  # a heap; may hold stale pairs

    async def first_use(self, key: str, expires_at: datetime) -> bool:
        self._forget_expired(self.clock())
        if key in self._expiry:
            return False
        while len(self._expiry) >= self.max_entries:
            self._forget_soonest()
        self._expiry[key] = expires_at
        heapq.heappush(self._by_expiry, (expires_at, key))
        return True

    def __len__(self) -> int:
        return len(self._expiry)

    def _forget_expired(self, now: datetime) -> None:
        while self._by_expiry and self._by_expiry[0][0] <= now:
            self._forget_soonest()

    def _forget_soonest(self) -> None:
        expires_at, key = heapq.heappop(self._by_expiry)
        if self._expiry.get(key) == expires_at:
            del self._expiry[key]


def require_configured(secret: str, what: str) -> None:
    """An empty expected secret would make every comparison against an empty header succeed:
    reject everything until it is configured."""
    if not secret:
        raise WebhookRejected(f"{what} is not configured: every request is refused until it is")


def same_secret(expected: str, given: str) -> bool:
    """Constant-time equality of two strings (as UTF-8 bytes: compare_digest takes ASCII str
    only)."""
    return hmac.compare_digest(expected.encode(), given.encode())


def check_timestamp(timestamp: str | int | float, now: datetime) -> datetime:
    """The Unix ``timestamp`` as an aware datetime, if within ``TIMESTAMP_TOLERANCE`` of ``now``
    either way; a stale one may be a replay, a future one a forgery prepared in advance."""
    try:
        seconds = float(timestamp)
        moment = datetime.fromtimestamp(seconds, UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        raise WebhookRejected(
            f"the signature timestamp {str(timestamp)[:32]!r} is not a Unix time"
        ) from None
    if abs(moment - now) > TIMESTAMP_TOLERANCE:
        raise WebhookRejected(
            f"the signature timestamp {moment.isoformat()} is more than "
            f"{int(TIMESTAMP_TOLERANCE.total_seconds())} s away from now ({now.isoformat()})"
        )
    return moment


def provider_bounce_kind(
    permanent: bool | None, status: str | None, diagnostic: str | None
) -> BounceKind:
    """Combine a provider's own verdict with the SMTP evidence. A permanent failure is the
    address's fault (hard) unless the status or diagnostic says the message or the sender was
    refused (5.7.x, content, spam: policy); a temporary one is soft; without a verdict the SMTP
    evidence decides alone."""
    if permanent is None:
        return classify(status, diagnostic)
    if not permanent:
        return BounceKind.soft
    if classify(status, diagnostic) is BounceKind.policy:
        return BounceKind.policy
    return BounceKind.hard
