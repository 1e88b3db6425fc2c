"""Amazon SES through its API v2: every message is one ``SendEmail`` call carrying our own MIME
bytes (``Content.Raw``), signed with AWS Signature Version 4 (written here: no boto at runtime).

Why raw per message and not ``SendBulkEmail`` (up to 50 destinations a call): bulk sends always
render a template on SES's side (a stored one or an inline ``TemplateContent``), so SES builds the
MIME and our bytes never leave: no DKIM signature of ours, no headers we chose beyond the 15
``ReplacementHeaders`` of printable ASCII, and every recipient's personalized subject, text and
HTML would travel as ``ReplacementTemplateData`` (at most 262,144 characters of JSON per entry,
HTML escaped into it). A body SES cannot render is accepted by the API and fails later as a
"Rendering Failure" event, where a raw call answers at once. moto does not implement the SES v2
bulk call either, so it could not be tested against it. Raw ``SendEmail`` with ``concurrency``
requests in flight (the base class) keeps the message exactly as composed and gives one
synchronous answer per delivery.

What SES does to a raw message (its "header fields" guide): it replaces our ``Message-ID`` and
``Date`` with its own, so the delivery is found again by SES's ``MessageId`` (returned as
``provider_message_id``) or by the ``delivery_id`` message tag, which SES copies into its
bounce, complaint and delivery events.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import re
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx

from tidings.transports.base import Outcome, OutgoingMessage, SendResult
from tidings.transports.http import (
    DETAIL_CHARS,
    HttpTransport,
    outcome_of_status,
    retry_after_seconds,
)

SEND_EMAIL_PATH = "/v2/email/outbound-emails"
SERVICE = "ses"  # the SigV4 signing name of SES v1 and v2 alike
DELIVERY_TAG = "delivery_id"  # tag names: ASCII letters, digits, "_" and "-"
_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d{1,2}")  # eu-west-1, us-gov-west-1, ap-southeast-4

# SES's error types (the ``x-amzn-ErrorType`` header) whose meaning differs from their status,
# or that are worth naming. Anything not listed falls back to the status (outcome_of_status).
ERROR_OUTCOMES: dict[str, Outcome] = {
    # 400s about this message or its sender: sending it again cannot help.
    "MessageRejected": Outcome.permanent,  # invalid content, or an unverified address (sandbox)
    "MailFromDomainNotVerifiedException": Outcome.permanent,
    "BadRequestException": Outcome.permanent,
    "NotFoundException": Outcome.permanent,  # 404: the configuration set does not exist
    # 403s: wrong keys or missing permission; every message fails until an operator fixes them.
    "InvalidSignatureException": Outcome.permanent,
    "UnrecognizedClientException": Outcome.permanent,
    "AccessDeniedException": Outcome.permanent,
    # Rate and quota: 429 per second, LimitExceededException (a 400) for the daily quota.
    "TooManyRequestsException": Outcome.transient,
    "LimitExceededException": Outcome.transient,
    "ThrottlingException": Outcome.transient,
    # Account-wide states (400s) that say nothing about the message: sending is paused (by the
    # operator or by SES's review, for the account or the configuration set) or the account is
    # suspended. Failing the delivery for good would lose every queued message to a state an
    # operator can undo; transient keeps them queued under the worker's retry limit, and a run
    # of transient failures is what takes a provider out of rotation (a circuit breaker).
    "SendingPausedException": Outcome.transient,
    "AccountSuspendedException": Outcome.transient,
    # SES's side (5xx).
    "InternalFailure": Outcome.transient,
    "ServiceUnavailable": Outcome.transient,
}


@dataclass(frozen=True)
class AwsCredentials:
    access_key_id: str
    secret_access_key: str = field(repr=False)


def utc_now() -> datetime:
    return datetime.now(UTC)


# AWS Signature Version 4 -------------------------------------------------------------------------

# Signed besides the date: enough for SES to tie the signature to this endpoint and body type.
SIGNED_HEADERS = ("content-type", "host", "x-amz-date")


def sign_request(
    request: httpx.Request, credentials: AwsCredentials, region: str, service: str, now: datetime
) -> None:
    """Add ``X-Amz-Date`` and ``Authorization`` (SigV4, the body's SHA-256 signed)."""
    stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    request.headers["X-Amz-Date"] = stamp
    names = [name for name in SIGNED_HEADERS if name in request.headers]
    scope = f"{stamp[:8]}/{region}/{service}/aws4_request"
    string_to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", stamp, scope, _sha256(canonical_request(request, names).encode())]
    )
    key = signing_key(credentials.secret_access_key, stamp[:8], region, service)
    signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    request.headers["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={credentials.access_key_id}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )


def canonical_request(request: httpx.Request, names: Sequence[str]) -> str:
    # Services other than S3 take the path as sent, percent-encoded once more; header values
    # are trimmed and their inner runs of spaces collapsed.
    path = quote(request.url.raw_path.split(b"?")[0].decode(), safe="/~")
    pairs = sorted(
        (quote(k, safe="-_.~"), quote(v, safe="-_.~")) for k, v in request.url.params.multi_items()
    )
    query = "&".join(f"{k}={v}" for k, v in pairs)
    headers = "".join(f"{name}:{' '.join(request.headers[name].split())}\n" for name in names)
    body_hash = _sha256(request.content)
    return "\n".join([request.method, path, query, headers, ";".join(names), body_hash])


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = f"AWS4{secret}".encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class SigV4(httpx.Auth):
    """Signs as the request leaves, not when it is built: a request waiting for one of the
    ``concurrency`` slots must not reach SES with a signature older than its 15 minute window."""

    requires_request_body = True

    def __init__(
        self,
        credentials: AwsCredentials,
        region: str,
        service: str = SERVICE,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.credentials = credentials
        self.region = region
        self.service = service
        self.clock = clock

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        sign_request(request, self.credentials, self.region, self.service, self.clock())
        yield request


# The transport ----------------------------------------------------------------------------------


class SesTransport(HttpTransport):
    name = "ses"
    needs_parts = False  # it takes our MIME as it is
    chunk_size = 1  # raw content goes one message per SendEmail call (see the module docstring)

    def __init__(
        self,
        *,
        credentials: AwsCredentials,
        region: str,
        configuration_set: str | None = None,
        endpoint_url: str | None = None,
        timeout: float = 30.0,
        concurrency: int = 8,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        if not _REGION.fullmatch(region):
            raise ValueError(f"unknown AWS region {region!r}; use a code like eu-west-1")
        base_url = endpoint_url or f"https://email.{region}.amazonaws.com"
        super().__init__(timeout=timeout, concurrency=concurrency, base_url=base_url)
        self.client.auth = SigV4(credentials, region, clock=clock)
        self.configuration_set = configuration_set

    def build_request(self, chunk: Sequence[OutgoingMessage]) -> httpx.Request:
        (message,) = chunk
        body = json.dumps(self.send_email_payload(message), separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json"}
        return self.client.build_request("POST", SEND_EMAIL_PATH, content=body, headers=headers)

    def send_email_payload(self, message: OutgoingMessage) -> dict[str, Any]:
        """SendEmail with our MIME bytes as they are. ``FromEmailAddress`` is the envelope sender:
        SES wants it verified and sends feedback (bounces, complaints) to it."""
        payload: dict[str, Any] = {
            "FromEmailAddress": message.sender,
            "Destination": {"ToAddresses": [message.recipient]},
            "Content": {"Raw": {"Data": base64.b64encode(without_our_dkim(message.data)).decode()}},
            "EmailTags": [{"Name": DELIVERY_TAG, "Value": str(message.delivery_id)}],
        }
        if self.configuration_set:
            payload["ConfigurationSetName"] = self.configuration_set
        return payload

    def parse_response(
        self, chunk: Sequence[OutgoingMessage], response: httpx.Response
    ) -> list[SendResult]:
        (message,) = chunk
        if response.is_success:
            message_id = str(response.json()["MessageId"])
            return [
                SendResult(message.delivery_id, Outcome.accepted, provider_message_id=message_id)
            ]
        kind = error_type(response)
        outcome = ERROR_OUTCOMES.get(kind, outcome_of_status(response.status_code))
        retry_after = retry_after_seconds(response) if outcome == Outcome.transient else None
        return [
            SendResult(
                message.delivery_id, outcome, describe_error(response, kind), None, retry_after
            )
        ]


def error_type(response: httpx.Response) -> str:
    """SES names the error in ``x-amzn-ErrorType`` ("MessageRejected:http://internal..."); some
    answers carry it only in the body: JSON ``__type`` or ``code`` (maybe "namespace#Name"), or
    the XML ``<Code>`` of AWS's Query-protocol errors (moto answers signature errors so)."""
    value = str(response.headers.get("x-amzn-ErrorType", ""))
    if not value:
        body = _json_object(response)
        value = str(body.get("__type") or body.get("code") or _xml_field(response, "Code"))
    return value.split(":")[0].split("#")[-1].strip()


def describe_error(response: httpx.Response, kind: str) -> str:
    """The status, SES's error type and its message, for the delivery's log (never a request
    header): ``400 MessageRejected: Email address is not verified.``"""
    body = _json_object(response)
    message = body.get("message") or body.get("Message") or _xml_field(response, "Message")
    text = " ".join(str(message or response.text).split())[:DETAIL_CHARS]
    return f"{response.status_code} {kind or response.reason_phrase}: {text}".rstrip(": ")


def _xml_field(response: httpx.Response, tag: str) -> str:
    match = re.search(rf"<{tag}>([^<]*)</{tag}>", response.text)
    return html.unescape(match[1]) if match else ""


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:  # moto and AWS's front ends answer some errors in XML or plain text
        return {}
    return body if isinstance(body, dict) else {}


def from_provider(
    settings: Mapping[str, Any], secrets: Mapping[str, str], timeout: float
) -> SesTransport:
    """The transport of a stored SES provider (``KINDS["ses"]``: region required;
    configuration_set and endpoint_url optional, the latter for moto or a VPC endpoint)."""
    credentials = AwsCredentials(secrets["access_key_id"], secrets["secret_access_key"])
    return SesTransport(
        credentials=credentials,
        region=str(settings["region"]),
        configuration_set=str(settings.get("configuration_set") or "") or None,
        endpoint_url=str(settings.get("endpoint_url") or "") or None,
        timeout=timeout,
    )


def without_our_dkim(data: bytes) -> bytes:
    """The message without the DKIM-Signature we put in front. SES overwrites the Date and
    Message-ID headers, which our signature covers, so it would fail at every receiver; SES
    signs the mail itself (Easy DKIM or BYODKIM for the sending domain)."""
    if data.startswith(b"DKIM-Signature:"):
        return data.partition(b"\r\n")[2]
    return data
