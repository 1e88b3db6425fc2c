"""A fake Azure Communication Services Email resource: ``POST /emails:send`` and
``GET /emails/operations/{id}`` as the REST reference (api-version 2023-03-31) describes them.

It checks what the service checks: the api-version, the HMAC-SHA256 signature (recomputed from
the access key it was given, over the method, path and query, x-ms-date, host and the body's
hash), the freshness of x-ms-date, the body's hash, and the body's required fields. A send
answers 202 with ``Operation-Location``; the operation is ``NotStarted``, then ``Running``,
then ``Succeeded`` (or ``Failed`` for a recipient told to fail) after ``polls_to_finish`` polls.
An Operation-Id it has seen starts nothing new: the answer names the operation it already has.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from tests.fakes.server import FakeProvider

API_VERSIONS = frozenset({"2023-03-31"})
DATE_SKEW = timedelta(minutes=15)  # as the HMAC scheme's reference allows for x-ms-date
MAX_RECIPIENTS = 50  # to + cc + bcc of one request
SIGNED = ("x-ms-date", "host", "x-ms-content-sha256")
TOP_FIELDS = {
    "senderAddress",
    "recipients",
    "content",
    "headers",
    "replyTo",
    "attachments",
    "userEngagementTrackingDisabled",
}
CONTENT_FIELDS = {"subject", "plainText", "html"}


@dataclass
class Operation:
    id: str
    recipient: str
    polls: int = 0
    error: tuple[str, str] | None = None  # (code, message) when it is to end Failed


def azure_error(status: int, code: str, message: str) -> JSONResponse:
    """An error as Communication Services answers one."""
    body = {"error": {"code": code, "message": message}}
    return JSONResponse(body, status_code=status, headers={"x-ms-error-code": code})


class FakeAzureEmail(FakeProvider):
    def __init__(self, access_key: str, *, polls_to_finish: int = 2, retry_after: str = "0"):
        super().__init__()
        self._key = base64.b64decode(access_key)
        self.polls_to_finish = polls_to_finish  # status polls before the terminal status
        self.retry_after = retry_after  # the Retry-After of 202s and non-terminal statuses
        self.operations: dict[str, Operation] = {}
        self.operation_ids: list[str] = []  # the Operation-Id of every valid send, repeats too
        self._failing: dict[str, tuple[str, str]] = {}

    def reset(self, *, polls_to_finish: int = 2, retry_after: str = "0") -> None:
        """Forget every send, fault and setting: one server can serve many tests."""
        super().reset()
        with self._lock:
            self.operations.clear()
            self.operation_ids.clear()
            self._failing.clear()
        self.polls_to_finish, self.retry_after = polls_to_finish, retry_after

    def fail_recipient(
        self,
        address: str,
        code: str = "EmailDropped",
        message: str = "Email was dropped after several attempts to deliver.",
    ) -> None:
        """Operations for ``address`` end ``Failed`` with this error instead of succeeding."""
        self._failing[address] = (code, message)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/emails:send", self.send, methods=["POST"]),
            Route("/emails/operations/{operation_id}", self.status, methods=["GET"]),
        ]

    # Routes -----------------------------------------------------------------------------------

    async def send(self, request: Request) -> Response:
        fault = await self.injected_fault()
        if fault is not None:
            return fault
        body = await request.body()
        refused = self.refusal(request, body)
        if refused is not None:
            return refused
        try:
            payload = json.loads(body)
        except ValueError:
            return azure_error(400, "BadRequest", "The request body is not valid JSON.")
        problem = schema_problem(payload)
        if problem:
            return azure_error(400, "BadRequest", problem)
        op_id = request.headers.get("Operation-Id") or str(uuid.uuid4())
        if not _is_uuid(op_id):
            return azure_error(400, "BadRequest", "Operation-Id must be a UUID.")
        return self.start(op_id, payload)

    async def status(self, request: Request) -> Response:
        fault = await self.injected_fault()
        if fault is not None:
            return fault
        refused = self.refusal(request, await request.body())
        if refused is not None:
            return refused
        with self._lock:
            operation = self.operations.get(request.path_params["operation_id"])
            if operation is None:
                return azure_error(404, "NotFound", "The operation was not found.")
            operation.polls += 1
            polls = operation.polls
        body: dict[str, Any] = {"id": operation.id, "status": "Running"}
        if polls < self.polls_to_finish:
            body["status"] = "NotStarted" if polls == 1 else "Running"
            return JSONResponse(body, headers={"Retry-After": self.retry_after})
        if operation.error is None:
            body["status"] = "Succeeded"
        else:
            code, message = operation.error
            body.update(status="Failed", error={"code": code, "message": message})
        return JSONResponse(body)

    # What the service checks ------------------------------------------------------------------

    def start(self, op_id: str, payload: dict[str, Any]) -> Response:
        recipient = payload["recipients"]["to"][0]["address"]
        with self._lock:
            self.operation_ids.append(op_id)
            known = op_id in self.operations
            if not known:
                error = self._failing.get(recipient)
                self.operations[op_id] = Operation(op_id, recipient, error=error)
        if not known:
            self.record(recipient, op_id, payload)
        location = f"{self.url}/emails/operations/{op_id}?api-version=2023-03-31"
        headers = {"Operation-Location": location, "Retry-After": self.retry_after}
        return JSONResponse({"id": op_id, "status": "Running"}, 202, headers=headers)

    def refusal(self, request: Request, body: bytes) -> Response | None:
        """The 400 or 401 the service gives a request before reading what it asks."""
        version = request.query_params.get("api-version")
        if not version:
            return azure_error(400, "MissingApiVersionParameter", "api-version is required.")
        if version not in API_VERSIONS:
            return azure_error(400, "UnsupportedApiVersion", f"api-version {version} unknown.")
        problem = self.signature_problem(request, body)
        if problem:
            return azure_error(401, "Denied", f"Denied by the resource provider: {problem}.")
        return None

    def signature_problem(self, request: Request, body: bytes) -> str:
        headers = request.headers
        try:
            date = parsedate_to_datetime(headers.get("x-ms-date", ""))
        except (TypeError, ValueError):
            return "x-ms-date missing or not an RFC 1123 date"
        if date.tzinfo is None or abs(datetime.now(UTC) - date) > DATE_SKEW:
            return "x-ms-date is not within 15 minutes of now"
        content_hash = base64.b64encode(hashlib.sha256(body).digest()).decode()
        if headers.get("x-ms-content-sha256") != content_hash:
            return "x-ms-content-sha256 is not the hash of the body"
        scheme, _, fields = headers.get("Authorization", "").partition(" ")
        parts = dict(part.partition("=")[::2] for part in fields.split("&"))
        names = parts.get("SignedHeaders", "").split(";")
        if scheme != "HMAC-SHA256" or not set(SIGNED) <= set(names):
            return "Authorization is not HMAC-SHA256 over x-ms-date;host;x-ms-content-sha256"
        path_and_query = request.scope["raw_path"].decode()
        if request.scope["query_string"]:
            path_and_query += "?" + request.scope["query_string"].decode()
        values = ";".join(headers.get(name, "") for name in names)
        to_sign = f"{request.method}\n{path_and_query}\n{values}"
        expected = hmac.new(self._key, to_sign.encode(), hashlib.sha256).digest()
        try:
            given = base64.b64decode(parts.get("Signature", ""), validate=True)
        except (binascii.Error, ValueError):
            return "the signature is not base64"
        return "" if hmac.compare_digest(given, expected) else "the signature does not match"


def schema_problem(payload: Any) -> str:
    """What is wrong with an ``emails:send`` body, or "" when nothing is. The fake refuses
    unknown fields as well, where the service may ignore them: a misspelt ``plainText`` would
    otherwise lose a body without anyone noticing."""
    if not isinstance(payload, dict):
        return "The body must be a JSON object."
    if unknown := set(payload) - TOP_FIELDS:
        return f"Unknown fields: {sorted(unknown)}."
    if not isinstance(payload.get("senderAddress"), str) or not payload["senderAddress"]:
        return "senderAddress is required."
    problem = recipients_problem(payload.get("recipients"))
    if problem:
        return problem
    content = payload.get("content")
    if not isinstance(content, dict) or set(content) - CONTENT_FIELDS:
        return "content must hold only subject, plainText and html."
    if not isinstance(content.get("subject"), str):
        return "content.subject is required."
    if not any(isinstance(content.get(part), str) for part in ("plainText", "html")):
        return "content needs plainText or html."
    headers = payload.get("headers", {})
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        return "headers must map names to strings."
    if not all(_is_address(a) for a in payload.get("replyTo", [])):
        return "replyTo must be a list of {address}."
    if not isinstance(payload.get("userEngagementTrackingDisabled", False), bool):
        return "userEngagementTrackingDisabled must be a boolean."
    return ""


def recipients_problem(recipients: Any) -> str:
    if not isinstance(recipients, dict) or not recipients.get("to"):
        return "recipients.to is required."
    every = [a for kind in ("to", "cc", "bcc") for a in recipients.get(kind, [])]
    if not all(_is_address(a) for a in every):
        return "Every recipient must be {address, displayName?}."
    if len(every) > MAX_RECIPIENTS:
        return f"At most {MAX_RECIPIENTS} recipients per request."
    return ""


def _is_address(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("address"), str)
        and "@" in value["address"]
        and isinstance(value.get("displayName", ""), str)
    )


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True
