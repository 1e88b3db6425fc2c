"""A fake SendGrid v3 Mail Send API: ``POST /v3/mail/send`` with the checks SendGrid documents
(Bearer API key, the body schema, 1000 personalizations and 1000 recipients per request, 30 MB,
reserved headers, text/plain before text/html) and its answers (202 + ``X-Message-Id``, errors
as ``{"errors": [{"message", "field", "help"}]}``, 429 with ``X-RateLimit-*`` headers)."""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections import deque
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from tests.fakes.server import FakeProvider

MAX_PERSONALIZATIONS = 1000
MAX_RECIPIENTS = 1000  # to + cc + bcc over all personalizations
MAX_BYTES = 30 * 1024 * 1024
RESERVED_HEADERS = frozenset(
    h.lower()
    for h in (
        "x-sg-id",
        "x-sg-eid",
        "received",
        "dkim-signature",
        "Content-Type",
        "Content-Transfer-Encoding",
        "To",
        "From",
        "Subject",
        "Reply-To",
        "CC",
        "BCC",
    )
)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

Problem = dict[str, Any]


def problem(message: str, field: str | None) -> Problem:
    return {"message": message, "field": field, "help": None}


def errors(status: int, *problems: Problem, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"errors": list(problems)}, status_code=status, headers=headers)


class FakeSendGrid(FakeProvider):
    """``with FakeSendGrid() as fake:``; send with ``api_key=fake.api_key``, ``base_url=fake.url``.
    ``fake.personalizations_per_request`` lists the size of every accepted request."""

    def __init__(self, api_key: str = "SG.fake-key.0123456789") -> None:
        super().__init__()
        self.api_key = api_key
        self.personalizations_per_request: list[int] = []
        self._rate_limits: deque[int] = deque()  # seconds until the reset, per 429 to answer
        self._sendgrid_lock = threading.Lock()

    def routes(self) -> list[BaseRoute]:
        return [Route("/v3/mail/send", self.mail_send, methods=["POST"])]

    def rate_limit_next(self, reset_in: int, times: int = 1) -> None:
        """Answer the next ``times`` requests as SendGrid's rate limiter does: 429 with
        ``X-RateLimit-Reset`` ``reset_in`` seconds ahead, and no Retry-After."""
        with self._sendgrid_lock:
            self._rate_limits.extend([reset_in] * times)

    async def mail_send(self, request: Request) -> Response:
        fault = await self.injected_fault()
        if fault is not None:
            return fault
        refusal = self._unauthorized(request) or self._rate_limited()
        if refusal is not None:
            return refusal
        raw = await request.body()
        if len(raw) > MAX_BYTES:
            return errors(413, problem("Payload Too Large", None))
        try:
            mail = json.loads(raw)
        except ValueError:
            return errors(400, problem("Bad Request", None))
        problems = mail_problems(mail)
        if problems:
            return errors(400, *problems)
        return self._accept(mail)

    def _unauthorized(self, request: Request) -> Response | None:
        header = request.headers.get("Authorization")
        if not header:
            return errors(401, problem("authorization required", None))
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(key, self.api_key):
            message = "The provided authorization grant is invalid, expired, or revoked"
            return errors(401, problem(message, None))
        return None

    def _rate_limited(self) -> Response | None:
        with self._sendgrid_lock:
            reset_in = self._rate_limits.popleft() if self._rate_limits else None
        if reset_in is None:
            return None
        headers = {
            "X-RateLimit-Limit": "600",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(int(time.time()) + reset_in),
        }
        return errors(429, problem("too many requests", None), headers=headers)

    def _accept(self, mail: dict[str, Any]) -> Response:
        message_id = secrets.token_urlsafe(16)
        shared = {k: v for k, v in mail.items() if k != "personalizations"}
        for p in mail["personalizations"]:
            # What this recipient gets: the personalization's keys over the message's.
            view = {
                **shared,
                "headers": {**mail.get("headers", {}), **p.get("headers", {})},
                "custom_args": {**mail.get("custom_args", {}), **p.get("custom_args", {})},
                "subject": p.get("subject", mail.get("subject")),
            }
            for to in p["to"]:
                self.record(to["email"], message_id, view)
        with self._sendgrid_lock:
            self.personalizations_per_request.append(len(mail["personalizations"]))
        return Response(status_code=202, headers={"X-Message-Id": message_id})


# The body schema --------------------------------------------------------------------------------


def mail_problems(mail: Any) -> list[Problem]:
    """Every problem SendGrid would report for this body (empty: it is valid)."""
    if not isinstance(mail, dict):
        return [problem("Invalid type. Expected: object", None)]
    problems = personalizations_problems(mail.get("personalizations"))
    problems += email_object_problems(mail.get("from"), "from", required=True)
    problems += email_object_problems(mail.get("reply_to"), "reply_to", required=False)
    problems += subject_problems(mail)
    problems += content_problems(mail.get("content"))
    problems += string_map_problems(mail.get("headers"), "headers", headers=True)
    problems += string_map_problems(mail.get("custom_args"), "custom_args")
    return problems


def personalizations_problems(value: Any) -> list[Problem]:
    field = "personalizations"
    if not isinstance(value, list) or not value:
        return [problem("You must have at least one personalization.", field)]
    if len(value) > MAX_PERSONALIZATIONS:
        message = (
            f"The personalization block is limited to {MAX_PERSONALIZATIONS} personalizations "
            f"per API request. You have provided {len(value)} personalizations. Please consider "
            "splitting this into multiple requests and resending your request."
        )
        return [problem(message, field)]
    problems: list[Problem] = []
    recipients = 0
    for p in value:
        if not isinstance(p, dict):
            problems.append(problem("Invalid type. Expected: object", field))
            continue
        problems += one_personalization_problems(p)
        recipients += sum(len(p.get(k) or []) for k in ("to", "cc", "bcc"))
    if recipients > MAX_RECIPIENTS:
        message = "There is a limit of 1000 total recipients (to + cc + bcc) per request."
        problems.append(problem(message, field))
    return problems


def one_personalization_problems(p: dict[str, Any]) -> list[Problem]:
    to = p.get("to")
    if not isinstance(to, list) or not to:
        return [problem("The to array is required for all personalization objects.", "to")]
    problems: list[Problem] = []
    seen: set[str] = set()
    for key in ("to", "cc", "bcc"):
        for recipient in p.get(key) or []:
            problems += email_object_problems(recipient, f"personalizations.{key}", required=True)
            email = str(recipient.get("email", "")).lower() if isinstance(recipient, dict) else ""
            if email in seen:
                message = (
                    "Each unique email address in the personalizations array should only be "
                    f"included once. You have included {email} more than once."
                )
                problems.append(problem(message, f"personalizations.{key}"))
            seen.add(email)
    problems += string_map_problems(p.get("headers"), "personalizations.headers", headers=True)
    problems += string_map_problems(p.get("custom_args"), "personalizations.custom_args")
    return problems


def email_object_problems(value: Any, field: str, *, required: bool) -> list[Problem]:
    if value is None and not required:
        return []
    if not isinstance(value, dict) or not isinstance(value.get("email"), str):
        return [problem("The email object must have an email address.", field)]
    if not _EMAIL.match(value["email"]):
        message = "Does not contain a valid address."
        return [problem(message, f"{field}.email")]
    if "name" in value and not isinstance(value["name"], str):
        return [problem("Invalid type. Expected: string", f"{field}.name")]
    return []


def subject_problems(mail: dict[str, Any]) -> list[Problem]:
    subject = mail.get("subject")
    if isinstance(subject, str) and subject:
        return []
    personal = mail.get("personalizations")
    if isinstance(personal, list) and all(
        isinstance(p, dict) and isinstance(p.get("subject"), str) and p["subject"] for p in personal
    ):
        return []
    message = (
        "The subject is required. You can get around this requirement if you use a template "
        "with a subject defined or if every personalization has a subject defined."
    )
    return [problem(message, "subject")]


def content_problems(value: Any) -> list[Problem]:
    if not isinstance(value, list) or not value:
        message = "Unless a valid template_id is provided, the content parameter is required."
        return [problem(message, "content")]
    problems: list[Problem] = []
    for part in value:
        if not isinstance(part, dict) or not isinstance(part.get("type"), str) or not part["type"]:
            problems.append(problem("The content type must be a string.", "content.type"))
        elif not isinstance(part.get("value"), str) or not part["value"]:
            message = "The content value must be a string at least one character in length."
            problems.append(problem(message, "content.value"))
    types = [part.get("type") for part in value if isinstance(part, dict)]
    plain_first = "text/plain" not in types or types.index("text/plain") == 0
    html_next = "text/html" not in types or types.index("text/html") == int("text/plain" in types)
    if not (plain_first and html_next):
        message = (
            "If present, text/plain and text/html may only be provided in the order "
            "text/plain first, then text/html."
        )
        problems.append(problem(message, "content"))
    return problems


def string_map_problems(value: Any, field: str, *, headers: bool = False) -> list[Problem]:
    """``headers`` and ``custom_args``: objects of strings; headers not among the reserved."""
    if value is None:
        return []
    if not isinstance(value, dict):
        return [problem("Invalid type. Expected: object", field)]
    problems = [
        problem(f"Invalid type. Expected: string, given: {type(v).__name__}.", f"{field}.{k}")
        for k, v in value.items()
        if not isinstance(v, str)
    ]
    if headers:
        problems += [
            problem(f"The following header is reserved and cannot be used: {name}", field)
            for name in value
            if name.lower() in RESERVED_HEADERS
        ]
    return problems
