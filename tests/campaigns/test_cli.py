"""`tidings campaigns ...`: the same services as the API, as rich tables and one-line results."""

from __future__ import annotations

import asyncio
import threading

import pytest
from typer.testing import CliRunner

from tidings.campaigns.scheduler import scheduler_tick
from tidings.campaigns.schemas import CampaignCreate
from tidings.campaigns.service import create_campaign
from tidings.cli import app
from tidings.config import Settings
from tidings.db.engine import create_database
from tidings.runtime import Runtime

runner = CliRunner()


async def _add_campaign(settings: Settings) -> int:
    database = create_database(settings)
    try:
        async with database.sessions() as session:
            data = CampaignCreate(
                name="Weekly Tech News",
                schedule_time="2030-02-01T10:00:00",  # type: ignore[arg-type]
                frequency="weekly",  # type: ignore[arg-type]
                html="<p>x</p>",
            )
            return (await create_campaign(session, data, "test")).id
    finally:
        await database.dispose()


@pytest.fixture
def campaign_id(cli_env: Runtime, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setenv("COLUMNS", "200")
    return asyncio.run(_add_campaign(cli_env.settings))


def test_campaigns_are_listed_shown_paused_resumed_and_sent_from_the_cli(campaign_id: int) -> None:
    listed = runner.invoke(app, ["campaigns", "list"])
    assert listed.exit_code == 0, listed.output
    assert "Weekly Tech News" in listed.output and "scheduled" in listed.output
    assert "2030-02-01 10:00" in listed.output and "1 of 1 campaigns" in listed.output
    paused = runner.invoke(app, ["campaigns", "pause", str(campaign_id)])
    assert paused.exit_code == 0 and f"campaign {campaign_id} is paused" in paused.output
    resumed = runner.invoke(app, ["campaigns", "resume", str(campaign_id)])
    assert resumed.exit_code == 0 and "is scheduled" in resumed.output
    sent = runner.invoke(app, ["campaigns", "send-now", str(campaign_id)])
    assert sent.exit_code == 0 and "run 1 started" in sent.output
    shown = runner.invoke(app, ["campaigns", "show", str(campaign_id)])
    assert shown.exit_code == 0, shown.output
    assert "running" in shown.output and "every week" in shown.output
    assert "materializing" in shown.output


def test_an_unknown_campaign_is_one_red_line_and_exit_status_1(campaign_id: int) -> None:
    result = runner.invoke(app, ["campaigns", "pause", "4242"])
    assert result.exit_code == 1
    assert "no campaign with id 4242" in result.output
    assert "Traceback" not in result.output


async def _tick_later(settings: Settings) -> None:
    await asyncio.sleep(1.0)  # the watch is showing the run as materializing by now
    database = create_database(settings)
    try:
        await scheduler_tick(database)  # no subscribers: the run is materialized and done
    finally:
        await database.dispose()


def test_send_now_watch_follows_the_run_until_it_ends(campaign_id: int, cli_env: Runtime) -> None:
    ticker = threading.Thread(target=asyncio.run, args=(_tick_later(cli_env.settings),))
    ticker.start()
    try:
        watched = runner.invoke(app, ["campaigns", "send-now", str(campaign_id), "--watch"])
    finally:
        ticker.join()
    assert watched.exit_code == 0, watched.output
    assert "run 1 started" in watched.output and "done" in watched.output
    assert "sent 0" in watched.output
