"""HTTP routes over the whole audience: import (seed 002), import reports, export, statistics."""

from __future__ import annotations

import hashlib
import tempfile
from typing import IO, Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from starlette.datastructures import UploadFile

from tidings.audience import importer
from tidings.audience.demo import seed_demo
from tidings.audience.export import export_csv
from tidings.audience.import_rows import FileFormat
from tidings.audience.importer import ImportMode, ImportOptions
from tidings.audience.models import ImportJob, ImportRejection, SubscriberStatus
from tidings.audience.schemas import AudienceStatsOut, DemoOut, ImportOut, ImportRejectionOut
from tidings.audience.stats import audience_stats
from tidings.audience.subscribers import SubscriberFilter
from tidings.config import ensure_data_dir
from tidings.db.ids import MAX_ID
from tidings.deps import HttpProblem, ReadActor, SessionDep, WriteActor, get_runtime
from tidings.pagination import DEFAULT_LIMIT, Limit, Offset, PathId
from tidings.security.models import Scope

router = APIRouter(tags=["import and export"])

JSONL_TYPES = (
    "application/x-ndjson",
    "application/jsonl",
    "application/json-lines",
    "application/x-jsonlines",
)
CHUNK = 1 << 20


def _import_out(job: ImportJob) -> ImportOut:
    out = ImportOut.model_validate(job)
    out.rejections_url = f"/imports/{job.id}/rejections.csv"
    return out


@router.post(
    "/subscribers/bulk-import",
    response_model=ImportOut,
    openapi_extra={
        "requestBody": {
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "application/x-ndjson": {"schema": {"type": "string"}},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"file": {"type": "string", "format": "binary"}},
                    }
                },
            }
        }
    },
)
async def bulk_import(
    request: Request,
    session: SessionDep,
    actor: WriteActor,
    mode: ImportMode = "upsert",
    dedupe: Annotated[bool, Query(description="Reject repeats of an address in the file.")] = True,
    topic_ids: Annotated[list[int], Query(max_length=100)] = [],  # noqa: B006
    file_format: Annotated[FileFormat | None, Query(alias="format")] = None,
) -> ImportOut:
    """Import CSV (header row; columns email, name, tags, timezone, phone, attributes, and any
    other column as an attribute) or JSON lines, sent as the body or as a form's `file`.
    Bad rows are reported by line and do not stop the good ones."""
    runtime = get_runtime(request)
    if any(not 0 < t <= MAX_ID for t in topic_ids):
        raise HttpProblem(422, "validation_error", "topic_ids must be positive ids")
    directory = runtime.settings.data_dir / "imports"
    ensure_data_dir(directory)
    with tempfile.TemporaryFile(dir=directory) as spool:
        source, checksum, detected = await _receive(
            request, spool, runtime.settings.import_max_bytes
        )
        options = ImportOptions(
            mode=mode,
            dedupe=dedupe,
            topic_ids=tuple(dict.fromkeys(topic_ids)),
            file_format=file_format or detected,
        )
        job = await importer.start_import(session, source, checksum, options, actor.label)
        spool.seek(0)
        job = await importer.run_import(
            runtime.database,
            runtime.cipher,
            job,
            spool,
            options,
            workers=runtime.settings.import_workers,
        )
    return _import_out(job)


async def _receive(request: Request, spool: IO[bytes], limit: int) -> tuple[str, str, FileFormat]:
    """Stream the upload to disk (never into memory whole); return name, sha256 and format."""
    digest, size = hashlib.sha256(), 0

    def write(chunk: bytes) -> None:
        nonlocal size
        size += len(chunk)
        if size > limit:
            raise HttpProblem(413, "too_large", f"the upload is larger than {limit} bytes")
        digest.update(chunk)
        spool.write(chunk)

    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        form = await request.form(max_files=1, max_fields=5)
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise HttpProblem(422, "validation_error", "the form needs a 'file' field")
        while chunk := await upload.read(CHUNK):
            write(chunk)
        name = upload.filename or "upload"
        detected: FileFormat = "jsonl" if name.endswith((".jsonl", ".ndjson")) else "csv"
        return name, digest.hexdigest(), detected
    if content_type not in ("text/csv", "text/plain", "application/csv", *JSONL_TYPES):
        raise HttpProblem(
            415,
            "unsupported_media_type",
            "send text/csv, application/x-ndjson, or a multipart form with a 'file' field",
        )
    async for chunk in request.stream():
        write(chunk)
    return "request body", digest.hexdigest(), "jsonl" if content_type in JSONL_TYPES else "csv"


@router.get("/imports", response_model=list[ImportOut])
async def list_imports(
    session: SessionDep, _: ReadActor, limit: Limit = DEFAULT_LIMIT, offset: Offset = 0
) -> list[ImportOut]:
    jobs = await session.scalars(
        select(ImportJob).order_by(ImportJob.id.desc()).limit(limit).offset(offset)
    )
    return [_import_out(job) for job in jobs]


@router.get("/imports/{import_id}", response_model=ImportOut)
async def get_import(import_id: PathId, session: SessionDep, _: ReadActor) -> ImportOut:
    return _import_out(await importer.get_import(session, import_id))


@router.get("/imports/{import_id}/rejections", response_model=list[ImportRejectionOut])
async def list_rejections(
    import_id: PathId,
    session: SessionDep,
    _: ReadActor,
    limit: Limit = DEFAULT_LIMIT,
    offset: Offset = 0,
) -> object:
    await importer.get_import(session, import_id)
    return (
        await session.scalars(
            select(ImportRejection)
            .where(ImportRejection.import_id == import_id)
            .order_by(ImportRejection.line)
            .limit(limit)
            .offset(offset)
        )
    ).all()


@router.get("/imports/{import_id}/rejections.csv", response_class=StreamingResponse)
async def download_rejections(
    import_id: PathId, request: Request, _: ReadActor
) -> StreamingResponse:
    """The rows an import did not take, as `line,reason` CSV."""
    # A short session of its own: the stream below needs the (on SQLite: only) connection.
    sessions = get_runtime(request).database.sessions
    async with sessions() as session:
        await importer.get_import(session, import_id)
    return StreamingResponse(
        importer.rejections_csv(sessions, import_id),
        media_type="text/csv",
        headers={
            "Content-Disposition": f'attachment; filename="import-{import_id}-rejections.csv"'
        },
    )


@router.post("/seed", response_model=DemoOut, tags=["audience"])
async def seed(
    request: Request,
    actor: WriteActor,
    subscribers: Annotated[int, Query(ge=1, le=5000, description="More: `tidings demo`.")] = 3000,
) -> DemoOut:
    """Seed 003: fill the audience with demo data (topics, tagged subscribers, promotions in
    every state, segments). Idempotent: a second call updates the same demo rows."""
    summary = await seed_demo(get_runtime(request), actor.label, subscribers)
    return DemoOut(**vars(summary))


@router.get("/subscribers/stats", response_model=AudienceStatsOut, tags=["subscribers"])
async def subscriber_stats(
    session: SessionDep,
    _: ReadActor,
    days: Annotated[int, Query(ge=1, le=366, description="Window for growth and churn.")] = 30,
) -> object:
    """Totals by status, growth per day, per topic and per tag, and churn over the window."""
    return await audience_stats(session, days)


@router.get("/subscribers/export", response_class=StreamingResponse, tags=["subscribers"])
async def export_subscribers(
    request: Request,
    actor: ReadActor,
    status: SubscriberStatus | None = None,
    tag: Annotated[str | None, Query(max_length=64)] = None,
    topic_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
) -> StreamingResponse:
    """CSV of subscribers. Addresses and phones only for admin keys; others get email_hash."""
    filters = SubscriberFilter(status=status, tag=tag, topic_id=topic_id)
    sessions = get_runtime(request).database.sessions
    body = export_csv(sessions, filters, with_pii=actor.scope == Scope.admin)
    return StreamingResponse(
        body,
        media_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="subscribers.csv"'},
    )
