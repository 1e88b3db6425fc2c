"""A fake JSON mail API for the generic HTTP transport, configurable to stand for any provider:
where it listens, which header carries which credential, which fields the body must hold and
where the recipient is, what a success answers. It records every JSON body it accepted."""

from __future__ import annotations

import hmac
import itertools
import json
from collections.abc import Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from tests.fakes.server import FakeProvider, error

TOKEN = "Bearer tdg-test-0123456789"
Path = tuple[str | int, ...]  # keys and indexes into a JSON document: ("to", 0, "email")


class FakeHttpApi(FakeProvider):
    def __init__(
        self,
        *,
        path: str = "/send",
        auth_header: str = "Authorization",
        auth_value: str = TOKEN,
        required: Sequence[Path] = (("from",), ("to",), ("subject",)),
        recipient_at: Path = ("to",),
        status: int = 200,
        answer_id_key: str | None = "id",
    ) -> None:
        super().__init__()
        self.path = path
        self.auth_header = auth_header
        self.auth_value = auth_value
        self.required = required
        self.recipient_at = recipient_at
        self.status = status
        self.answer_id_key = answer_id_key  # None: a success answers with an empty body
        self._ids = itertools.count(1)

    @property
    def endpoint(self) -> str:
        return self.url + self.path

    def routes(self) -> list[BaseRoute]:
        return [Route(self.path, self.send, methods=["POST"])]

    def bodies(self) -> list[Any]:
        return [a.payload for a in self.accepted]

    async def send(self, request: Request) -> Response:
        fault = await self.injected_fault()
        if fault is not None:
            return fault
        given = request.headers.get(self.auth_header, "")
        if not hmac.compare_digest(given.encode(), self.auth_value.encode()):
            return error(401, "invalid credentials")
        if request.headers.get("Content-Type", "").split(";")[0] != "application/json":
            return error(415, "the body must be application/json")
        try:
            body = json.loads(await request.body())
        except ValueError:
            return error(400, "the body is not JSON")
        missing = [path for path in self.required if value_at(body, path) is None]
        if missing:
            return error(400, f"missing field {'.'.join(map(str, missing[0]))}")
        recipient = value_at(body, self.recipient_at)
        if not isinstance(recipient, str) or "@" not in recipient:
            return error(400, f"invalid recipient {recipient!r}")
        return self._queue(recipient, body)

    def _queue(self, recipient: str, body: Any) -> Response:
        message_id = f"msg-{next(self._ids)}"
        self.record(recipient, message_id, body)
        if self.answer_id_key is None:
            return Response(status_code=self.status)
        return JSONResponse({self.answer_id_key: message_id}, status_code=self.status)


def value_at(document: Any, path: Path) -> Any:
    """The value at ``path`` in a JSON document; None where there is none."""
    for step in path:
        try:
            document = document[step]
        except (KeyError, IndexError, TypeError):
            return None
    return document
