"""Shared pieces of the benchmarks: scratch PostgreSQL databases, timing, and result files.

Every benchmark works in databases it creates itself and drops afterwards, even when it fails.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

RESULTS_DIR = Path(__file__).parent / "results"
DEFAULT_SERVER = "postgres@127.0.0.1:5432"


def server_dsn(server: str, database: str) -> str:
    """A plain libpq/asyncpg DSN (for COPY, CREATE DATABASE and psql)."""
    return f"postgresql://{server}/{database}"


def tidings_url(server: str, database: str) -> str:
    """The SQLAlchemy URL tidings itself is configured with."""
    return f"postgresql+asyncpg://{server}/{database}"


@asynccontextmanager
async def scratch_database(server: str, purpose: str) -> AsyncIterator[str]:
    """Create an empty database named after the benchmark; drop it on the way out."""
    name = f"bench_{purpose}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = await asyncpg.connect(server_dsn(server, "postgres"))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield name
    finally:
        admin = await asyncpg.connect(server_dsn(server, "postgres"))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def server_settings(server: str) -> dict[str, str]:
    """The PostgreSQL settings that move these numbers, recorded next to them."""
    names = (
        "server_version",
        "shared_buffers",
        "work_mem",
        "max_parallel_workers_per_gather",
        "jit",
        "synchronous_commit",
    )
    connection = await asyncpg.connect(server_dsn(server, "postgres"))
    try:
        return {n: await connection.fetchval(f"SHOW {n}") for n in names}
    finally:
        await connection.close()


def machine() -> dict[str, Any]:
    return {
        "host": platform.node(),
        "revision": _git("rev-parse", "--short", "HEAD"),
        "uncommitted_src_changes": bool(_git("status", "--porcelain", "src")),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _git(*args: str) -> str:
    try:
        done = subprocess.run(
            ["git", *args], cwd=Path(__file__).parent, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return ""
    return done.stdout.strip()


def write_result(name: str, result: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return path


def stop_cleanly_on_sigterm() -> None:
    """Treat SIGTERM like Ctrl-C, so that scratch databases are dropped on the way out."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"
