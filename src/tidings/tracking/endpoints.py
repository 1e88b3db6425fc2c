"""The open pixel (``/t/o/{token}``) and click redirect (``/t/c/{token}``), answered in plain
ASGI before the application's machinery (see ``TidingsApp`` in ``tidings.app``).

They are the busiest URLs of the instance (every open of every message), so they skip FastAPI's
routing, middleware, dependency injection and request logging: a token is checked (an HMAC, no
database), the event is handed to the ``EventSink`` (written in bulk a moment later), and the
fixed answer goes out. A token that is not ours is a 404 and redirects nowhere: there is no open
redirect. A click reads its link's target from the database once, then from memory.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from starlette.types import Scope, Send

from tidings.db.engine import Database
from tidings.db.types import utcnow
from tidings.delivery.links import OPEN_LINK, MailLinks
from tidings.tracking.events import EventType, InboundEvent
from tidings.tracking.ingest import EventSink
from tidings.tracking.links import LinkRegistry
from tidings.tracking.machines import MachineDetector

# A transparent 1x1 GIF: header, screen of 1x1 with a two-colour table, a graphic control
# extension making colour 0 transparent, one image of 1x1, its LZW data, trailer. 43 bytes.
PIXEL = (
    b"GIF89a" + struct.pack("<HH", 1, 1) + bytes([0x80, 0, 0, 0, 0, 0, 255, 255, 255])
    + bytes([0x21, 0xF9, 4, 1, 0, 0, 0, 0])
    + b"\x2c" + struct.pack("<HHHH", 0, 0, 1, 1) + b"\x00"
    + bytes([2, 2, 0x44, 0x01, 0]) + b";"
)  # fmt: skip
NO_CACHE = [
    (b"cache-control", b"no-store, no-cache, must-revalidate, max-age=0"),
    (b"pragma", b"no-cache"),
    (b"expires", b"0"),
]
PIXEL_HEADERS = [
    (b"content-type", b"image/gif"),
    (b"content-length", str(len(PIXEL)).encode()),
    *NO_CACHE,
]
NOT_FOUND = b"not found"
NOT_FOUND_HEADERS = [
    (b"content-type", b"text/plain; charset=utf-8"),
    (b"content-length", str(len(NOT_FOUND)).encode()),
    *NO_CACHE,
]
BUSY_HEADERS = [(b"retry-after", b"5"), (b"content-length", b"0"), *NO_CACHE]


@dataclass
class Tracker:
    """What the tracking endpoints need, one per process."""

    links: MailLinks
    sink: EventSink
    database: Database
    machines: MachineDetector
    registry: LinkRegistry = field(default_factory=LinkRegistry)

    def record(self, event: InboundEvent) -> bool:
        self.sink.start()
        return self.sink.add(event)


TRACKING_PREFIX = "/t/"


async def answer_tracking(tracker: Tracker, scope: Scope, send: Send) -> bool:
    """Answer a pixel or click request; False for anything else (the application answers)."""
    path: str = scope["path"]
    if scope["method"] not in ("GET", "HEAD"):
        return False
    if path.startswith("/t/o/"):
        await _open(tracker, scope, send, path[5:])
    elif path.startswith("/t/c/"):
        await _click(tracker, scope, send, path[5:])
    else:
        return False
    return True


async def _open(tracker: Tracker, scope: Scope, send: Send, token: str) -> None:
    named = tracker.links.tracked(token)
    if named is None or named[1] != OPEN_LINK:
        await _answer(send, 404, NOT_FOUND_HEADERS, NOT_FOUND)
        return
    if not tracker.record(_event(tracker, scope, EventType.opened, named[0])):
        await _answer(send, 503, BUSY_HEADERS, b"")
        return
    await _answer(send, 200, PIXEL_HEADERS, PIXEL if scope["method"] == "GET" else b"")


async def _click(tracker: Tracker, scope: Scope, send: Send, token: str) -> None:
    named = tracker.links.tracked(token)
    if named is None or named[1] == OPEN_LINK:
        await _answer(send, 404, NOT_FOUND_HEADERS, NOT_FOUND)
        return
    delivery_id, link_id = named
    target = await tracker.registry.target(tracker.database, link_id)
    if target is None:
        await _answer(send, 404, NOT_FOUND_HEADERS, NOT_FOUND)
        return
    event = _event(tracker, scope, EventType.clicked, delivery_id, target, link_id)
    tracker.record(event)  # a full buffer must not break the link: the person still goes on
    headers = [(b"location", target.encode("utf-8")), (b"content-length", b"0"), *NO_CACHE]
    await _answer(send, 302, headers, b"")


def _event(
    tracker: Tracker,
    scope: Scope,
    kind: EventType,
    delivery_id: int,
    url: str | None = None,
    link_id: int | None = None,
) -> InboundEvent:
    agent = _header(scope, b"user-agent")
    client = scope.get("client")
    machine = scope["method"] == "HEAD" or tracker.machines.is_machine(
        agent, client[0] if client else None
    )
    return InboundEvent(
        type=kind,
        occurred_at=utcnow(),
        source="tracking",
        delivery_id=delivery_id,
        url=url,
        link_id=link_id,
        machine=machine,
        user_agent=agent,
    )


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


async def _answer(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
