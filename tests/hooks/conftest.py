"""Fixtures of the outgoing webhook tests: a real HTTP receiver that checks Standard Webhooks
signatures as a user's endpoint would, and endpoints registered through the API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from tests.factories import post_created
from tests.fakes.server import FakeProvider
from tidings.db.types import utcnow
from tidings.runtime import Runtime
from tidings.tracking.webhooks.base import WebhookRejected
from tidings.tracking.webhooks.standard import verify_standard


class HookReceiver(FakeProvider):
    """A user's webhook endpoint: ``/hooks/{name}`` verifies the signature with
    ``secrets[name]`` at ``now`` (a test moving the sender's clock moves this one) and records
    what it accepted; injected faults answer before any check."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: dict[str, str] = {}
        self.now: datetime | None = None
        self.rejected: list[str] = []
        self.ids: list[str] = []  # the webhook-id of every request, faults included

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/hooks/{name}", self.receive, methods=["POST"]),
            Route("/moved", self.moved, methods=["POST"]),
            Route("/chatty", self.chatty, methods=["POST"]),
        ]

    def hook_url(self, name: str) -> str:
        return f"{self.url}/hooks/{name}"

    async def receive(self, request: Request) -> Response:
        self.ids.append(request.headers.get("webhook-id", ""))
        fault = await self.injected_fault()
        if fault is not None:
            return fault
        body = await request.body()
        name = request.path_params["name"]
        try:
            verify_standard(self.secrets.get(name, ""), request.headers, body, self.now or utcnow())
        except WebhookRejected as exc:
            self.rejected.append(str(exc))
            return JSONResponse({"error": str(exc)}, status_code=401)
        headers = {k: v for k, v in request.headers.items() if k.startswith("webhook-")}
        headers |= {k: request.headers[k] for k in ("content-type", "user-agent")}
        self.record(name, request.headers["webhook-id"], {"body": json.loads(body), **headers})
        return JSONResponse({"ok": True})

    async def moved(self, _: Request) -> Response:
        return RedirectResponse(self.hook_url("elsewhere"), status_code=307)

    async def chatty(self, _: Request) -> Response:
        return Response("x" * 5000 + "\x00", status_code=500)

    def received(self, name: str | None = None) -> list[dict[str, Any]]:
        return [a.payload for a in self.accepted if name is None or a.recipient == name]

    def reset(self) -> None:
        super().reset()
        self.secrets.clear()
        self.rejected.clear()
        self.ids.clear()
        self.now = None


@pytest.fixture(scope="session")
def receiver_server() -> Iterator[HookReceiver]:
    with HookReceiver() as server:
        yield server


@pytest.fixture
def receiver(receiver_server: HookReceiver) -> Iterator[HookReceiver]:
    receiver_server.reset()
    yield receiver_server
    receiver_server.reset()


@pytest.fixture
def private_ok(db: Runtime, monkeypatch: pytest.MonkeyPatch) -> Runtime:
    """The receiver listens on 127.0.0.1, which webhooks refuse unless allowed."""
    monkeypatch.setattr(db.settings, "webhook_allow_private", True)
    return db


async def register(
    client: httpx.AsyncClient,
    receiver: HookReceiver,
    name: str,
    event_types: list[str],
    **fields: Any,
) -> dict[str, Any]:
    """An endpoint at the receiver, whose secret the receiver then checks signatures with."""
    body = {"name": name, "url": receiver.hook_url(name), "event_types": event_types, **fields}
    created = await post_created(client, "/webhook-endpoints", body)
    receiver.secrets[name] = created["secret"]
    return created
