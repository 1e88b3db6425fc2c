"""Alembic environment: runs on a connection from tidings.db.migrate, or on the configured URL."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from alembic import context
from sqlalchemy.engine import Connection

from tidings.config import Settings
from tidings.db.migrate import include_object
from tidings.db.registry import all_metadata
from tidings.db.types import EncryptedText, TagList, UTCDateTime

target_metadata = all_metadata()


def _render_item(kind: str, obj: Any, _context: Any) -> str | Literal[False]:
    """Write our column types into revisions as the plain types they store, so old revisions
    never break when the Python types change."""
    if kind == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    if kind == "type" and isinstance(obj, EncryptedText):
        return "sa.Text()"
    if kind == "type" and isinstance(obj, TagList):
        return 'sa.JSON().with_variant(postgresql.ARRAY(sa.String(length=64)), "postgresql")'

    return False


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite needs batch ALTERs
        compare_type=True,
        render_item=_render_item,
        include_object=include_object(connection.dialect.name),
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_on_settings_url() -> None:
    from tidings.db.engine import create_database

    database = create_database(Settings())
    async with database.engine.connect() as connection:
        await connection.run_sync(_run)
        await connection.commit()
    await database.dispose()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:  # `alembic` command line, for developers writing new revisions
    asyncio.run(_run_on_settings_url())
