"""Apply the Alembic migrations shipped inside the package."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection

from tidings.db.engine import Database
from tidings.logs import get_logger

log = get_logger("tidings.db")

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Any constant will do: it only has to be the same in every tidings process.
MIGRATION_LOCK_ID = 7_262_011


def include_object(dialect: str) -> Callable[..., bool]:
    """Alembic filter: leave out what the models mark as belonging to other databases only."""

    def include(obj: Any, _name: Any, _kind: Any, _reflected: Any, _compare_to: Any) -> bool:
        dialects = getattr(obj, "info", {}).get("dialects")
        return dialects is None or dialect in dialects

    return include


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


async def upgrade_database(database: Database) -> None:
    """Bring the schema to the newest revision; safe when several processes start at once."""
    async with database.engine.begin() as connection:
        if database.dialect == "postgresql":
            # Processes starting together wait here instead of racing to create the same tables.
            await connection.execute(text(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_ID})"))
        before = await connection.run_sync(_revision)
        await connection.run_sync(_upgrade)
        after = await connection.run_sync(_revision)
    if before != after:
        log.info("database.migrated", from_revision=before, to_revision=after)


def _revision(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


def _upgrade(connection: Connection) -> None:
    command.upgrade(alembic_config(connection), "head")


async def current_revision(database: Database) -> str | None:
    async with database.engine.connect() as connection:
        return await connection.run_sync(_revision)
