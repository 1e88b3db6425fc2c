"""Database layer: migrations match the models; datetimes are aware UTC on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Column, MetaData, Table, insert, select, text
from sqlalchemy.engine import Connection

from tidings.db.ids import BigId
from tidings.db.migrate import current_revision, include_object, upgrade_database
from tidings.db.registry import all_metadata
from tidings.db.types import UTCDateTime
from tidings.runtime import Runtime


def _schema_differences(connection: Connection) -> list[object]:
    context = MigrationContext.configure(
        connection,
        opts={"compare_type": True, "include_object": include_object(connection.dialect.name)},
    )
    return list(compare_metadata(context, all_metadata()))


async def test_migrations_produce_exactly_the_models_schema(db: Runtime) -> None:
    async with db.database.engine.connect() as connection:
        differences = await connection.run_sync(_schema_differences)
    assert differences == []


async def test_upgrading_twice_is_harmless_and_reaches_head(db: Runtime) -> None:
    await upgrade_database(db.database)
    await upgrade_database(db.database)
    assert await current_revision(db.database) is not None


async def test_sqlite_runs_in_wal_mode_with_foreign_keys(db: Runtime) -> None:
    if db.database.dialect != "sqlite":
        return
    async with db.database.engine.connect() as connection:
        assert (await connection.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
        assert (await connection.execute(text("PRAGMA foreign_keys"))).scalar() == 1


async def test_utc_datetime_round_trips_as_aware_utc(db: Runtime) -> None:
    table = Table(
        "utc_probe", MetaData(), Column("id", BigId, primary_key=True), Column("at", UTCDateTime())
    )
    berlin_summer = timezone(timedelta(hours=2))
    written = [
        datetime(2026, 7, 1, 12, 0, tzinfo=berlin_summer),  # aware, not UTC
        datetime(2026, 11, 28, 0, 0),  # naive: read as UTC (seed 003 sends these)
        datetime(2026, 1, 1, 23, 59, 59, 123456, tzinfo=UTC),
    ]
    async with db.database.engine.begin() as connection:
        await connection.run_sync(table.create)
        try:
            await connection.execute(insert(table), [{"at": value} for value in written])
            read = (
                (await connection.execute(select(table.c.at).order_by(table.c.id))).scalars().all()
            )
            ordered = (
                (await connection.execute(select(table.c.id).order_by(table.c.at))).scalars().all()
            )
        finally:
            await connection.run_sync(table.drop)
    assert read == [
        datetime(2026, 7, 1, 10, 0, tzinfo=UTC),
        datetime(2026, 11, 28, 0, 0, tzinfo=UTC),
        datetime(2026, 1, 1, 23, 59, 59, 123456, tzinfo=UTC),
    ]
    assert all(value.tzinfo is UTC for value in read)
    assert ordered == [3, 1, 2]  # comparisons in SQL follow the instant, on both databases
