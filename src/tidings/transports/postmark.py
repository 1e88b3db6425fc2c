"""The Postmark transport: ``POST /email/batch``, up to 500 messages a call, each a complete
message of its own (so per-recipient bodies batch freely), answered message by message."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from tidings.delivery.mime import sanitize
from tidings.transports.base import Outcome, OutgoingMessage, SendResult
from tidings.transports.http import HttpTransport, content_of, same_result

PRODUCTION_URL = "https://api.postmarkapp.com"
BATCH_PATH = "/email/batch"
MAX_BATCH = 500  # messages per call, as Postmark documents (and refuses more with ErrorCode 410)
# Campaign mail belongs in a Broadcast stream: Postmark keeps it on infrastructure apart from
# transactional mail, and without ``MessageStream`` it would go to the server's default
# transactional stream ("outbound"). "broadcast" is the id of the stream we expect by default;
# the provider's ``message_stream`` setting names another one.
DEFAULT_STREAM = "broadcast"
# Metadata comes back in every webhook event of the message: how an event finds its delivery.
DELIVERY_KEY = "tidings_delivery_id"

# Postmark's API error codes (``ErrorCode``), as its API overview lists them. 0 is success.
# Worth trying again as is: 100 (maintenance) and 429 (rate limit exceeded). Everything else
# needs a change first: 10 bad or missing server token, 300 invalid email request (a bad
# address, no body), 400/401 sender signature not found/not confirmed, 405 not allowed to send
# (out of credits), 406 inactive recipient (hard bounce, spam complaint or manual suppression),
# 410 too many batch messages, 412/413 account pending / may not send.
TRANSIENT_ERROR_CODES = frozenset({100, 429})
_NEEDS_QUOTES = re.compile(r'[()<>\[\]:;@\\,."]')


class PostmarkTransport(HttpTransport):
    """One batch call per 500 messages, authenticated with the server token."""

    name = "postmark"
    chunk_size = MAX_BATCH

    def __init__(
        self,
        *,
        server_token: str,
        message_stream: str = DEFAULT_STREAM,
        base_url: str = PRODUCTION_URL,
        timeout: float = 30.0,
        concurrency: int = 8,
    ) -> None:
        if not server_token:
            raise ValueError("a Postmark provider needs its server token (secret 'server_token')")
        super().__init__(timeout=timeout, concurrency=concurrency, base_url=base_url)
        # On the client, so that it is never part of anything we build a detail or a log from.
        # Postmark wants JSON both ways (ErrorCode 409 "JSON required" otherwise).
        self.client.headers["X-Postmark-Server-Token"] = server_token
        self.client.headers["Accept"] = "application/json"
        self.message_stream = message_stream

    def build_request(self, chunk: Sequence[OutgoingMessage]) -> httpx.Request:
        body = [self.postmark_message(message) for message in chunk]
        return self.client.build_request("POST", BATCH_PATH, json=body)

    def postmark_message(self, message: OutgoingMessage) -> dict[str, Any]:
        """One message of the batch in Postmark's fields; the headers beyond From, To, Subject
        and Reply-To go as a list of Name/Value pairs."""
        content = content_of(message)
        h = content.headers
        payload: dict[str, Any] = {
            "From": mailbox(h.from_address, h.from_name),
            "To": message.recipient,  # the envelope recipient: Postmark delivers to it
            "Subject": sanitize(h.subject),
            "Headers": [{"Name": k, "Value": v} for k, v in content.extra_headers().items()],
            "MessageStream": self.message_stream,
            "Metadata": {DELIVERY_KEY: str(message.delivery_id)},
        }
        # An empty body is left out rather than sent empty; a message with neither is
        # answered by Postmark with ErrorCode 300 for that message alone.
        if content.text:
            payload["TextBody"] = content.text
        if content.html:
            payload["HtmlBody"] = content.html
        if h.reply_to:
            payload["ReplyTo"] = sanitize(h.reply_to)
        return payload

    def parse_response(
        self, chunk: Sequence[OutgoingMessage], response: httpx.Response
    ) -> list[SendResult]:
        """A 200 answers each message, in the order sent, with its own ErrorCode (a batch is
        200 even when some of its messages were refused). Any other status is the whole call's:
        401 (ErrorCode 10), 422 (an ErrorCode for the request), 429, 500, 503."""
        if response.status_code != 200:
            return request_result(chunk, response)
        answers = response.json()
        if not isinstance(answers, list) or len(answers) != len(chunk):
            raise ValueError(f"expected {len(chunk)} answers from Postmark's batch call")
        return [message_result(m, a) for m, a in zip(chunk, answers, strict=True)]


def message_result(message: OutgoingMessage, answer: Mapping[str, Any]) -> SendResult:
    """One message's answer: ``{"ErrorCode": 0, "Message": "OK", "MessageID": ..., "To": ...}``
    when it was taken, else its ErrorCode and Message."""
    code = int(answer["ErrorCode"])
    text = str(answer.get("Message", ""))
    if code == 0:
        message_id = str(answer.get("MessageID") or "") or None
        return SendResult(message.delivery_id, Outcome.accepted, text, message_id)
    detail = f"Postmark ErrorCode {code}: {text}"
    return SendResult(message.delivery_id, outcome_of_error_code(code), detail)


def request_result(chunk: Sequence[OutgoingMessage], response: httpx.Response) -> list[SendResult]:
    """A whole call refused. A 422 names why in its ErrorCode, which decides (maintenance or a
    rate limit is worth trying again); any other status decides by itself."""
    results = same_result(chunk, response)
    if response.status_code != 422:
        return results
    code = error_code_of(response)
    if code is None or outcome_of_error_code(code) == Outcome.permanent:
        return results
    return [dataclasses.replace(r, outcome=Outcome.transient) for r in results]


def outcome_of_error_code(code: int) -> Outcome:
    if code == 0:
        return Outcome.accepted
    return Outcome.transient if code in TRANSIENT_ERROR_CODES else Outcome.permanent


def error_code_of(response: httpx.Response) -> int | None:
    try:
        answer = response.json()
    except ValueError:
        return None
    code = answer.get("ErrorCode") if isinstance(answer, dict) else None
    return code if isinstance(code, int) else None


def mailbox(address: str, name: str = "") -> str:
    """``Name <address>`` as Postmark parses From: a name with punctuation must be quoted
    (Postmark answers "Illegal email address" otherwise)."""
    address, name = sanitize(address), sanitize(name)
    if not name:
        return address
    if _NEEDS_QUOTES.search(name):
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{name} <{address}>"


def from_provider(
    settings: Mapping[str, Any], secrets: Mapping[str, str], timeout: float
) -> PostmarkTransport:
    """The transport of a stored ``postmark`` provider (secret server_token; settings
    message_stream, base_url)."""
    return PostmarkTransport(
        server_token=secrets.get("server_token", ""),
        message_stream=str(settings.get("message_stream") or DEFAULT_STREAM),
        base_url=str(settings.get("base_url") or PRODUCTION_URL).rstrip("/"),
        timeout=timeout,
    )
