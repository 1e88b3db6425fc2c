"""The SendGrid transport: v3 Mail Send (``POST /v3/mail/send``). Messages whose parts are the
same (sender, subject, bodies) share one request, each of them a personalization of its own with
its recipient, its headers and its delivery id; every other message goes in a request alone."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import httpx

from tidings.delivery.mime import MessageContent, sanitize
from tidings.transports.base import OutgoingMessage, SendResult
from tidings.transports.http import HttpTransport, UnsupportedFeature, content_of, same_result

PRODUCTION_URL = "https://api.sendgrid.com"
SEND_PATH = "/v3/mail/send"
# SendGrid takes at most 1000 personalizations and 1000 recipients (to + cc + bcc) per request;
# each of our personalizations has exactly one recipient, so one number bounds both.
MAX_PERSONALIZATIONS = 1000
# A custom argument comes back in every Event Webhook event of the message (next to
# ``sg_message_id``), which is how a bounce or an open finds its delivery again.
DELIVERY_ARG = "tidings_delivery_id"


class SendGridTransport(HttpTransport):
    """Groups a batch by content and sends each group in requests of up to 1000 messages.

    Why groups: a v3 request has one ``content`` for all its personalizations, while our bodies
    are rendered per recipient (their unsubscribe link, their name). Only messages that came out
    byte-identical can share a request; the per-recipient headers (Message-ID, List-Unsubscribe)
    still travel in each personalization's ``headers``, which SendGrid allows.
    """

    name = "sendgrid"
    chunk_size = MAX_PERSONALIZATIONS

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str = PRODUCTION_URL,
        timeout: float = 30.0,
        concurrency: int = 8,
    ) -> None:
        if not api_key:
            raise ValueError("a SendGrid provider needs its API key (secret 'api_key')")
        super().__init__(timeout=timeout, concurrency=concurrency, base_url=base_url)
        # On the client, so that it is never part of anything we build a detail or a log from.
        self.client.headers["Authorization"] = f"Bearer {api_key}"

    def requests_of(self, batch: Sequence[OutgoingMessage]) -> list[list[int]]:
        """Requests follow content groups (see ``content_groups``), not the batch's order."""
        return content_groups(batch, self.chunk_size)

    def build_request(self, chunk: Sequence[OutgoingMessage]) -> httpx.Request:
        """Every message of the chunk has the same parts (``content_groups`` made it so): the
        first one gives the shared fields."""
        shared = content_of(chunk[0])
        body: dict[str, Any] = {
            "personalizations": [personalization(message) for message in chunk],
            "from": sendgrid_address(shared.headers.from_address, shared.headers.from_name),
            "subject": sanitize(shared.headers.subject),
            "content": content_parts(shared),
        }
        if shared.headers.reply_to:
            body["reply_to"] = sendgrid_address(shared.headers.reply_to)
        return self.client.build_request("POST", SEND_PATH, json=body)

    def parse_response(
        self, chunk: Sequence[OutgoingMessage], response: httpx.Response
    ) -> list[SendResult]:
        """A request stands or falls whole. 202 carries ``X-Message-Id``, the same for every
        personalization of the request: SendGrid's events extend it per recipient
        (``sg_message_id`` = X-Message-Id + ".filter..."), so it is a prefix to match events
        by, and ``tidings_delivery_id`` tells the recipients apart."""
        results = same_result(chunk, response)
        if response.status_code == 202:
            message_id = response.headers.get("X-Message-Id") or None
            return [dataclasses.replace(r, provider_message_id=message_id) for r in results]
        if response.status_code == 429 and results and results[0].retry_after is None:
            wait = rate_limit_reset_seconds(response)
            return [dataclasses.replace(r, retry_after=wait) for r in results]
        return results


def content_groups(batch: Sequence[OutgoingMessage], size: int) -> list[list[int]]:
    """The batch as requests: positions of messages with the same parts, ``size`` at most."""
    groups: dict[Hashable, list[int]] = {}
    for index, message in enumerate(batch):
        groups.setdefault(content_key(message, index), []).append(index)
    return [
        positions[start : start + size]
        for positions in groups.values()
        for start in range(0, len(positions), size)
    ]


def content_key(message: OutgoingMessage, index: int) -> Hashable:
    """What a request shares; a message that must go alone gets a key of its own. Alone: a
    message without parts (it fails by itself), and a non-ASCII recipient, which SendGrid may
    refuse with a 400 that would otherwise fail the whole group with it."""
    content = message.content
    if content is None or not message.recipient.isascii():
        return ("alone", index)
    h = content.headers
    return (h.from_address, h.from_name, h.subject, h.reply_to, content.text, content.html)


def personalization(message: OutgoingMessage) -> dict[str, Any]:
    """One recipient: the envelope recipient as ``to`` (SendGrid delivers to it), the
    per-recipient headers, and our delivery id as a custom argument (a string, as SendGrid
    requires of every ``custom_args`` value)."""
    content = content_of(message)
    return {
        "to": [{"email": message.recipient}],
        # None of these is among SendGrid's reserved headers (x-sg-id, x-sg-eid, received,
        # dkim-signature, Content-Type, Content-Transfer-Encoding, To, From, Subject, Reply-To,
        # CC, BCC): Reply-To goes as ``reply_to`` instead.
        "headers": content.extra_headers(),
        "custom_args": {DELIVERY_ARG: str(message.delivery_id)},
    }


def content_parts(content: MessageContent) -> list[dict[str, str]]:
    """text/plain first, then text/html: SendGrid refuses them in any other order, and refuses
    an empty value, so an empty part is left out."""
    parts = []
    if content.text:
        parts.append({"type": "text/plain", "value": content.text})
    if content.html:
        parts.append({"type": "text/html", "value": content.html})
    if not parts:
        raise UnsupportedFeature("SendGrid refuses a message without a body (no text, no HTML)")
    return parts


def sendgrid_address(email: str, name: str = "") -> dict[str, str]:
    """An email object: ``{"email": ..., "name": ...}``, the name only when there is one."""
    address = {"email": sanitize(email)}
    if sanitize(name):
        address["name"] = sanitize(name)
    return address


def rate_limit_reset_seconds(response: httpx.Response, now: float | None = None) -> float | None:
    """Seconds until ``X-RateLimit-Reset`` (a Unix time), which is how SendGrid's 429 says
    when to come back; it documents no ``Retry-After``."""
    value = response.headers.get("X-RateLimit-Reset", "").strip()
    if not value.isdigit():
        return None
    return max(0.0, int(value) - (time.time() if now is None else now))


def from_provider(
    settings: Mapping[str, Any], secrets: Mapping[str, str], timeout: float
) -> SendGridTransport:
    """The transport of a stored ``sendgrid`` provider (secret api_key; setting base_url, e.g.
    https://api.eu.sendgrid.com for an EU subuser, or a test server)."""
    base_url = str(settings.get("base_url") or PRODUCTION_URL).rstrip("/")
    return SendGridTransport(api_key=secrets.get("api_key", ""), base_url=base_url, timeout=timeout)
