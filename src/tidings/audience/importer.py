"""Bulk import: prepared rows stream into a staging table, then a few set-based statements
apply each batch (suppressions, duplicates, upsert, tags, topics) in one transaction.

Each batch commits together with the job's progress (``lines_done``), so an import killed at any
moment resumes from the last committed line and never duplicates or loses a row.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import multiprocessing
import sqlite3
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import IO, Any, Literal

from sqlalchemy import BigInteger, TextClause, bindparam, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from tidings.audience.import_rows import (
    ChunkPlan,
    FileFormat,
    HeaderError,
    PreparedBatch,
    install_worker_cipher,
    prepare_chunk,
    prepare_chunk_in_worker,
    read_chunks,
)
from tidings.audience.models import ImportJob, ImportRejection, ImportStatus, Topic
from tidings.db.engine import Database
from tidings.db.ids import get_by_id
from tidings.db.types import UTCDateTime, utcnow
from tidings.errors import Conflict, NotFound, RuleViolation
from tidings.security.audit import record_audit
from tidings.security.crypto import PiiCipher

ImportMode = Literal["insert", "upsert"]
IMPORT_LOCK_BASE = 8_000_000_000  # advisory-lock key space of import jobs (migrations use another)
BATCH_SIZE = 20_000  # lines
# The first batches are smaller, so that the database has work while the workers still prepare
# the next ones (and a small file is not one batch prepared, then one batch written).
FIRST_BATCH_SIZES = (2_500, 5_000, 10_000)
SUPPRESSED = "the address is suppressed (unsubscribed, bounced, complained or erased)"
REPEATED = "the address appears earlier in this file"
STAGING_COLUMNS = (
    "line",
    "email_hash",
    "email",
    "email_domain",
    "name",
    "attributes",
    "tags",
    "timezone",
    "phone",
)


class ImportNotFound(NotFound):
    pass


@dataclass(frozen=True)
class ImportOptions:
    mode: ImportMode = "upsert"
    dedupe: bool = True
    topic_ids: tuple[int, ...] = ()
    file_format: FileFormat = "csv"

    def as_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "dedupe": self.dedupe,
            "topic_ids": list(self.topic_ids),
            "format": self.file_format,
        }


@dataclass
class Progress:
    lines: int = 0
    inserted: int = 0
    updated: int = 0
    skipped: int = 0
    failed: int = 0
    listeners: list[Callable[[Progress], None]] = field(default_factory=list)


def file_checksum(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


async def get_import(session: AsyncSession, import_id: int) -> ImportJob:
    job = await get_by_id(session, ImportJob, import_id)
    if job is None:
        raise ImportNotFound(f"no import with id {import_id}")
    return job


async def start_import(
    session: AsyncSession, source: str, checksum: str | None, options: ImportOptions, actor: str
) -> ImportJob:
    """A new import job, or the unfinished one for the same file and options (to resume)."""
    await _check_topics(session, options.topic_ids)
    if checksum is not None:
        unfinished = await session.scalars(
            select(ImportJob)
            .where(ImportJob.checksum == checksum, ImportJob.status != ImportStatus.done.value)
            .order_by(ImportJob.id.desc())
        )
        # The newest with the same options: another unfinished run of the file with other
        # options must not hide it (that restarted the import from its first line).
        for candidate in unfinished.all():
            if candidate.options == options.as_json():
                candidate.status = ImportStatus.running.value
                await session.commit()
                return candidate
    job = ImportJob(
        source=source[:255],
        checksum=checksum,
        options=options.as_json(),
        status=ImportStatus.running.value,
    )
    session.add(job)
    await session.flush()
    record_audit(session, actor, "import.start", "import", job.id, options.as_json())
    await session.commit()
    return job


async def _check_topics(session: AsyncSession, topic_ids: tuple[int, ...]) -> None:
    if not topic_ids:
        return
    found = set((await session.scalars(select(Topic.id).where(Topic.id.in_(topic_ids)))).all())
    missing = sorted(set(topic_ids) - found)
    if missing:
        raise RuleViolation(f"no topic with id {', '.join(map(str, missing))}")


async def run_import(
    database: Database,
    cipher: PiiCipher,
    job: ImportJob,
    stream: IO[bytes],
    options: ImportOptions,
    *,
    workers: int = 0,
    on_progress: Callable[[Progress], None] = lambda _p: None,
) -> ImportJob:
    """Import every row after the job's ``lines_done``; returns the finished job."""
    progress = Progress(
        lines=job.lines_done,
        inserted=job.inserted,
        updated=job.updated,
        skipped=job.skipped,
        failed=job.failed,
    )
    async with _only_runner(database, job.id):
        executor = _executor(workers, cipher)
        try:
            async for batch in _prepared(
                stream, job.lines_done, options, database.dialect, cipher, executor, workers
            ):
                async with database.engine.connect() as connection:
                    await _apply_batch(
                        connection, database.dialect, job.id, batch, options, progress
                    )
                on_progress(progress)
        except Exception:
            await _finish(database, job.id, ImportStatus.failed)
            raise
        finally:
            if executor is not None:
                executor.shutdown(cancel_futures=True)
        return await _finish(database, job.id, ImportStatus.done)


async def _finish(database: Database, job_id: int, status: ImportStatus) -> ImportJob:
    async with database.sessions() as session:
        job = await get_import(session, job_id)
        job.status = status.value
        if status == ImportStatus.done:
            job.finished_at = utcnow()
        await session.commit()
        return job


class ImportAlreadyRunning(Conflict):
    code = "import_running"


@asynccontextmanager
async def _only_runner(database: Database, job_id: int) -> AsyncIterator[None]:
    """On PostgreSQL, hold an advisory lock on the job while it runs, so two processes that
    resume the same file at once do not both import it. (SQLite is one process.)"""
    if database.dialect != "postgresql":
        yield
        return
    async with database.engine.connect() as connection:
        key = IMPORT_LOCK_BASE + job_id
        locked = await connection.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": key})
        await connection.commit()
        if not locked:
            raise ImportAlreadyRunning(f"import {job_id} of this file is running right now")
        try:
            yield
        finally:
            await connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            await connection.commit()


def _executor(workers: int, cipher: PiiCipher) -> Executor | None:
    if workers <= 0:
        return None
    # spawn, not fork: the parent runs an event loop and database threads.
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=install_worker_cipher,
        initargs=cipher.worker_args(),
    )


def _batch_sizes() -> Iterator[int]:
    for size in FIRST_BATCH_SIZES:
        yield min(size, BATCH_SIZE)
    yield from repeat(BATCH_SIZE)


async def _prepared(
    stream: IO[bytes],
    skip_through: int,
    options: ImportOptions,
    dialect: str,
    cipher: PiiCipher,
    executor: Executor | None,
    workers: int,
) -> AsyncIterator[PreparedBatch]:
    """Prepared batches in file order; with workers, several are prepared ahead in parallel."""
    try:
        header, chunks = read_chunks(stream, options.file_format, _batch_sizes())
    except HeaderError as exc:
        if skip_through < 1:
            yield PreparedBatch(rejected=[(1, str(exc))], last_line=1)
        return
    plan = ChunkPlan(
        file_format=options.file_format,
        header=header,
        dedupe=options.dedupe,
        upsert=options.mode == "upsert",
        skip_through=skip_through,
        for_copy=dialect == "postgresql",
    )
    todo = (chunk for chunk in chunks if chunk.last_line > skip_through)
    if executor is None:
        for chunk in todo:
            yield await asyncio.to_thread(prepare_chunk, chunk, plan, cipher)
        return
    pending: deque[Future[PreparedBatch]] = deque()
    for chunk in todo:
        pending.append(executor.submit(prepare_chunk_in_worker, chunk, plan))
        if len(pending) > workers + 1:
            yield await asyncio.wrap_future(pending.popleft())
    while pending:
        yield await asyncio.wrap_future(pending.popleft())


# --- applying one batch ------------------------------------------------------------------------


async def _apply_batch(
    connection: AsyncConnection,
    dialect: str,
    job_id: int,
    batch: PreparedBatch,
    options: ImportOptions,
    progress: Progress,
) -> None:
    sql = _Statements(dialect, options)
    params = {"job": job_id, "now": utcnow(), "topic_ids": list(options.topic_ids)}
    async with connection.begin():
        for statement in sql.begin:
            await connection.execute(_sql(statement))
        await _load_staging(connection, dialect, batch)
        rejected = list(batch.rejected)
        suppressed = await connection.execute(_sql(sql.drop_suppressed))
        rejected += [(line, SUPPRESSED) for (line,) in suppressed]
        written = await _write(connection, sql, params, options.dedupe)
        rejected += [(line, REPEATED) for line in written.repeated]
        if rejected:
            await connection.execute(
                insert(ImportRejection),
                [
                    {"import_id": job_id, "line": line, "reason": reason[:300]}
                    for line, reason in rejected
                ],
            )
        upsert = options.mode == "upsert"
        progress.inserted += written.inserted
        progress.updated += written.existing if upsert else 0
        progress.skipped += batch.collapsed + (0 if upsert else written.existing)
        progress.failed += len(rejected)
        progress.lines = batch.last_line
        await connection.execute(
            update(ImportJob)
            .where(ImportJob.id == job_id)
            .values(
                lines_done=progress.lines,
                inserted=progress.inserted,
                updated=progress.updated,
                skipped=progress.skipped,
                failed=progress.failed,
                updated_at=params["now"],
            )
        )


@dataclass(frozen=True)
class _Written:
    inserted: int
    existing: int  # rows that were already subscribers: updated (upsert) or skipped (insert)
    repeated: list[int]  # lines whose address an earlier batch of this import wrote


async def _write(
    connection: AsyncConnection, sql: _Statements, params: dict[str, Any], dedupe: bool
) -> _Written:
    """Write the staged rows into subscribers (and topics)."""
    if sql.write_and_count is not None:  # PostgreSQL: one statement does it all
        inserted, existing, repeated = (
            await connection.execute(_sql(sql.write_and_count), params)
        ).one()
        return _Written(inserted, existing, repeated or [])
    repeated = []
    if dedupe:
        repeated = [line for (line,) in await connection.execute(_sql(sql.drop_repeated), params)]
    existing, total = (await connection.execute(_sql(sql.count_existing))).one()
    await connection.execute(_sql(sql.write), params)
    if params["topic_ids"]:
        await connection.execute(_sql(sql.subscribe_topics), params)
    return _Written(total - existing, existing, repeated)


async def _load_staging(connection: AsyncConnection, dialect: str, batch: PreparedBatch) -> None:
    if not batch.staged:
        return
    if dialect == "postgresql":
        # COPY (the fastest way into PostgreSQL, in the same transaction as the rest) of the text
        # the worker made: this process does no per-row work.
        raw = await connection.get_raw_connection()
        await raw.driver_connection.copy_to_table(  # type: ignore[union-attr]
            "import_staging", source=_single(batch.copy_data), columns=STAGING_COLUMNS
        )
        return
    columns = ", ".join(STAGING_COLUMNS)
    values = ", ".join(f":{c}" for c in STAGING_COLUMNS)
    await connection.execute(
        text(f"INSERT INTO import_staging ({columns}) VALUES ({values})"),
        [{**row._asdict(), "tags": json.dumps(row.tags)} for row in batch.rows],
    )


async def _single(data: bytes) -> AsyncIterator[bytes]:
    yield data


def _sql(statement: str) -> TextClause:
    """A statement with typed parameters, so PostgreSQL is told their types (casts) and SQLite
    gets datetimes in the same text form as every other row."""
    types: dict[str, Any] = {"now": UTCDateTime(), "job": BigInteger()}
    binds = [bindparam(name, type_=t) for name, t in types.items() if f":{name}" in statement]
    if ":topic_ids" in statement:
        binds.append(bindparam("topic_ids", type_=BigInteger(), expanding=True))
    return text(statement).bindparams(*binds)


class _Statements:
    """The few statements of an import batch. Where the two databases differ (JSON functions,
    COPY, counting), the difference is spelled out here and nowhere else.

    Every row written records the import (``last_import_id``), so a later row of the same
    address is recognized as a repeat (dedupe) whichever batch it falls into. Staging rows find
    their subscriber through correlated subqueries on the unique email_hash index: one index
    probe per row, whatever the planner thinks of a table that grows by a million rows during the
    import (a hash join would scan all subscribers for every batch).
    """

    def __init__(self, dialect: str, options: ImportOptions) -> None:
        pg = dialect == "postgresql"
        self.begin = [
            f"""CREATE TEMP TABLE IF NOT EXISTS import_staging (
                line BIGINT NOT NULL, email_hash VARCHAR(64) {'COLLATE "C"' if pg else ""}
                NOT NULL, email TEXT NOT NULL, email_domain VARCHAR(255) NOT NULL,
                name VARCHAR(200) NOT NULL, attributes TEXT NOT NULL,
                tags {"VARCHAR(64)[]" if pg else "TEXT"} NOT NULL, timezone VARCHAR(64),
                phone TEXT)""",
            "TRUNCATE import_staging" if pg else "DELETE FROM import_staging",
        ]
        if pg:
            # A crash loses at most the last moments' batches, together with the progress
            # committed with them, so resuming redoes exactly those: the batch need not wait
            # for its WAL to reach the disk.
            self.begin.append("SET LOCAL synchronous_commit TO OFF")
        self.drop_suppressed = """
            DELETE FROM import_staging WHERE (
                SELECT 1 FROM suppressions s WHERE s.email_hash = import_staging.email_hash
            ) IS NOT NULL
            RETURNING line"""
        self.write = self._write(pg, options)
        # PostgreSQL writes and counts in one statement; SQLite counts with a probe per row
        # first, and finds the rows for the topics again after the write.
        self.write_and_count = self._write_and_count(options) if pg else None
        self.drop_repeated = """
            DELETE FROM import_staging WHERE (
                SELECT s.last_import_id FROM subscribers s
                WHERE s.email_hash = import_staging.email_hash
            ) = :job
            RETURNING line"""
        self.count_existing = """
            SELECT COALESCE(SUM(CASE WHEN (
                SELECT 1 FROM subscribers s WHERE s.email_hash = import_staging.email_hash
            ) IS NULL THEN 0 ELSE 1 END), 0), COUNT(*)
            FROM import_staging"""
        self.subscribe_topics = self._subscribe_topics("import_staging")

    @staticmethod
    def _write(pg: bool, options: ImportOptions) -> str:
        """Insert the staged rows; an address already there is updated (upsert: a given name
        replaces, attributes merge key by key, the file's keys winning, tags are added) or only
        marked as seen by this import (insert). Status is never touched, so nobody is
        resubscribed by an import; with dedupe, a row already written by this import is not
        written again."""
        if options.mode == "upsert":
            merged = (
                "subscribers.attributes || excluded.attributes" if pg else _SQLITE_SHALLOW_MERGE
            )
            changes = f"""
                name = CASE WHEN excluded.name <> '' THEN excluded.name ELSE subscribers.name END,
                attributes = {merged},
                tags = {_POSTGRES_TAG_UNION if pg else _SQLITE_TAG_UNION},
                timezone = COALESCE(excluded.timezone, subscribers.timezone),
                phone = COALESCE(excluded.phone, subscribers.phone),
                last_import_id = excluded.last_import_id,
                updated_at = excluded.updated_at"""
        else:
            changes = "last_import_id = excluded.last_import_id"
        distinct = "IS DISTINCT FROM" if pg else "IS NOT"
        unless_repeated = (
            f"WHERE subscribers.last_import_id {distinct} excluded.last_import_id"
            if options.dedupe
            else ""
        )
        return f"""
            INSERT INTO subscribers (email, email_hash, email_domain, name, attributes, tags,
                timezone, phone, status, engagement_score, last_import_id, created_at, updated_at)
            SELECT email, email_hash, email_domain, name,
                CAST(attributes AS {"JSONB" if pg else "TEXT"}), tags,
                timezone, phone, 'active', 0, :job, :now, :now
            FROM import_staging WHERE TRUE ORDER BY line
            ON CONFLICT (email_hash) DO UPDATE SET {changes} {unless_repeated}"""

    def _write_and_count(self, options: ImportOptions) -> str:
        """PostgreSQL: the write, its topic subscriptions and its counts in one statement. A row
        the write returns with ``xmax = 0`` was inserted (an updated row carries the lock of the
        update); a staged row it does not return at all was a repeat (dedupe)."""
        topics = (
            f", subscribed AS ({self._subscribe_topics('written')})" if options.topic_ids else ""
        )
        return f"""
            WITH written AS (
                {self.write}
                RETURNING id, status, email_hash, (xmax = 0) AS fresh
            ){topics}
            SELECT COUNT(*) FILTER (WHERE w.fresh), COUNT(*) FILTER (WHERE NOT w.fresh),
                ARRAY_AGG(st.line ORDER BY st.line) FILTER (WHERE w.id IS NULL)
            FROM import_staging st LEFT JOIN written w ON w.email_hash = st.email_hash"""

    @staticmethod
    def _subscribe_topics(rows: str) -> str:
        """Subscribe the active subscribers among ``rows`` (the staging table, or the written
        rows) to the import's topics; double opt-in topics wait for confirmation."""
        subscriber = (
            "JOIN subscribers s ON s.email_hash = st.email_hash" if rows == "import_staging" else ""
        )
        who = "s" if subscriber else "st"
        return f"""
            INSERT INTO topic_subscriptions (topic_id, subscriber_id, status, source,
                subscribed_at, created_at, updated_at)
            SELECT t.id, {who}.id,
                CASE WHEN t.optin = 'double' THEN 'pending' ELSE 'active' END,
                'import', :now, :now, :now
            FROM {rows} st {subscriber}
            JOIN topics t ON t.id IN :topic_ids
            WHERE {who}.status = 'active'
            ON CONFLICT (topic_id, subscriber_id) DO NOTHING"""


# SQLite has no shallow JSON merge (json_patch merges recursively and deletes on null), so the
# object is rebuilt from the old keys the file does not name plus the file's keys.
# Each value is copied as its JSON text (`doc -> fullkey`): json_each's `value` turns numbers into
# doubles (0.30000000000000004 became 0.3, 2**70 became 1.18059162071741e+21). The fallback is
# for keys `->` cannot address (a '"' in the key) and for SQLite before 3.38, which has no `->`.
_SQLITE_JSON_TEXT = """CASE WHEN type = 'text' THEN json_quote(value)
    WHEN type IN ('true', 'false', 'null') THEN type ELSE CAST(value AS TEXT) END"""


def _sqlite_json_text(document: str) -> str:
    if sqlite3.sqlite_version_info < (3, 38):
        return _SQLITE_JSON_TEXT
    return f"COALESCE({document} -> fullkey, {_SQLITE_JSON_TEXT})"


_SQLITE_SHALLOW_MERGE = f"""(
    SELECT json_group_object(key, json(value)) FROM (
        SELECT key, {_sqlite_json_text("subscribers.attributes")} AS value
        FROM json_each(subscribers.attributes)
        WHERE key NOT IN (SELECT key FROM json_each(excluded.attributes))
        UNION ALL
        SELECT key, {_sqlite_json_text("excluded.attributes")} AS value
        FROM json_each(excluded.attributes)))"""

_POSTGRES_SHALLOW_MERGE = "subscribers.attributes || excluded.attributes"
# Tags sorted by code point, as Python sorts them (TagList stores them so).
_POSTGRES_TAG_UNION = """CASE WHEN cardinality(excluded.tags) = 0 THEN subscribers.tags ELSE
    ARRAY(SELECT t FROM (SELECT DISTINCT unnest(subscribers.tags || excluded.tags) AS t) AS u
          ORDER BY t COLLATE "C") END"""
_SQLITE_TAG_UNION = """CASE WHEN excluded.tags = '[]' THEN subscribers.tags ELSE (
    SELECT json_group_array(value) FROM (
        SELECT value FROM json_each(subscribers.tags)
        UNION SELECT value FROM json_each(excluded.tags) ORDER BY value)) END"""


async def rejections_csv(
    sessions: async_sessionmaker[AsyncSession], import_id: int, page: int = 5000
) -> AsyncIterator[str]:
    """The import's rejected lines as CSV, streamed a page at a time."""
    yield "line,reason\r\n"  # the csv module's line ending, as in the rows below
    last_line = 0
    while True:
        async with sessions() as session:
            rows = (
                await session.execute(
                    select(ImportRejection.line, ImportRejection.reason)
                    .where(ImportRejection.import_id == import_id, ImportRejection.line > last_line)
                    .order_by(ImportRejection.line)
                    .limit(page)
                )
            ).all()
        buffer = io.StringIO()
        csv.writer(buffer).writerows(rows)
        yield buffer.getvalue()
        if len(rows) < page:
            return
        last_line = rows[-1][0]
