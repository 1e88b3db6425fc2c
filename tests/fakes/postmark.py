"""A fake Postmark batch API: ``POST /email/batch`` with the checks Postmark documents (server
token, JSON both ways, at most 500 messages and 50 MB a call, each message's fields) and its
answers: whole-call errors as ``{"ErrorCode", "Message"}`` with 401 or 422, else 200 with one
answer per message in order, ``ErrorCode`` 0 for the accepted and 300 / 406 for the refused."""

from __future__ import annotations

import json
import re
import secrets
import threading
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from tests.fakes.server import FakeProvider

MAX_BATCH = 500
MAX_BYTES = 50 * 1024 * 1024
MAX_RECIPIENTS = 50  # To + Cc + Bcc of one message
_MAILBOX = re.compile(r"^(?:.*<)?([^<>@\s]+@[^<>@\s]+\.[^<>@\s]+)>?$")

NO_TOKEN = (
    "No Account or Server API tokens were supplied in the HTTP headers. Please add a header for "
    "either X-Postmark-Server-Token or X-Postmark-Account-Token."
)
BAD_TOKEN = (
    "The Server Token you provided in the X-Postmark-Server-Token request header was invalid. "
    "Please verify that you are using a valid token."
)
INACTIVE = (
    "You tried to send to recipient(s) that have been marked as inactive. Found inactive "
    "addresses: {0}. Inactive recipients are ones that have generated a hard bounce, a spam "
    "complaint, or a manual suppression."
)


def api_error(status: int, code: int, message: str) -> JSONResponse:
    return JSONResponse({"ErrorCode": code, "Message": message}, status_code=status)


class FakePostmark(FakeProvider):
    """``with FakePostmark(inactive={"gone@example.org"}) as fake:``; send with
    ``server_token=fake.server_token``, ``base_url=fake.url``. ``fake.batch_sizes`` lists the
    size of every batch answered 200."""

    def __init__(
        self,
        server_token: str = "00000000-fake-4000-8000-postmark0000",
        inactive: Iterable[str] = (),
    ) -> None:
        super().__init__()
        self.server_token = server_token
        self.inactive = {address.lower() for address in inactive}
        self.batch_sizes: list[int] = []
        self._postmark_lock = threading.Lock()

    def routes(self) -> list[BaseRoute]:
        return [Route("/email/batch", self.email_batch, methods=["POST"])]

    async def email_batch(self, request: Request) -> Response:
        fault = await self.injected_fault()
        if fault is not None:
            return fault
        refusal = self._unauthorized(request) or self._not_json(request)
        if refusal is not None:
            return refusal
        raw = await request.body()
        if len(raw) > MAX_BYTES:
            # Postmark documents the status and the limit, not an ErrorCode for it.
            return JSONResponse({"Message": "Payload Too Large: over 50 MB."}, status_code=413)
        try:
            messages = json.loads(raw)
        except ValueError:
            return api_error(422, 402, "Invalid JSON: the request body could not be parsed.")
        if not isinstance(messages, list):
            return api_error(422, 403, "Incompatible JSON: a batch is a JSON array of messages.")
        if len(messages) > MAX_BATCH:
            return api_error(422, 410, f"Too many batch messages: at most {MAX_BATCH} a call.")
        with self._postmark_lock:
            self.batch_sizes.append(len(messages))
        return JSONResponse([self._answer(message) for message in messages])

    def _unauthorized(self, request: Request) -> Response | None:
        token = request.headers.get("X-Postmark-Server-Token")
        if not token:
            return api_error(401, 10, NO_TOKEN)
        # Postmark documents the header's value as case insensitive.
        if not secrets.compare_digest(token.lower(), self.server_token.lower()):
            return api_error(401, 10, BAD_TOKEN)
        return None

    def _not_json(self, request: Request) -> Response | None:
        content_type = request.headers.get("Content-Type", "")
        accept = request.headers.get("Accept", "")
        if "application/json" in content_type and "application/json" in accept:
            return None
        message = "JSON required: set the Accept and Content-Type headers to application/json."
        return api_error(422, 409, message)

    def _answer(self, message: Any) -> dict[str, Any]:
        """One message's answer; an accepted message is recorded per recipient."""
        refusal = message_problem(message)
        if refusal is not None:
            return {"ErrorCode": 300, "Message": refusal}
        recipients = [address_of(mailbox) for mailbox in recipients_of(message)]
        inactive = [r for r in recipients if r.lower() in self.inactive]
        if inactive:
            return {"ErrorCode": 406, "Message": INACTIVE.format(", ".join(inactive))}
        message_id = str(uuid.uuid4())
        for recipient in recipients:
            self.record(recipient, message_id, message)
        return {
            "ErrorCode": 0,
            "Message": "OK",
            "MessageID": message_id,
            "SubmittedAt": datetime.now(UTC).isoformat(),
            "To": message["To"],
        }


# One message's fields ---------------------------------------------------------------------------


def message_problem(message: Any) -> str | None:
    """Why Postmark would refuse this message with ErrorCode 300, if it would."""
    if not isinstance(message, dict):
        return "Invalid email request: a message is a JSON object."
    for field in ("From", "To"):
        if not isinstance(message.get(field), str) or not message[field].strip():
            return f"Invalid email request: the '{field}' field is required."
    for field in ("Subject", "TextBody", "HtmlBody", "ReplyTo", "MessageStream", "Tag"):
        if field in message and not isinstance(message[field], str):
            return f"Invalid email request: '{field}' must be a string."
    if not message.get("TextBody") and not message.get("HtmlBody"):
        return "Invalid email request: Provide either email TextBody or HtmlBody or both."
    return address_problem(message) or headers_problem(message) or metadata_problem(message)


def address_problem(message: dict[str, Any]) -> str | None:
    if not _MAILBOX.match(message["From"].strip()):
        return f"Error parsing 'From': Illegal email address '{message['From']}'."
    recipients = recipients_of(message)
    if len(recipients) > MAX_RECIPIENTS:
        return f"Invalid email request: at most {MAX_RECIPIENTS} recipients per message."
    for recipient in recipients:
        if not _MAILBOX.match(recipient):
            return f"Error parsing 'To': Illegal email address '{recipient}'."
    return None


def headers_problem(message: dict[str, Any]) -> str | None:
    headers = message.get("Headers", [])
    good = isinstance(headers, list) and all(
        isinstance(h, dict) and isinstance(h.get("Name"), str) and isinstance(h.get("Value"), str)
        for h in headers
    )
    return None if good else "Invalid email request: Headers is a list of Name/Value objects."


def metadata_problem(message: dict[str, Any]) -> str | None:
    metadata = message.get("Metadata", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        return "Invalid email request: Metadata is an object of string values."
    # Postmark refuses the same key twice, even in another case ('a_key' and 'A_Key').
    if len({key.lower() for key in metadata}) != len(metadata):
        return "Invalid email request: Metadata keys must be unique, whatever their case."
    return None


def address_of(mailbox: str) -> str:
    """The address of ``Name <address>`` or of a bare address."""
    match = _MAILBOX.match(mailbox.strip())
    return match[1] if match else mailbox.strip()


def recipients_of(message: dict[str, Any]) -> list[str]:
    """To, Cc and Bcc: each a comma-separated list of addresses."""
    found = []
    for field in ("To", "Cc", "Bcc"):
        value = message.get(field)
        if isinstance(value, str):
            found += [part.strip() for part in value.split(",") if part.strip()]
    return found
