"""The generic HTTP JSON transport (provider kind ``http``): one POST per message to any API that
takes JSON, its body made from a template the operator writes in that API's own shape.

The template is a JSON document in which a string that is exactly one placeholder (``"$subject"``)
becomes that value, as JSON: the document is parsed once and values are put into the parsed
structure, never pasted into text, so nothing a subject or a body holds can change the shape of
the request (no JSON injection).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeAlias

import httpx

from tidings.delivery.mime import MessageHeaders, sanitize
from tidings.transports.base import Outcome, OutgoingMessage, SendResult
from tidings.transports.http import HttpTransport, content_of, same_result

JsonValue: TypeAlias = "bool | int | float | str | list[JsonValue] | dict[str, JsonValue] | None"
Placeholder: TypeAlias = Callable[[OutgoingMessage], JsonValue]

DEFAULT_AUTH_HEADER = "Authorization"
DEFAULT_BODY_TEMPLATE = (
    '{"from": "$from", "to": "$to", "subject": "$subject", "html": "$html", "text": "$text",'
    ' "headers": "$headers"}'
)
# Keys of the JSON answer that may hold the provider's id of the message, first found wins.
ANSWER_ID_KEYS = ("id", "message_id")


def _headers(message: OutgoingMessage) -> MessageHeaders:
    return content_of(message).headers


def _raw_base64(message: OutgoingMessage) -> str:
    return base64.b64encode(message.data).decode("ascii")


def _reply_to(message: OutgoingMessage) -> str | None:
    reply_to = _headers(message).reply_to
    return sanitize(reply_to) if reply_to else None


# Header values are sanitized as the MIME builder does: the API will put them into headers, and a
# line break in a subject must not become a header of its own there either.
PLACEHOLDERS: dict[str, Placeholder] = {
    "from": lambda m: sanitize(_headers(m).from_address),
    "from_name": lambda m: sanitize(_headers(m).from_name),
    # The address the delivery is for (the envelope recipient, the To of our messages).
    "to": lambda m: m.recipient,
    "reply_to": _reply_to,
    "subject": lambda m: sanitize(_headers(m).subject),
    "message_id": lambda m: sanitize(_headers(m).message_id),
    "text": lambda m: content_of(m).text,
    "html": lambda m: content_of(m).html,  # null for a text-only message
    "headers": lambda m: dict(content_of(m).extra_headers()),
    "raw_base64": _raw_base64,  # the whole RFC 5322 message, DKIM signature included
    # A string: the metadata fields of most APIs (custom args, tags, variables) take only strings.
    "delivery_id": lambda m: str(m.delivery_id),
}

# What a message composed without its parts (only MIME bytes) still has.
WITHOUT_PARTS = frozenset({"to", "raw_base64", "delivery_id"})

_WHOLE_PLACEHOLDER = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
_KNOWN_INSIDE_TEXT = re.compile(r"\$(" + "|".join(sorted(PLACEHOLDERS, key=len)[::-1]) + r")\b")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an RFC 9110 token


def check_body_template(text: str) -> None:
    """ValueError, saying what is wrong, unless ``text`` is a usable body template."""
    parse_body_template(text)


def parse_body_template(text: str) -> JsonValue:
    """The template as a JSON structure: an object or an array whose placeholders are known."""
    try:
        template: JsonValue = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"body_template is not JSON: {exc}") from None
    if not isinstance(template, dict | list):
        raise ValueError(
            f"body_template must be a JSON object or array, not {type(template).__name__}"
        )
    for value in _strings(template):
        _check_string(value)
    return template


def _check_string(value: str) -> None:
    whole = _WHOLE_PLACEHOLDER.fullmatch(value)
    if whole and whole[1] not in PLACEHOLDERS:
        raise ValueError(
            f"unknown placeholder {value!r} in body_template; "
            f"allowed: {', '.join('$' + name for name in PLACEHOLDERS)}"
        )
    inside = None if whole else _KNOWN_INSIDE_TEXT.search(value)
    if inside:
        # Not interpolated (that is what would let a subject break the JSON): say so, rather
        # than send the literal text "$subject" to every reader.
        raise ValueError(
            f"placeholder ${inside[1]} inside the text {value!r}: a placeholder must be the "
            f'whole string, e.g. "{inside[0]}"'
        )


def _strings(node: JsonValue) -> Iterator[str]:
    """Every string value of the structure (object keys are names, never placeholders)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)
    elif isinstance(node, dict):
        for item in node.values():
            yield from _strings(item)


def placeholders_in(template: JsonValue) -> frozenset[str]:
    return frozenset(
        value[1:] for value in _strings(template) if value[:1] == "$" and value[1:] in PLACEHOLDERS
    )


def render(template: JsonValue, values: Mapping[str, JsonValue]) -> JsonValue:
    """The template with each placeholder string replaced by its value, structure kept."""
    if isinstance(template, str):
        return values[template[1:]] if template[:1] == "$" and template[1:] in values else template
    if isinstance(template, list):
        return [render(item, values) for item in template]
    if isinstance(template, dict):
        return {key: render(item, values) for key, item in template.items()}
    return template


class GenericHttpTransport(HttpTransport):
    """POSTs each message as the rendered template; the status answers (2xx accepted, 408, 425,
    429 and 5xx transient with Retry-After, other 4xx permanent)."""

    name = "http"
    chunk_size = 1  # the template describes one message

    def __init__(
        self,
        *,
        url: str,
        body_template: str = DEFAULT_BODY_TEMPLATE,
        auth_header: str = DEFAULT_AUTH_HEADER,
        auth_value: str | None = None,
        timeout: float = 30.0,
        concurrency: int = 8,
    ) -> None:
        # Everything checked before the client exists: a refused provider leaves nothing open.
        _check_url(url)
        if auth_value:
            _check_auth(auth_header, auth_value)
        self._template = parse_body_template(body_template)
        self._used = placeholders_in(self._template)
        self.needs_parts = bool(self._used - WITHOUT_PARTS)
        super().__init__(timeout=timeout, concurrency=concurrency)
        self._url = url
        if auth_value:
            self.client.headers[auth_header] = auth_value

    def build_request(self, chunk: Sequence[OutgoingMessage]) -> httpx.Request:
        (message,) = chunk
        # Only the values the template uses: a template of "$to" and "$raw_base64" alone works
        # for a message that has no parts.
        values = {name: PLACEHOLDERS[name](message) for name in self._used}
        body = render(self._template, values)
        return self.client.build_request("POST", self._url, json=body)

    def parse_response(
        self, chunk: Sequence[OutgoingMessage], response: httpx.Response
    ) -> list[SendResult]:
        results = same_result(chunk, response)
        if results[0].outcome != Outcome.accepted:
            return results
        provider_id = provider_id_of(response)
        return [replace(result, provider_message_id=provider_id) for result in results]


def provider_id_of(response: httpx.Response) -> str | None:
    """The message's id from a JSON answer's ``id`` or ``message_id``; None for other answers
    (an empty 202 is an acceptance all the same)."""
    try:
        answer = response.json()
    except ValueError:
        return None
    if not isinstance(answer, dict):
        return None
    for key in ANSWER_ID_KEYS:
        value = answer.get(key)
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
            return str(value)
    return None


def _check_url(url: str) -> None:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        raise ValueError("url is not a valid URL") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError("url must be an http:// or https:// URL with a host")


def _check_auth(header: str, value: str) -> None:
    """A header name that is a token and a value on one line (the value is never quoted: it is
    a secret)."""
    if not _HEADER_NAME.fullmatch(header):
        raise ValueError(f"auth_header {header!r} is not a valid HTTP header name")
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in value):
        raise ValueError("auth_value holds a control character (a line break?)")


def from_provider(
    settings: Mapping[str, Any], secrets: Mapping[str, str], timeout: float
) -> GenericHttpTransport:
    """The transport of a stored ``http`` provider (settings url, auth_header, body_template;
    secret auth_value)."""
    if not settings.get("url"):
        raise ValueError("an http provider needs the URL to POST to (setting 'url')")
    return GenericHttpTransport(
        url=str(settings["url"]),
        body_template=str(settings.get("body_template") or DEFAULT_BODY_TEMPLATE),
        auth_header=str(settings.get("auth_header") or DEFAULT_AUTH_HEADER),
        auth_value=secrets.get("auth_value"),
        timeout=timeout,
    )
