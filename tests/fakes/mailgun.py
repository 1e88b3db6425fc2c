"""A fake of Mailgun's MIME sending API (``POST /v3/{domain}/messages.mime``) that checks what
Mailgun checks: basic auth as ``api`` with the key, a known domain, a multipart form with ``to``
and the ``message`` file, the 16 KB limit of the o:/h:/v:/t: options and the 25 MB message
limit; it answers in Mailgun's shapes and parses each accepted message with ``email``."""

from __future__ import annotations

import base64
import binascii
import email
import hmac
import itertools
import time
from collections.abc import Iterable
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.utils import getaddresses

from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from tests.fakes.server import FakeProvider, error

API_KEY = "key-0123456789abcdef-test"
DOMAIN = "mg.example.com"
MAX_MESSAGE_BYTES = 25 * 1024 * 1024  # "The maximum message size Mailgun supports is 25MB"
MAX_OPTIONS_BYTES = 16 * 1024  # "Send options (o:, h:, v:, t:) are limited to 16KB total"
OPTION_PREFIXES = ("o:", "h:", "v:", "t:")


@dataclass(frozen=True)
class MailgunReceived:
    """One accepted call: its ``to`` field, the message as sent and as parsed, its options."""

    to: str
    raw: bytes
    mime: EmailMessage
    variables: dict[str, str]  # the v: options, without the prefix


class FakeMailgun(FakeProvider):
    def __init__(
        self,
        api_key: str = API_KEY,
        domains: Iterable[str] = (DOMAIN,),
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.domains = frozenset(domains)
        self.max_message_bytes = max_message_bytes
        self._ids = itertools.count(1)

    def routes(self) -> list[BaseRoute]:
        return [Route("/v3/{domain}/messages.mime", self.send_mime, methods=["POST"])]

    def received(self) -> list[MailgunReceived]:
        return [a.payload for a in self.accepted]

    async def send_mime(self, request: Request) -> Response:
        fault = await self.injected_fault()
        if fault is not None:
            return fault
        if not self._authorized(request.headers.get("Authorization", "")):
            return PlainTextResponse("Forbidden", status_code=401)  # Mailgun's 401, not JSON
        domain = request.path_params["domain"]
        if domain not in self.domains:
            return error(404, f"Domain not found: {domain}")
        if not request.headers.get("Content-Type", "").startswith("multipart/form-data"):
            return error(400, "messages.mime takes multipart/form-data")
        form = await request.form()
        problem = _form_problem(form)
        if problem:
            return error(400, problem)
        upload = form["message"]
        assert isinstance(upload, UploadFile)
        raw = await upload.read()
        if len(raw) > self.max_message_bytes:
            return error(413, "Message size exceeds the limit")
        return self._queue(domain, str(form["to"]), raw, form)

    def _authorized(self, header: str) -> bool:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            credentials = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            return False
        return hmac.compare_digest(credentials, f"api:{self.api_key}".encode())

    def _queue(self, domain: str, to: str, raw: bytes, form: FormData) -> Response:
        mime = email.message_from_bytes(raw, _class=EmailMessage, policy=policy.default)
        if mime["From"] is None:
            return error(400, "'from' header is missing in the MIME message")
        variables = {k[2:]: str(v) for k, v in form.multi_items() if k.startswith("v:")}
        mailgun_id = f"<{time.strftime('%Y%m%d%H%M%S')}.{next(self._ids)}@{domain}>"
        self.record(to, mailgun_id, MailgunReceived(to, raw, mime, variables))
        return JSONResponse({"id": mailgun_id, "message": "Queued. Thank you."})


def _form_problem(form: FormData) -> str | None:
    """What Mailgun's 400 would say about the form, if anything."""
    to = form.get("to")
    if not isinstance(to, str) or not to.strip():
        return "'to' parameter is missing"
    addresses = getaddresses([to])
    if not addresses or any("@" not in address[1:-1] for _, address in addresses):
        return "to parameter is not a valid address. please check documentation"
    if not isinstance(form.get("message"), UploadFile):
        return "'message' parameter is missing or is not a file upload"
    options = sum(
        len(k) + len(str(v)) for k, v in form.multi_items() if k.startswith(OPTION_PREFIXES)
    )
    if options > MAX_OPTIONS_BYTES:
        return "Send options (parameters starting with o:, h:, v:, or t:) are limited to 16 kB"
    return None
