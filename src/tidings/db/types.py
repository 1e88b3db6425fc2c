"""Column types that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, String, Text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

from tidings.security.crypto import active_cipher

# A blind index (hex HMAC-SHA256) compared byte by byte: on PostgreSQL the "C" collation makes
# its unique index and every lookup plain memcmp instead of locale-aware comparison (the bulk
# import probes it once or more per row). SQLite compares bytes anyway.
BlindIndex = String(64).with_variant(String(64, collation="C"), "postgresql")


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """Read naive datetimes as UTC (seed 003 sends them); convert aware ones to UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes in and out.

    PostgreSQL stores ``timestamptz``. SQLite has no such type and drops the offset, so values are
    normalised to UTC before they are written and the UTC zone is put back when they are read.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = as_utc(value)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # raw SQL paths on SQLite
            value = datetime.fromisoformat(value)
        return as_utc(value)


class EncryptedText(TypeDecorator[str]):
    """A string encrypted at rest with the process's PII cipher (see security.crypto)."""

    impl = Text()
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return active_cipher().encrypt(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return active_cipher().decrypt(value)


class TagList(TypeDecorator[list[str]]):
    """A sorted set of short labels: ``text[]`` on PostgreSQL (GIN-indexable), JSON on SQLite.

    Kept in the row itself, so reading, filtering and importing tags needs no join and no
    foreign-key checks.
    """

    impl = JSON()
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(ARRAY(String(64)))
        return dialect.type_descriptor(JSON())

    def process_bind_param(self, value: list[str] | None, dialect: Dialect) -> list[str] | None:
        return None if value is None else sorted(set(value))

    def process_result_value(self, value: Any, dialect: Dialect) -> list[str]:
        return list(value or [])
