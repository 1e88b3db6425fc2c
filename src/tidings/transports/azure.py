"""Azure Communication Services Email: one message per ``POST /emails:send``, signed with the
resource's access key (HMAC-SHA256), then the long-running operation that the send starts is
polled until the service says the message went out (``Succeeded``) or was dropped (``Failed``).

Azure's terms, as the REST reference (api-version 2023-03-31) puts them: a send answers
202 with ``Operation-Location`` (the status URL) and a body ``{id, status}``; the status is
``NotStarted`` or ``Running`` until it is ``Succeeded``, ``Failed`` or ``Canceled``, with an
``error {code, message}`` when it did not succeed. Errors elsewhere are ``{"error": {code,
message}}``; 429 carries ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import quote

import httpx

from tidings.delivery.mime import MessageContent
from tidings.transports.base import Outcome, OutgoingMessage, SendResult
from tidings.transports.http import (
    DETAIL_CHARS,
    HttpTransport,
    content_of,
    describe_response,
    outcome_of_status,
    retry_after_seconds,
)

__all__ = ["API_VERSION", "AzureEmailTransport", "from_provider", "operation_id", "signed_headers"]

API_VERSION = "2023-03-31"  # the GA version of the Email data plane
SEND_PATH = "/emails:send"
STATUS_PATH = "/emails/operations/{}"
SIGNED_HEADERS = "x-ms-date;host;x-ms-content-sha256"
# Our Operation-Ids are RFC 9562 UUIDv8: 74 bits of a hash of the delivery and its Message-ID,
# then the delivery id in the last 48 bits. The same delivery always gets the same id, on any
# machine and after any restart, and an Event Grid event, which carries only the operation id,
# names its delivery (see ``delivery_of_operation``).
OPERATION_SALT = b"tidings azure operation"
DELIVERY_BITS = 48
SUCCEEDED = "Succeeded"
UNSENT = frozenset({"Failed", "Canceled"})  # the other terminal statuses; NotStarted, Running


def signed_headers(
    method: str, path_and_query: str, host: str, body: bytes, key: bytes, now: datetime
) -> dict[str, str]:
    """The three headers of Communication Services' HMAC-SHA256 scheme. The string signed is
    ``VERB\\npath?query\\ndate;host;content-hash``; the service recomputes it from what arrives,
    so the date and the hash are sent as headers, and the host is the one the request goes to."""
    date = format_datetime(now.astimezone(UTC), usegmt=True)  # RFC 1123, as x-ms-date wants
    content_hash = base64.b64encode(hashlib.sha256(body).digest()).decode()
    to_sign = f"{method.upper()}\n{path_and_query}\n{date};{host};{content_hash}"
    digest = hmac.new(key, to_sign.encode(), hashlib.sha256).digest()
    signature = base64.b64encode(digest).decode()
    return {
        "x-ms-date": date,
        "x-ms-content-sha256": content_hash,
        "Authorization": f"HMAC-SHA256 SignedHeaders={SIGNED_HEADERS}&Signature={signature}",
    }


def operation_id(message: OutgoingMessage, content: MessageContent) -> str:
    """The Operation-Id of a delivery: the same on every attempt, so that a message sent again
    after a crash names the operation Azure already has instead of starting a second one."""
    seed = f"{message.delivery_id}:{content.headers.message_id}".encode()
    digest = int.from_bytes(hashlib.sha256(OPERATION_SALT + seed).digest()[:16], "big")
    delivery = message.delivery_id & ((1 << DELIVERY_BITS) - 1)
    value = (digest >> DELIVERY_BITS << DELIVERY_BITS) | delivery
    value = value & ~(0xF << 76) | (0x8 << 76)  # version 8
    value = value & ~(0x3 << 62) | (0x2 << 62)  # the RFC variant
    return str(uuid.UUID(int=value))


def delivery_of_operation(operation: str | None) -> int | None:
    """The delivery id inside one of our Operation-Ids, or None for any other string."""
    try:
        parsed = uuid.UUID(operation or "")
    except ValueError:
        return None
    if parsed.version != 8 or parsed.variant != uuid.RFC_4122:
        return None
    return parsed.int & ((1 << DELIVERY_BITS) - 1) or None


def email_payload(content: MessageContent) -> dict[str, Any]:
    """The body of ``emails:send`` for one recipient.

    Azure takes no sender display name per message: the name comes from the sender username
    (MailFrom) configured on the verified domain, so ``from_name`` has no field to go in.
    Engagement tracking is switched off: Azure would rewrite links and add its own pixel on top
    of ours. ``headers`` are custom headers; Message-ID is honoured when it is RFC 2822-valid
    (ours always are) and silently replaced by Azure's own otherwise.
    """
    h = content.headers
    body: dict[str, Any] = {"subject": h.subject, "plainText": content.text}
    if content.html is not None:
        body["html"] = content.html
    payload: dict[str, Any] = {
        "senderAddress": h.from_address,
        "recipients": {"to": [{"address": h.to_address}]},
        "content": body,
        "headers": content.extra_headers(),
        "userEngagementTrackingDisabled": True,
    }
    if h.reply_to:
        payload["replyTo"] = [{"address": h.reply_to}]
    return payload


def error_detail(response: httpx.Response) -> str:
    """``status reason: code: message`` from Azure's error body, else the body's start."""
    try:
        error = response.json()["error"]
        code, message = str(error["code"]), str(error.get("message", ""))
    except (ValueError, KeyError, TypeError, AttributeError):
        return describe_response(response)
    text = f"{response.status_code} {response.reason_phrase}: {code}: {message}"
    return text[:DETAIL_CHARS]


@dataclass(frozen=True, slots=True)
class _Operation:
    """A send the service took (202) or says it already has (409), to be followed to its end."""

    id: str
    status_url: str
    first_wait: float | None  # the Retry-After of the answer that named it
    confirmed: bool  # a 202 named it; after a 409 it may not exist at all
    detail: str = ""  # for an unconfirmed operation: why we went looking for it


class AzureEmailTransport(HttpTransport):
    """Sends through one Communication Services resource, one recipient per request."""

    name = "azure"
    chunk_size = 1  # our bodies are per recipient; Azure's recipients would share one body
    default_poll_interval = 1.0  # seconds between status polls when Azure names no Retry-After
    min_poll_interval = 0.1  # never poll in a tight loop, whatever Retry-After says

    def __init__(
        self,
        *,
        endpoint: str,
        access_key: bytes,
        timeout: float = 30.0,
        concurrency: int = 8,
    ) -> None:
        super().__init__(timeout=timeout, concurrency=concurrency, base_url=endpoint)
        self._key = access_key
        self._endpoint = endpoint
        self._origin = httpx.URL(endpoint)
        # How long a message's operation is followed: the transport's own timeout, no setting.
        self._poll_budget = timeout
        self._operations: dict[str, _Operation] = {}  # by operation id, until followed

    # The HttpTransport hooks -----------------------------------------------------------------

    def build_request(self, chunk: Sequence[OutgoingMessage]) -> httpx.Request:
        message = chunk[0]
        content = content_of(message)
        body = json.dumps(email_payload(content), ensure_ascii=False, separators=(",", ":"))
        request = self.client.build_request(
            "POST",
            SEND_PATH,
            params={"api-version": API_VERSION},
            content=body.encode(),
            headers={
                "Content-Type": "application/json",
                "Operation-Id": operation_id(message, content),
            },
        )
        return self._signed(request)

    def parse_response(
        self, chunk: Sequence[OutgoingMessage], response: httpx.Response
    ) -> list[SendResult]:
        delivery_id = chunk[0].delivery_id
        sent_id = response.request.headers["Operation-Id"]
        if response.status_code == 202:
            op_id = str(json_object(response).get("id") or sent_id)
            status_url = self._status_url(op_id, response.headers.get("Operation-Location"))
            first_wait = retry_after_seconds(response)
            self._operations[op_id] = _Operation(op_id, status_url, first_wait, confirmed=True)
            return [SendResult(delivery_id, Outcome.accepted, provider_message_id=op_id)]
        if response.status_code == 409:
            # Azure does not document its answer to an Operation-Id it has seen; a conflict is
            # read as "that operation exists", and its status decides (absent: the 409 stands).
            operation = _Operation(
                sent_id, self._status_url(sent_id), None, False, error_detail(response)
            )
            self._operations[sent_id] = operation
            return [SendResult(delivery_id, Outcome.accepted, provider_message_id=sent_id)]
        outcome = outcome_of_status(response.status_code)
        if outcome == Outcome.accepted:  # a 2xx that starts no operation: nothing to follow
            return [SendResult(delivery_id, outcome, provider_message_id=sent_id)]
        retry_after = retry_after_seconds(response) if outcome == Outcome.transient else None
        return [SendResult(delivery_id, outcome, error_detail(response), retry_after=retry_after)]

    async def send_chunk(self, chunk: Sequence[OutgoingMessage]) -> list[SendResult]:
        """The base sends; a message Azure took is then followed to the end of its operation."""
        results = await super().send_chunk(chunk)
        return [await self._settled(result) for result in results]

    # Following an operation ------------------------------------------------------------------

    async def _settled(self, result: SendResult) -> SendResult:
        operation = self._operations.pop(result.provider_message_id or "", None)
        if result.outcome != Outcome.accepted or operation is None:
            return result
        return await self._follow(result.delivery_id, operation)

    async def _follow(self, delivery_id: int, operation: _Operation) -> SendResult:
        """Poll the status URL, honouring Retry-After, until a terminal status or the budget
        runs out. Azure took the message either way: still running at the end counts as sent."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._poll_budget
        wait, last = operation.first_wait, "NotStarted"
        while True:
            delay = max(
                self.min_poll_interval, self.default_poll_interval if wait is None else wait
            )
            if loop.time() + delay > deadline:
                break
            await asyncio.sleep(delay)
            response = await self._poll(operation.status_url)
            if response is None:
                wait, last = None, "unknown (no answer from the status URL)"
                continue
            if response.status_code == 200:
                status = str(json_object(response).get("status", ""))
                if status == SUCCEEDED or status in UNSENT:
                    return self._final(delivery_id, operation.id, status, response)
                wait, last = retry_after_seconds(response), status or "unreadable"
                continue
            if response.status_code == 404 and not operation.confirmed:
                return SendResult(delivery_id, Outcome.permanent, operation.detail)
            last = f"unknown ({error_detail(response)})"
            if outcome_of_status(response.status_code) == Outcome.permanent:
                break  # asking again will not help; the 202 already said Azure has it
            wait = retry_after_seconds(response)
        detail = (
            f"Azure accepted the message (operation {operation.id}); its status was still "
            f"{last} after {self._poll_budget:g} s"
        )
        return SendResult(delivery_id, Outcome.accepted, detail, provider_message_id=operation.id)

    def _final(
        self, delivery_id: int, op_id: str, status: str, response: httpx.Response
    ) -> SendResult:
        if status == SUCCEEDED:
            return SendResult(delivery_id, Outcome.accepted, provider_message_id=op_id)
        # Failed or Canceled: Azure will not send it, and sending again would fail the same way.
        error = json_object(response).get("error")
        error = error if isinstance(error, dict) else {}
        detail = f"{status}: {error.get('code', 'unknown')}: {error.get('message', '')}"
        return SendResult(
            delivery_id, Outcome.permanent, detail[:DETAIL_CHARS], provider_message_id=op_id
        )

    async def _poll(self, status_url: str) -> httpx.Response | None:
        """One signed GET of the status URL; None when it did not answer in time."""
        request = self._signed(self.client.build_request("GET", status_url))
        async with self.slots:
            try:
                return await self.client.send(request)
            except httpx.HTTPError:
                return None

    # Helpers ---------------------------------------------------------------------------------

    def _signed(self, request: httpx.Request) -> httpx.Request:
        url = request.url
        request.headers.update(
            signed_headers(
                request.method,
                url.raw_path.decode("ascii"),
                url.netloc.decode("ascii"),
                request.content,
                self._key,
                datetime.now(UTC),
            )
        )
        return request

    def _status_url(self, op_id: str, location: str | None = None) -> str:
        """Operation-Location when it points at our own resource; else the documented path.
        A signed request never goes to a host the access key was not given for."""
        if location:
            url = httpx.URL(location)
            if (url.scheme, url.netloc) == (self._origin.scheme, self._origin.netloc):
                return str(url)
        path = STATUS_PATH.format(quote(op_id, safe=""))
        return f"{self._endpoint}{path}?api-version={API_VERSION}"


def json_object(response: httpx.Response) -> dict[str, Any]:
    """The body as a JSON object; empty when it is not one (an answer we cannot read)."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def decode_access_key(value: str) -> bytes:
    """The resource's access key as the portal shows it (base64) as the bytes that sign."""
    try:
        key = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if not key:
        raise ValueError(
            "an Azure provider needs its resource's access key, base64 as the portal's Keys "
            "page shows it (secret 'access_key')"
        )
    return key


def normalized_endpoint(value: str) -> str:
    """``https://<resource>.communication.azure.com``, without a trailing slash."""
    endpoint = value.strip().rstrip("/")
    try:
        url = httpx.URL(endpoint)
    except httpx.InvalidURL:
        url = httpx.URL()
    if url.scheme not in ("https", "http") or not url.host or url.query or url.fragment:
        raise ValueError(
            f"the Azure endpoint {value!r} (setting 'endpoint') is not a URL like "
            "https://myres.communication.azure.com"
        )
    return endpoint


def from_provider(
    settings: Mapping[str, Any], secrets: Mapping[str, str], timeout: float
) -> AzureEmailTransport:
    """The transport of a stored azure provider (settings: endpoint; secrets: access_key)."""
    return AzureEmailTransport(
        endpoint=normalized_endpoint(str(settings.get("endpoint", ""))),
        access_key=decode_access_key(secrets.get("access_key", "")),
        timeout=timeout,
    )
