"""The base of every HTTP API transport (SES, SendGrid, Postmark, Mailgun, Azure, generic).

One pooled ``httpx.AsyncClient`` per provider; a batch is cut into the provider's request size
(``chunk_size``) and the requests run a few at a time. What is shared lives here: status classes
mapped to outcomes, ``Retry-After``, timeouts and connection errors. A provider module overrides
two hooks: ``build_request`` (one API call for a chunk of messages) and, where the answer is per
message, ``parse_response``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from tidings.delivery.mime import MessageContent
from tidings.transports.base import Outcome, OutgoingMessage, SendResult

# Statuses worth trying again: the request may succeed later as it is.
TRANSIENT_STATUSES = frozenset({408, 425, 429})
DETAIL_CHARS = 300  # of a response body kept in a delivery's error


class UnsupportedFeature(Exception):
    """The provider cannot send this message as asked; the message fails, nothing is dropped."""


class PartsMissing(Exception):
    """The message was composed without its parts (no provider needed them then): transient,
    so that it goes to another provider, or is composed again with its parts."""


def outcome_of_status(status: int) -> Outcome:
    """2xx accepted; 408, 425, 429 and 5xx transient; any other answer permanent (the request
    itself is wrong: bad credentials, a refused sender, an invalid address)."""
    if 200 <= status < 300:
        return Outcome.accepted
    if status in TRANSIENT_STATUSES or status >= 500:
        return Outcome.transient
    return Outcome.permanent


def retry_after_seconds(response: httpx.Response, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds: either form of RFC 9110 (delta-seconds or an HTTP date)."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - (now or datetime.now(UTC))).total_seconds())


def describe_response(response: httpx.Response) -> str:
    """The status and the start of the body, for a delivery's log (never a request header)."""
    body = response.text.strip().replace("\r", " ").replace("\n", " ")
    return f"{response.status_code} {response.reason_phrase}: {body[:DETAIL_CHARS]}".rstrip(": ")


def content_of(message: OutgoingMessage) -> MessageContent:
    """The message in parts, for APIs that build the MIME themselves."""
    if message.content is None:
        raise PartsMissing("composed without its parts, which this provider needs: next time")
    return message.content


class HttpTransport:
    """Sends each chunk of a batch as one API request; ``concurrency`` requests in flight."""

    name = "http"
    chunk_size = 1  # messages per API request: the provider's documented batch limit
    needs_parts = True  # most APIs build the MIME themselves; raw-MIME APIs say False

    def __init__(self, *, timeout: float = 30.0, concurrency: int = 8, base_url: str = "") -> None:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        self.client = httpx.AsyncClient(
            base_url=base_url,
            timeout=timeout,
            limits=limits,
            headers={"User-Agent": "tidings"},
            follow_redirects=False,
        )
        self._timeout = timeout
        self.slots = asyncio.Semaphore(concurrency)

    async def send(self, batch: Sequence[OutgoingMessage]) -> list[SendResult]:
        groups = self.requests_of(batch)
        answers = await asyncio.gather(
            *(self.send_chunk([batch[i] for i in group]) for group in groups)
        )
        by_index = {
            index: result
            for group, answer in zip(groups, answers, strict=True)
            for index, result in zip(group, answer, strict=True)
        }
        return [by_index[index] for index in range(len(batch))]

    async def close(self) -> None:
        await self.client.aclose()

    def requests_of(self, batch: Sequence[OutgoingMessage]) -> list[list[int]]:
        """Which messages (by position in the batch) share each request: by default the batch
        in order, ``chunk_size`` at a time."""
        size = self.chunk_size
        return [list(range(i, min(i + size, len(batch)))) for i in range(0, len(batch), size)]

    def build_request(self, chunk: Sequence[OutgoingMessage]) -> httpx.Request:
        """One API request carrying every message of the chunk."""
        raise NotImplementedError

    def parse_response(
        self, chunk: Sequence[OutgoingMessage], response: httpx.Response
    ) -> list[SendResult]:
        """One result per message of the chunk, in order. By default the status answers for
        all of them; providers that answer per message override this."""
        return same_result(chunk, response)

    async def send_chunk(self, chunk: Sequence[OutgoingMessage]) -> list[SendResult]:
        """One request for the chunk, its answer read; never raises for a message."""
        try:
            request = self.build_request(chunk)
        except UnsupportedFeature as exc:
            return [SendResult(m.delivery_id, Outcome.permanent, str(exc)) for m in chunk]
        except PartsMissing as exc:
            return [SendResult(m.delivery_id, Outcome.transient, str(exc)) for m in chunk]
        async with self.slots:
            try:
                response = await self.client.send(request)
            except httpx.TimeoutException:
                detail = f"no answer from {request.url.host} within {self._timeout:g} s"
                return [SendResult(m.delivery_id, Outcome.transient, detail) for m in chunk]
            except httpx.HTTPError as exc:
                detail = f"could not reach {request.url.host}: {type(exc).__name__}"
                return [SendResult(m.delivery_id, Outcome.transient, detail) for m in chunk]
        try:
            return self.parse_response(chunk, response)
        except (ValueError, KeyError, TypeError, IndexError):
            # An answer we cannot read: its status still says whether the request was taken.
            return same_result(chunk, response)


def same_result(chunk: Sequence[OutgoingMessage], response: httpx.Response) -> list[SendResult]:
    """The response's status as every message's result (a request that stands or falls whole)."""
    outcome = outcome_of_status(response.status_code)
    detail = "" if outcome == Outcome.accepted else describe_response(response)
    retry_after = retry_after_seconds(response) if outcome == Outcome.transient else None
    return [SendResult(m.delivery_id, outcome, detail, retry_after=retry_after) for m in chunk]
