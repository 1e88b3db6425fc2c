"""Fixtures: every database test runs on a real SQLite file and on a real PostgreSQL database.

PostgreSQL comes from TIDINGS_TEST_DATABASE_URL; each run creates its own database and drops it.
With CI=true an unreachable PostgreSQL fails the run instead of skipping its half.
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from tidings.app import create_app
from tidings.config import Settings
from tidings.db.registry import all_metadata
from tidings.runtime import Runtime, open_runtime
from tidings.security.apikeys import create_api_key
from tidings.security.crypto import install_cipher
from tidings.security.models import Scope

DATABASE_KINDS = ["sqlite", "postgresql"]
DEFAULT_PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
TEST_HMAC_KEY = base64.urlsafe_b64encode(b"h" * 32).decode()
TEST_FERNET_KEY = base64.urlsafe_b64encode(b"f" * 32).decode()


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _asyncpg_dsn(url: str) -> str:
    """The server's maintenance database, where CREATE/DROP DATABASE run."""
    maintenance = make_url(url).set(drivername="postgresql", database="postgres")
    return maintenance.render_as_string(hide_password=False)


async def _create_pg_database(base: str, name: str) -> None:
    admin = await asyncpg.connect(_asyncpg_dsn(base), timeout=5)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()


async def _drop_pg_database(base: str, name: str) -> None:
    admin = await asyncpg.connect(_asyncpg_dsn(base), timeout=5)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@contextmanager
def fresh_database(kind: str, directory: Path) -> Iterator[str]:
    """A real SQLite file, or a fresh PostgreSQL database (dropped afterwards); yields its URL."""
    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{directory / 'tidings.db'}"
        return
    base = os.environ.get("TIDINGS_TEST_DATABASE_URL", DEFAULT_PG_URL)
    name = f"tidings_test_{secrets.token_hex(4)}"
    try:
        asyncio.run(_create_pg_database(base, name))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        message = f"PostgreSQL at {make_url(base).render_as_string()} is unreachable: {exc}"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_drop_pg_database(base, name))


@pytest.fixture(scope="session", params=DATABASE_KINDS)
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    with fresh_database(request.param, tmp_path_factory.mktemp(request.param)) as url:
        yield url


def make_settings(data_dir: Path, database_url: str) -> Settings:
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        hmac_key=TEST_HMAC_KEY,  # type: ignore[arg-type]
        encryption_keys=TEST_FERNET_KEY,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="session")
async def runtime(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Runtime]:
    opened = await open_runtime(make_settings(tmp_path_factory.mktemp("data"), database_url))
    yield opened
    await opened.close()


@pytest.fixture
async def db(runtime: Runtime) -> AsyncIterator[Runtime]:
    """The session's runtime, emptied after each test."""
    install_cipher(runtime.cipher)
    yield runtime
    install_cipher(runtime.cipher)
    tables = list(reversed(all_metadata().sorted_tables))
    async with runtime.database.engine.begin() as connection:
        if runtime.database.dialect == "postgresql":
            names = ", ".join(t.name for t in tables)
            await connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            for table in tables:
                await connection.execute(table.delete())


@pytest.fixture
async def session(db: Runtime) -> AsyncIterator[AsyncSession]:
    async with db.database.sessions() as opened:
        yield opened


@pytest.fixture
async def api_keys(db: Runtime) -> dict[Scope, str]:
    """One live key per scope, by scope."""
    keys = {}
    async with db.database.sessions() as s:
        for scope in Scope:
            keys[scope] = (await create_api_key(s, f"test {scope}", scope, "tests")).secret
    return keys


@pytest.fixture
async def anon_client(db: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """A client without credentials."""
    app = create_app(runtime=db)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://tidings.test") as c:
        yield c
    await app.state.tracker.sink.close()  # what the tracking endpoints buffered is written


@pytest.fixture
async def client(anon_client: httpx.AsyncClient, api_keys: dict[Scope, str]) -> httpx.AsyncClient:
    """A client authenticated with an admin key."""
    anon_client.headers["Authorization"] = f"Bearer {api_keys[Scope.admin]}"
    return anon_client


def tidings_environment(db: Runtime) -> dict[str, str]:
    """The variables that point a `tidings` command at the test database, data and keys."""
    return {
        "TIDINGS_DATABASE_URL": db.settings.resolved_database_url,
        "TIDINGS_DATA_DIR": str(db.settings.data_dir),
        "TIDINGS_HMAC_KEY": TEST_HMAC_KEY,
        "TIDINGS_ENCRYPTION_KEYS": TEST_FERNET_KEY,
    }


def subprocess_environment(db: Runtime, **extra: str) -> dict[str, str]:
    """This process's environment plus ``tidings_environment``, for a `tidings` subprocess."""
    return {**os.environ, **tidings_environment(db), **extra}


@pytest.fixture
def cli_env(db: Runtime, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    """Point the `tidings` CLI (run in-process) at the test database."""
    for name, value in tidings_environment(db).items():
        monkeypatch.setenv(name, value)
    yield db
    install_cipher(db.cipher)
