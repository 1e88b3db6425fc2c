"""The `tidings` command line. Every command calls the same services as the API."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from tidings.audience.demo import DemoSummary, seed_demo
from tidings.audience.export import count_records, export_csv
from tidings.audience.import_rows import FileFormat, count_lines
from tidings.audience.importer import (
    ImportMode,
    ImportOptions,
    file_checksum,
    get_import,
    rejections_csv,
    run_import,
    start_import,
)
from tidings.audience.models import ImportJob, SubscriberStatus
from tidings.audience.subscribers import SubscriberFilter
from tidings.campaigns.cli import campaigns_app, scheduler
from tidings.cli_support import clean_errors, console, load_settings, run_in_runtime
from tidings.config import Settings
from tidings.db.migrate import current_revision, upgrade_database
from tidings.delivery.cli import dkim_app
from tidings.delivery.worker_cli import worker
from tidings.providers.cli import providers_app
from tidings.runtime import Runtime, open_runtime
from tidings.security import apikeys
from tidings.security.audit import CLI_ACTOR
from tidings.security.models import ApiKey, Scope
from tidings.security.rotation import count_stale_rows, rotate_encryption

app = typer.Typer(help="tidings: self-hosted newsletters and campaigns.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys and encryption keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(campaigns_app, name="campaigns")
app.add_typer(dkim_app, name="dkim")
app.add_typer(providers_app, name="providers")
app.command("scheduler")(scheduler)
app.command("worker")(worker)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port.")] = None,
) -> None:
    """Run the API, the scheduler and the delivery workers in one process."""
    import uvicorn

    from tidings.app import create_app

    with clean_errors():
        settings = load_settings(host=host, port=port)
        issued = asyncio.run(_prepare_first_start(settings))
    base = settings.base_url
    console.print(
        f"[bold]tidings[/bold] listening on {base}  (API docs: {base}/docs)", soft_wrap=True
    )
    if issued is not None:
        console.print(
            "First start: created an admin API key. It is shown only now; keep it safe:\n"
            f"  [bold]{issued.secret}[/bold]\n"
            f"  try: curl -H 'Authorization: Bearer {issued.secret}' {base}/subscribers/",
            soft_wrap=True,
        )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
    )


async def _prepare_first_start(settings: Settings) -> apikeys.IssuedKey | None:
    runtime = await open_runtime(settings)
    try:
        async with runtime.database.sessions() as session:
            if await apikeys.count_keys(session) > 0:
                return None
            return await apikeys.create_api_key(session, "bootstrap admin", Scope.admin, "system")
    finally:
        await runtime.close()


@app.command()
def migrate() -> None:
    """Apply pending database migrations (serve does this on start too)."""

    async def work(runtime: Runtime) -> str | None:
        await upgrade_database(runtime.database)
        return await current_revision(runtime.database)

    revision = run_in_runtime(work, migrate=False)
    console.print(f"database is at revision {revision}")


@app.command("import")
def import_file(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    mode: Annotated[
        ImportMode, typer.Option(help="upsert updates existing subscribers.")
    ] = "upsert",
    dedupe: Annotated[bool, typer.Option(help="Reject repeats of an address in the file.")] = True,
    topic: Annotated[
        list[int] | None, typer.Option(help="Subscribe everyone to this topic id.")
    ] = None,
    file_format: Annotated[
        FileFormat | None, typer.Option("--format", help="csv or jsonl.")
    ] = None,
    workers: Annotated[int, typer.Option(min=0, max=64, help="Row-preparing processes.")] = (
        os.cpu_count() or 1
    ),
) -> None:
    """Import subscribers from a CSV or JSON-lines file. Re-running the same file after an
    interruption resumes where it stopped."""
    detected: FileFormat = "jsonl" if path.suffix in (".jsonl", ".ndjson") else "csv"
    options = ImportOptions(
        mode=mode, dedupe=dedupe, topic_ids=tuple(topic or ()), file_format=file_format or detected
    )
    total_lines = count_lines(path)

    async def work(runtime: Runtime) -> ImportJob:
        async with runtime.database.sessions() as session:
            job = await start_import(
                session, str(path.name), file_checksum(path), options, CLI_ACTOR
            )
        if job.lines_done:
            console.print(f"resuming import {job.id} after line {job.lines_done}")
        columns = [
            TextColumn("importing"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("lines"),
            TimeRemainingColumn(),
        ]
        with Progress(*columns, console=console) as bar, path.open("rb") as stream:
            task = bar.add_task("import", total=total_lines, completed=job.lines_done)
            return await run_import(
                runtime.database,
                runtime.cipher,
                job,
                stream,
                options,
                workers=workers,
                on_progress=lambda p: bar.update(task, completed=p.lines),
            )

    job = run_in_runtime(work)
    console.print(
        f"import {job.id}: {job.inserted} inserted, {job.updated} updated, {job.skipped} skipped, "
        f"{job.failed} rejected"
    )
    if job.failed:
        console.print(
            f"rejected lines: tidings import-report {job.id}  (or GET /imports/{job.id}"
            "/rejections.csv)"
        )


@app.command("import-report")
def import_report(import_id: int) -> None:
    """Print the lines an import rejected, with the reasons, as CSV."""

    async def work(runtime: Runtime) -> None:
        async with runtime.database.sessions() as session:
            await get_import(session, import_id)
        async for chunk in rejections_csv(runtime.database.sessions, import_id):
            typer.echo(chunk, nl=False)

    run_in_runtime(work)


@app.command("export")
def export(
    output: Annotated[
        Path | None, typer.Option(help="File to write; default: standard output.")
    ] = None,
    status: Annotated[SubscriberStatus | None, typer.Option()] = None,
    tag: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Export subscribers as CSV, addresses decrypted (the CLI acts with admin rights)."""

    async def work(runtime: Runtime) -> int:
        filters = SubscriberFilter(status=status, tag=tag)
        written = 0
        target = output.open("w", newline="", encoding="utf-8") if output else None
        with target or contextlib.nullcontext(sys.stdout) as out:
            async for chunk in export_csv(runtime.database.sessions, filters, with_pii=True):
                out.write(chunk)
                written += count_records(chunk)
        return written

    records = run_in_runtime(work)
    if output:
        console.print(f"wrote {max(records - 1, 0)} subscribers to {output}")


@app.command()
def demo(
    subscribers: Annotated[int, typer.Option(min=1, max=1_000_000)] = 3000,
) -> None:
    """Fill the database with a realistic demo audience (idempotent)."""

    async def work(runtime: Runtime) -> DemoSummary:
        with console.status("creating demo data..."):
            return await seed_demo(runtime, CLI_ACTOR, subscribers)

    summary = run_in_runtime(work)
    console.print(
        f"demo audience: {summary.subscribers} subscribers, {summary.topics} topics, "
        f"{summary.promotions} promotions, {summary.segments} segments"
    )


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="What the key is for.")],
    scope: Annotated[Scope, typer.Option(help="read, write or admin.")] = Scope.read,
) -> None:
    """Create an API key and print it once."""

    async def work(runtime: Runtime) -> apikeys.IssuedKey:
        async with runtime.database.sessions() as session:
            return await apikeys.create_api_key(session, name, scope, CLI_ACTOR)

    issued = run_in_runtime(work)
    console.print(f"created key {issued.key.id} ({issued.key.scope}); it is shown only now:")
    typer.echo(issued.secret)


@keys_app.command("list")
def keys_list() -> None:
    """List API keys (prefixes only; full keys are never stored)."""

    async def work(runtime: Runtime) -> list[ApiKey]:
        async with runtime.database.sessions() as session:
            return await apikeys.list_api_keys(session)

    table = Table("id", "name", "prefix", "scope", "created", "last used", "revoked")
    for key in run_in_runtime(work):
        table.add_row(
            str(key.id),
            key.name,
            key.prefix,
            key.scope,
            f"{key.created_at:%Y-%m-%d %H:%M}",
            f"{key.last_used_at:%Y-%m-%d %H:%M}" if key.last_used_at else "-",
            f"{key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "-",
        )
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(key: Annotated[str, typer.Argument(help="Key id or prefix.")]) -> None:
    """Revoke an API key; requests with it get 401 from now on."""

    async def work(runtime: Runtime) -> ApiKey:
        async with runtime.database.sessions() as session:
            return await apikeys.revoke_api_key(session, key, CLI_ACTOR)

    revoked = run_in_runtime(work)
    console.print(f"revoked key {revoked.id} ({revoked.prefix})")


@keys_app.command("rotate-encryption")
def keys_rotate_encryption(
    batch_size: Annotated[
        int, typer.Option(min=1, max=100_000, help="Rows per transaction.")
    ] = 500,
) -> None:
    """Re-encrypt all PII under the newest key (the first of TIDINGS_ENCRYPTION_KEYS). Resumable."""

    async def work(runtime: Runtime) -> int:
        async with runtime.database.sessions() as session:
            stale = await count_stale_rows(session, runtime.cipher)
        columns = [
            TextColumn("re-encrypting"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
        ]
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("rotate", total=stale)
            return await rotate_encryption(
                runtime.database.sessions,
                runtime.cipher,
                batch_size=batch_size,
                actor=CLI_ACTOR,
                on_progress=lambda n: progress.advance(task, n),
            )

    rewritten = run_in_runtime(work)
    console.print(f"re-encrypted {rewritten} rows; all PII is now under the newest key")


if __name__ == "__main__":
    app()
