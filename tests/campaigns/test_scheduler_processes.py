"""The scheduler as real `tidings scheduler` processes: several replicas never fire a slot twice,
and a scheduler killed while materializing a run leaves, after a restart, exactly one delivery
per recipient."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from datetime import timedelta

import pytest
from sqlalchemy import bindparam, func, insert, select, text

from tests.conftest import TEST_FERNET_KEY, subprocess_environment
from tests.live_server import TIDINGS
from tidings.campaigns.models import Campaign, CampaignRun, Delivery
from tidings.db.types import TagList, UTCDateTime, utcnow
from tidings.runtime import Runtime
from tidings.security.crypto import key_id

AUDIENCE = {"topic_ids": [], "segment_id": None, "promotion_id": None, "tags": []}


def start_scheduler(db: Runtime) -> subprocess.Popen[bytes]:
    env = subprocess_environment(db)
    return subprocess.Popen(
        [str(TIDINGS), "scheduler"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        _, errors = process.communicate(timeout=30)
        assert process.returncode == 0, errors.decode()[-2000:]


def campaign_row(name: str, **fields: object) -> dict[str, object]:
    now = utcnow()
    return {
        "name": name, "origin": "api", "channel": "email", "status": "scheduled",
        "subject": name, "from_name": "", "audience": AUDIENCE, "timezone": "UTC",
        "interval": 1, "catch_up": False, "runs": 0, "created_at": now, "updated_at": now,
        **fields,
    }  # fmt: skip


async def fill_subscribers(db: Runtime, count: int) -> None:
    """Many subscribers in one statement (their addresses need not decrypt for this test)."""
    prefix = f"{key_id(TEST_FERNET_KEY)}:x"
    async with db.database.engine.begin() as connection:
        await connection.execute(
            text(
                "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < :count) "
                "INSERT INTO subscribers (email, email_hash, email_domain, name, attributes, tags, "
                "status, engagement_score, created_at, updated_at) "
                "SELECT :prefix || n, 'h' || n, 'example.com', '', '{}', :tags, 'active', "
                "0, :now, :now FROM g"
            ).bindparams(bindparam("now", type_=UTCDateTime()), bindparam("tags", type_=TagList())),
            {"count": count, "prefix": prefix, "now": utcnow(), "tags": []},
        )


async def test_three_scheduler_processes_fire_each_due_slot_exactly_once(db: Runtime) -> None:
    if db.database.dialect != "postgresql":
        pytest.skip("SQLite runs one process; replicas need PostgreSQL")
    start = (utcnow() + timedelta(seconds=4)).replace(microsecond=0)
    async with db.database.sessions() as session:
        rows = [campaign_row(f"c{i}", schedule_time=start, next_run_at=start) for i in range(200)]
        secondly = campaign_row(
            "every second",
            schedule_time=start,
            next_run_at=start,
            frequency="secondly",
            until=start + timedelta(seconds=9),
            catch_up=True,
        )
        await session.execute(insert(Campaign), [*rows, secondly])
        await session.commit()
    schedulers = [start_scheduler(db) for _ in range(3)]
    try:
        deadline = time.monotonic() + 120
        while True:
            async with db.database.sessions() as session:
                runs = (await session.execute(select(CampaignRun))).scalars().all()
            if len(runs) >= 210 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        await asyncio.sleep(2)  # any double fire would show up now
    finally:
        stop(schedulers)
    async with db.database.sessions() as session:
        per_campaign = (
            await session.execute(
                select(Campaign.name, func.count(CampaignRun.id))
                .join(CampaignRun, CampaignRun.campaign_id == Campaign.id)
                .group_by(Campaign.name)
            )
        ).all()
        slots = (
            await session.scalars(
                select(CampaignRun.scheduled_for)
                .join(Campaign, Campaign.id == CampaignRun.campaign_id)
                .where(Campaign.name == "every second")
                .order_by(CampaignRun.scheduled_for)
            )
        ).all()
    counts = dict(per_campaign)
    assert sum(1 for name, n in counts.items() if name != "every second" and n == 1) == 200
    assert slots == [start + timedelta(seconds=s) for s in range(10)]


async def test_a_scheduler_killed_while_materializing_resumes_to_one_delivery_each(
    db: Runtime,
) -> None:
    recipients = 100_000
    await fill_subscribers(db, recipients)
    now = utcnow().replace(microsecond=0)
    async with db.database.sessions() as session:
        await session.execute(
            insert(Campaign), [campaign_row("big", schedule_time=now, next_run_at=now)]
        )
        await session.commit()
    first = start_scheduler(db)
    deadline = time.monotonic() + 120
    while not await _inserting_deliveries(db):
        assert first.poll() is None, first.stderr.read().decode() if first.stderr else ""
        assert await _run_status(db) in (None, "materializing"), "materialized before the kill"
        assert time.monotonic() < deadline, "the run never started"
        await asyncio.sleep(0.01)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert await _run_status(db) == "materializing"
    second = start_scheduler(db)
    try:
        while await _run_status(db) != "sending":
            assert time.monotonic() < deadline, "the run was never materialized"
            await asyncio.sleep(0.2)
    finally:
        stop([second])
    async with db.database.sessions() as session:
        [run] = (await session.scalars(select(CampaignRun))).all()
        deliveries = await session.scalar(select(func.count()).select_from(Delivery))
        distinct = await session.scalar(select(func.count(func.distinct(Delivery.subscriber_id))))
    assert (run.status, run.total) == ("sending", recipients)
    assert deliveries == distinct == recipients


async def _run_status(db: Runtime) -> str | None:
    async with db.database.sessions() as session:
        return await session.scalar(select(CampaignRun.status))


async def _inserting_deliveries(db: Runtime) -> bool:
    """The run is being materialized (on PostgreSQL: its INSERT is seen running)."""
    if await _run_status(db) != "materializing":
        return False
    if db.database.dialect != "postgresql":
        return True
    async with db.database.sessions() as session:
        busy = await session.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                "AND query LIKE 'INSERT INTO deliveries%'"
            )
        )
    return bool(busy)
