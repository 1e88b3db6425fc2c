"""`tidings campaigns ...` and `tidings scheduler`: the same services as the API."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from tidings.campaigns import service
from tidings.campaigns.models import Campaign, CampaignRun, CampaignStatus, RunStatus
from tidings.campaigns.scheduler import run_scheduler
from tidings.cli_support import console, run_in_runtime, run_until_signalled
from tidings.runtime import Runtime
from tidings.security.audit import CLI_ACTOR

campaigns_app = typer.Typer(help="Campaigns: list, show, send now, pause, resume.")
CampaignId = Annotated[int, typer.Argument(min=1, help="Campaign id.")]
WATCH_SECONDS = 0.5


def _when(value: object) -> str:
    return f"{value:%Y-%m-%d %H:%M}" if value is not None else "-"


@campaigns_app.command("list")
def list_campaigns(
    status: Annotated[CampaignStatus | None, typer.Option(help="Only this status.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    offset: Annotated[int, typer.Option(min=0)] = 0,
) -> None:
    """List campaigns with their status and next run."""

    async def work(runtime: Runtime) -> tuple[list[Campaign], int]:
        async with runtime.database.sessions() as session:
            return await service.list_campaigns(session, status=status, limit=limit, offset=offset)

    items, total = run_in_runtime(work)
    table = Table("id", "name", "channel", "status", "schedule", "next run (UTC)", "runs")
    for c in items:
        table.add_row(
            str(c.id), c.name, c.channel, c.status, c.recurrence, _when(c.next_run_at), str(c.runs)
        )
    console.print(table)
    console.print(f"{len(items)} of {total} campaigns")


@campaigns_app.command("show")
def show_campaign(campaign_id: CampaignId) -> None:
    """A campaign and its latest runs."""

    async def work(runtime: Runtime) -> tuple[Campaign, list[CampaignRun]]:
        async with runtime.database.sessions() as session:
            campaign = await service.get_campaign(session, campaign_id)
            runs, _ = await service.list_runs(session, campaign_id, limit=10, offset=0)
            return campaign, runs

    campaign, runs = run_in_runtime(work)
    console.print(f"[bold]{campaign.name}[/bold]  #{campaign.id}  {campaign.status}")
    console.print(f"subject: {campaign.subject}")
    console.print(f"schedule: {campaign.recurrence}; next run {_when(campaign.next_run_at)} UTC")
    console.print(f"audience: {campaign.audience}")
    table = Table("run", "slot (UTC)", "status", "deliveries", "queued", "sent", "failed", "ended")
    for run in runs:
        table.add_row(
            str(run.id),
            _when(run.scheduled_for),
            run.status,
            str(run.total),
            str(run.queued),
            str(run.sent),
            str(run.failed),
            _when(run.finished_at),
        )
    console.print(table)


@campaigns_app.command("send-now")
def send_now(
    campaign_id: CampaignId,
    watch: Annotated[
        bool, typer.Option("--watch", help="Show the run's progress live until it ends.")
    ] = False,
) -> None:
    """Fire a run now; the scheduler writes its deliveries within a second, and the workers of
    `tidings serve` or `tidings worker` send them."""

    async def work(runtime: Runtime) -> CampaignRun:
        async with runtime.database.sessions() as session:
            return await service.send_now(session, campaign_id, CLI_ACTOR)

    run = run_in_runtime(work)
    console.print(f"campaign {campaign_id}: run {run.id} started")
    if watch:
        with contextlib.suppress(KeyboardInterrupt):
            run_in_runtime(lambda runtime: _watch_run(runtime, run.id))


_ENDED = (RunStatus.done.value, RunStatus.cancelled.value)


async def _watch_run(runtime: Runtime, run_id: int) -> None:
    """A live progress bar of one run, from the counters the workers keep."""
    columns = (
        TextColumn("{task.description:>13}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("materializing", total=None, detail="")
        while True:
            async with runtime.database.sessions() as session:
                run = await session.get_one(CampaignRun, run_id)
            detail = f"sent {run.sent:,}  failed {run.failed:,}  suppressed {run.suppressed:,}"
            if run.rate_per_second:
                detail += f"  {run.rate_per_second:,.0f}/s"
            progress.update(
                task,
                description=run.status,
                total=run.total or None,
                completed=run.finished,
                detail=detail,
            )
            if run.status in _ENDED:
                return
            await asyncio.sleep(WATCH_SECONDS)


def _status_command(action: str, summary: str) -> None:
    def change(campaign_id: CampaignId) -> None:
        async def work(runtime: Runtime) -> Campaign:
            async with runtime.database.sessions() as session:
                return await service.change_status(session, campaign_id, action, CLI_ACTOR)

        campaign = run_in_runtime(work)
        console.print(f"campaign {campaign.id} is {campaign.status}")

    change.__doc__ = summary
    campaigns_app.command(action)(change)


_status_command("pause", "Pause: no new runs and no more deliveries claimed.")
_status_command("resume", "Resume a paused campaign where it stopped.")
_status_command("cancel", "Cancel for good.")


def scheduler() -> None:
    """Run only the scheduler loop (any number may run; they never fire a slot twice)."""
    console.print("scheduler running; Ctrl-C stops it")
    run_until_signalled(lambda runtime, stop: run_scheduler(runtime.database, stop))
