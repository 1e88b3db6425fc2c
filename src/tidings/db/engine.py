"""Engine and session factory for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from tidings.config import Settings, ensure_data_dir


@dataclass
class Database:
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    async def dispose(self) -> None:
        await self.engine.dispose()


def create_database(settings: Settings) -> Database:
    url = settings.resolved_database_url
    if settings.is_sqlite:
        engine = _create_sqlite_engine(url, settings.sqlite_busy_timeout_ms)
    else:
        engine = create_async_engine(
            url,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_pool_size,
            pool_pre_ping=True,
            hide_parameters=True,  # errors and logs never carry row values (PII)
        )
    return Database(engine=engine, sessions=async_sessionmaker(engine, expire_on_commit=False))


def _create_sqlite_engine(url: str, busy_timeout_ms: int) -> AsyncEngine:
    if url.startswith("sqlite+aiosqlite:///") and ":memory:" not in url:
        ensure_data_dir(Path(url.removeprefix("sqlite+aiosqlite:///")).parent)
    # One connection for the whole process: SQLite has a single writer, and funnelling the API, the
    # scheduler and the workers through one connection means none of them ever sees "database is
    # locked". Other sessions wait for the connection in the pool instead.
    engine = create_async_engine(
        url, pool_size=1, max_overflow=0, pool_timeout=60, hide_parameters=True
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.close()
        _ensure_math_functions(dbapi_connection)

    return engine


def _ensure_math_functions(dbapi_connection: Any) -> None:
    """exp() and power() (engagement scores decay in SQL): built into most SQLite builds since
    3.35, added here for one built without them."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("SELECT exp(0), power(2, 1)")
    except Exception:  # the SQLite library was compiled without its math functions
        dbapi_connection.create_function("exp", 1, math.exp, deterministic=True)
        dbapi_connection.create_function("power", 2, math.pow, deterministic=True)
    finally:
        cursor.close()
