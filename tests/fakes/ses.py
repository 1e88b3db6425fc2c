"""A fake of SES API v2's SendEmail for what moto does not do: SES's own error answers (an
``x-amzn-ErrorType`` header and a JSON ``message``), throttling with Retry-After, 5xx, slow
answers, unknown configuration sets and expired signatures.

It checks what SES checks: the SigV4 signature, recomputed with botocore (an oracle independent
of our signer), the credential scope, a signature date within 15 minutes, and the body's shape.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from tests.fakes.server import FakeProvider

AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request, SignedHeaders=(?P<signed>[a-z0-9;-]+), "
    r"Signature=(?P<signature>[0-9a-f]{64})"
)
MAX_SKEW = timedelta(minutes=15)
MAX_DESTINATIONS = 50  # SES's limit on recipients of one message


def ses_error(
    status: int, error_type: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """An error as SES answers it: the type in a header (with its service namespace)."""
    type_header = f"{error_type}:http://internal.amazon.com/coral/com.amazonaws.sesv2/"
    all_headers = {"x-amzn-ErrorType": type_header, **(headers or {})}
    return JSONResponse({"message": message}, status_code=status, headers=all_headers)


class FakeSes(FakeProvider):
    def __init__(
        self,
        access_key_id: str = "AKIDFAKESES",
        secret_access_key: str = "fake/ses+secret",
        region: str = "eu-west-1",
        configuration_sets: frozenset[str] = frozenset({"newsletters"}),
    ) -> None:
        super().__init__()
        self.credentials = Credentials(access_key_id, secret_access_key)
        self.region = region
        self.configuration_sets = configuration_sets
        self.signature_dates: list[str] = []  # X-Amz-Date of every request signed correctly

    def routes(self) -> list[BaseRoute]:
        return [Route("/v2/email/outbound-emails", self.send_email, methods=["POST"])]

    def reject_next(
        self,
        error_type: str,
        status: int = 400,
        *,
        retry_after: str | None = None,
        delay: float = 0.0,
        type_in_body: bool = False,
    ) -> None:
        """Answer the next request with SES's ``error_type``: in the header as SES does, or only
        as the body's ``code`` (``type_in_body``), as other AWS front ends do."""
        key = "code" if type_in_body else "__type"
        body = {key: error_type, "message": f"injected {error_type}"}
        self.fail_next(status, retry_after=retry_after, delay=delay, body=body)

    async def injected_fault(self) -> Response | None:
        response = await super().injected_fault()
        if response is None:
            return None
        body = json.loads(bytes(response.body))
        if "__type" not in body:
            return response
        extra = {k: v for k, v in response.headers.items() if k.lower() == "retry-after"}
        return ses_error(response.status_code, body["__type"], body["message"], extra)

    async def send_email(self, request: Request) -> Response:
        fault = await self.injected_fault()
        if fault is not None:
            return fault
        body = await request.body()
        refused = self.authentication_error(request, body)
        if refused is not None:
            return refused
        try:
            payload = json.loads(body)
            recipients, data = parse_send_email(payload)
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            return ses_error(400, "BadRequestException", f"invalid request: {exc}")
        configuration_set = payload.get("ConfigurationSetName")
        if configuration_set is not None and configuration_set not in self.configuration_sets:
            return ses_error(404, "NotFoundException", f"{configuration_set} does not exist")
        message_id = f"0100{uuid.uuid4().hex}-000000"
        for recipient in recipients:
            self.record(recipient, message_id, {**payload, "raw": data})
        return JSONResponse({"MessageId": message_id})

    def authentication_error(self, request: Request, body: bytes) -> Response | None:
        match = AUTHORIZATION.fullmatch(request.headers.get("authorization", ""))
        if match is None:
            return ses_error(403, "IncompleteSignatureException", "malformed Authorization")
        if match["key"] != self.credentials.access_key:
            return ses_error(403, "UnrecognizedClientException", "invalid security token")
        if (match["region"], match["service"]) != (self.region, "ses"):
            return ses_error(403, "InvalidSignatureException", "credential scope is wrong")
        stamp = request.headers.get("x-amz-date", "")
        try:
            signed_at = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        except ValueError:
            return ses_error(403, "IncompleteSignatureException", "X-Amz-Date is missing")
        if abs(datetime.now(UTC) - signed_at) > MAX_SKEW:
            return ses_error(403, "InvalidSignatureException", "Signature expired")
        if match["signature"] != self.expected_signature(request, body, match["signed"]):
            return ses_error(403, "InvalidSignatureException", "signature does not match")
        self.signature_dates.append(stamp)
        return None

    def expected_signature(self, request: Request, body: bytes, signed: str) -> str:
        names = signed.split(";")
        headers = {name: request.headers[name] for name in names}
        raw_path = request.scope["raw_path"].decode()
        url = f"http://{request.headers['host']}{raw_path}"
        aws = AWSRequest(method=request.method, url=url, data=body, headers=headers)
        aws.context["timestamp"] = request.headers["x-amz-date"]
        signer = SigV4Auth(self.credentials, "ses", self.region)
        canonical = signer.canonical_request(aws)
        return str(signer.signature(signer.string_to_sign(aws, canonical), aws))


def parse_send_email(payload: dict[str, Any]) -> tuple[list[str], bytes]:
    """The recipients and the raw MIME of a SendEmail body; raises on a malformed one."""
    if not isinstance(payload["FromEmailAddress"], str):
        raise TypeError("FromEmailAddress must be a string")
    recipients = payload["Destination"]["ToAddresses"]
    if not 1 <= len(recipients) <= MAX_DESTINATIONS:
        raise ValueError(f"between 1 and {MAX_DESTINATIONS} ToAddresses")
    data = base64.b64decode(payload["Content"]["Raw"]["Data"], validate=True)
    return [str(r) for r in recipients], data
