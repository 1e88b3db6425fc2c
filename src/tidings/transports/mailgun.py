"""The Mailgun transport: each message goes whole, as the RFC 5322 bytes we built (and signed),
to Mailgun's ``POST /v3/{domain}/messages.mime``, so our headers and DKIM signature arrive
exactly as made."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx

from tidings.transports.base import Outcome, OutgoingMessage, SendResult
from tidings.transports.http import HttpTransport, same_result

# Mailgun serves a domain only from the region it was created in; an EU domain is unknown
# (404 "Domain not found") to the US endpoint.
REGION_URLS = {"us": "https://api.mailgun.net", "eu": "https://api.eu.mailgun.net"}
# A user variable ("v:" option): Mailgun hands it back in every webhook event and in the events
# API as ``user-variables``, which is how a bounce or a complaint finds its delivery again.
# Mailgun also adds it to the delivered message as X-Mailgun-Variables, so the reader can see it:
# harmless, our Message-ID (<id.delivery@domain>) shows the same number.
DELIVERY_VARIABLE = "v:tidings_delivery_id"


class MailgunTransport(HttpTransport):
    """One ``messages.mime`` call per message, authenticated as user ``api`` with the API key.

    Why not batches: Mailgun's batch sending takes one body for up to 1000 recipients and
    personalizes it with ``recipient-variables``. Our bodies are rendered per recipient (their
    unsubscribe link, their name, their DKIM-signed bytes), so every message is its own call;
    ``concurrency`` calls run at once instead.
    """

    name = "mailgun"
    needs_parts = False  # it takes our MIME as it is
    chunk_size = 1

    def __init__(
        self,
        *,
        api_key: str,
        domain: str,
        base_url: str = REGION_URLS["us"],
        timeout: float = 30.0,
        concurrency: int = 8,
    ) -> None:
        if not domain.strip():
            raise ValueError("a Mailgun provider needs the sending domain (setting 'domain')")
        super().__init__(timeout=timeout, concurrency=concurrency, base_url=base_url)
        # On the client, not in each request: httpx adds the header when it sends, and the key
        # never shows in a request we build, log or describe.
        self.client.auth = httpx.BasicAuth("api", api_key)
        self._path = f"/v3/{quote(domain.strip(), safe='')}/messages.mime"

    def build_request(self, chunk: Sequence[OutgoingMessage]) -> httpx.Request:
        (message,) = chunk
        # ``to`` is the envelope: Mailgun delivers to it whatever the MIME's To header says.
        # ``message`` goes as a file part, as Mailgun's reference asks of the MIME string.
        fields = {"to": message.recipient, DELIVERY_VARIABLE: str(message.delivery_id)}
        files = {"message": ("message.mime", message.data, "message/rfc822")}
        return self.client.build_request("POST", self._path, data=fields, files=files)

    def parse_response(
        self, chunk: Sequence[OutgoingMessage], response: httpx.Response
    ) -> list[SendResult]:
        """A 200 is ``{"id": "<...>", "message": "Queued. Thank you."}``; anything else stands
        for the message as its status says (401 a bad key, 404 an unknown domain: permanent)."""
        if response.status_code != 200:
            return same_result(chunk, response)
        answer = response.json()
        if not isinstance(answer, dict):
            return same_result(chunk, response)
        (message,) = chunk
        detail = str(answer.get("message", ""))
        return [SendResult(message.delivery_id, Outcome.accepted, detail, mailgun_id(answer))]


def mailgun_id(answer: Mapping[str, Any]) -> str | None:
    """Mailgun's message id without its angle brackets, as its webhooks report it
    (``message.headers.message-id``), so that an event finds the delivery by it."""
    value = str(answer.get("id") or "").strip().strip("<>")
    return value or None


def base_url_of(settings: Mapping[str, Any]) -> str:
    """``base_url`` when set (a proxy, a test server), else the region's API host."""
    if settings.get("base_url"):
        return str(settings["base_url"]).rstrip("/")
    region = str(settings.get("region") or "us").lower()
    if region not in REGION_URLS:
        raise ValueError(f"unknown Mailgun region {region!r}; use one of {sorted(REGION_URLS)}")
    return REGION_URLS[region]


def from_provider(
    settings: Mapping[str, Any], secrets: Mapping[str, str], timeout: float
) -> MailgunTransport:
    """The transport of a stored ``mailgun`` provider (secret api_key; settings domain, region,
    base_url)."""
    if not secrets.get("api_key"):
        raise ValueError("a Mailgun provider needs its API key (secret 'api_key')")
    return MailgunTransport(
        api_key=secrets["api_key"],
        domain=str(settings.get("domain") or ""),
        base_url=base_url_of(settings),
        timeout=timeout,
    )
