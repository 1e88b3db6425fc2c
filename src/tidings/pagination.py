"""Pagination shared by every list endpoint: limit/offset plus an opaque keyset cursor."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Annotated, Generic, TypeVar

from fastapi import Path, Query
from pydantic import BaseModel

from tidings.db.ids import MAX_ID
from tidings.errors import RuleViolation

T = TypeVar("T")

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page (max 1000).")]
Offset = Annotated[int, Query(ge=0, le=10_000_000, description="Items to skip.")]
PathId = Annotated[int, Path(ge=1, le=MAX_ID, description="A numeric id.")]
Cursor = Annotated[
    str | None,
    Query(max_length=64, description="Opaque cursor from a previous page's next_cursor."),
]


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int
    next_cursor: str | None = None


def page(
    items: Sequence[object], total: int, limit: int, offset: int, next_cursor: str | None = None
) -> dict[str, object]:
    """A list response. The route's ``response_model=Page[...]`` validates and shapes the items
    (ORM objects included)."""
    return {
        "items": items,
        "total": total,
        "limit": limit,
        "offset": offset,
        "next_cursor": next_cursor,
    }


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"id:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """Return the id after which the next page starts; a malformed cursor is a clear 422."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        kind, _, value = text.partition(":")
        last_id = int(value)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise RuleViolation("cursor is malformed: pass next_cursor from a previous page") from None
    if kind != "id" or not 0 <= last_id <= MAX_ID:
        raise RuleViolation("cursor is malformed: pass next_cursor from a previous page")
    return last_id
