"""/system/status, /system/providers and /system/warming on both databases, from real rows:
statistics recorded the way workers record them, heartbeats, quota grants under a warming plan,
and a campaign run whose deliveries wait in the outbox."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from tests.delivery.support import fill_subscribers, send_campaign
from tests.factories import post_created
from tidings.app import create_app
from tidings.campaigns.models import Delivery
from tidings.config import Settings
from tidings.db.engine import create_database
from tidings.db.types import utcnow
from tidings.delivery import provider_stats, quota
from tidings.delivery.heartbeat import Heartbeat
from tidings.delivery.provider_stats import Tally
from tidings.delivery.quota import Limits
from tidings.delivery.warming import WarmingPlan, pause
from tidings.providers.models import ProviderState
from tidings.runtime import Runtime
from tidings.security.models import Scope
from tidings.system.service import system_status


async def add_provider(client: httpx.AsyncClient, name: str, **fields: Any) -> dict[str, Any]:
    return await post_created(client, "/providers", {"name": name, "kind": "console", **fields})


async def record(db: Runtime, tallies: dict[int, Tally], at: datetime) -> None:
    async with db.database.sessions() as session:
        await provider_stats.record(session, tallies, at)
        await session.commit()


async def beat(db: Runtime, circuits: dict[str, str], at: datetime) -> Heartbeat:
    worker = Heartbeat(at - timedelta(minutes=5))
    async with db.database.sessions() as session:
        await worker.beat(session, circuits, at)
    return worker


async def grant(db: Runtime, limits: Limits, wanted: int, at: datetime) -> int:
    async with db.database.sessions() as session:
        return (await quota.acquire(session, limits, wanted, at)).granted


async def pause_provider(db: Runtime, provider_id: int, reason: str) -> None:
    async with db.database.sessions() as session:
        session.add(ProviderState(provider_id=provider_id, grants=0))
        await session.flush()
        pause(session, await session.get_one(ProviderState, provider_id), reason, utcnow())
        await session.commit()


def slow_tally(**counters: int) -> Tally:
    """A tally whose send calls took 20 ms, except one in ten that took 400 ms."""
    tally = Tally(**counters)
    for n in range(counters.get("sent", 0)):
        tally.add_latency(0.4 if n % 10 == 9 else 0.02)
    return tally


async def test_provider_figures_and_rates_come_from_recorded_stats(
    client: httpx.AsyncClient, db: Runtime
) -> None:
    alpha = await add_provider(client, "alpha", priority=1)
    beta = await add_provider(client, "beta", priority=0, weight=5)
    await add_provider(client, "gamma", priority=1, enabled=False)
    now = utcnow()
    await record(
        db,
        {
            alpha["id"]: slow_tally(
                sent=200, deferred=10, failed=40, delivered=180, bounced_hard=6,
                bounced_soft=4, complained=1, opened=50, clicked=20,
            ),
            beta["id"]: Tally(sent=10, delivered=10),
            0: Tally(sent=3),  # the instance's own transport, before providers were added
        },
        now,
    )  # fmt: skip
    await record(db, {alpha["id"]: Tally(sent=1000)}, now - timedelta(days=3))
    response = await client.get("/system/providers")
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["window"] == "24h"
    rows = {row["name"]: row for row in report["providers"]}
    assert [row["name"] for row in report["providers"]] == ["beta", "alpha", "gamma", "maildir"]
    a = rows["alpha"]
    assert (a["sent"], a["delivered"], a["deferred"], a["failed"]) == (200, 180, 10, 40)
    assert (a["bounced_hard"], a["bounced_soft"], a["complained"]) == (6, 4, 1)
    assert (a["opened"], a["clicked"], a["priority"], a["kind"]) == (50, 20, 1, "console")
    assert a["error_rate"] == pytest.approx(50 / 250)
    assert a["bounce_rate"] == pytest.approx(10 / 200)
    assert a["complaint_rate"] == pytest.approx(1 / 200)
    assert a["latency_ms"] == {"calls": 200, "p50": 25.0, "p95": 500.0, "p99": 500.0}
    # 2 x 20% errors + 10 x 5% bounces + 300 x 0.5% complaints is more than all 100 points.
    assert a["reputation"] == 0.0
    assert rows["beta"]["reputation"] == 100.0 and rows["beta"]["weight"] == 5
    assert rows["beta"]["latency_ms"] == {"calls": 0, "p50": None, "p95": None, "p99": None}
    gamma = rows["gamma"]
    assert (gamma["enabled"], gamma["sent"], gamma["reputation"]) == (False, 0, 100.0)
    fallback = rows["maildir"]
    assert (fallback["id"], fallback["sent"], fallback["priority"]) == (0, 3, None)
    week = (await client.get("/system/providers", params={"window": "7d"})).json()
    assert {r["name"]: r["sent"] for r in week["providers"]}["alpha"] == 1200
    hour = (await client.get("/system/providers", params={"window": "1h"})).json()
    assert {r["name"]: r["sent"] for r in hour["providers"]}["alpha"] == 200
    bad = await client.get("/system/providers", params={"window": "2d"})
    assert bad.status_code == 422 and "window" in bad.json()["detail"]


async def test_a_mild_provider_keeps_a_graded_reputation(
    client: httpx.AsyncClient, db: Runtime
) -> None:
    mild = await add_provider(client, "mild")
    tally = Tally(sent=1000, bounced_hard=10)
    tally.add_latency(40.0)  # slower than the largest bucket (30 s)
    await record(db, {mild["id"]: tally}, utcnow())
    row = (await client.get("/system/providers")).json()["providers"][0]
    # 10 points per % of bounces: a 1% bounce rate costs 10.
    assert (row["bounce_rate"], row["reputation"]) == (0.01, 90.0)
    assert row["latency_ms"] == {"calls": 1, "p50": None, "p95": None, "p99": None}


async def test_the_circuit_is_the_worst_any_live_worker_reports(
    client: httpx.AsyncClient, db: Runtime
) -> None:
    for name in ("alpha", "beta", "gamma", "delta"):
        await add_provider(client, name)

    async def circuits() -> dict[str, str]:
        rows = (await client.get("/system/providers")).json()["providers"]
        return {row["name"]: row["circuit"] for row in rows}

    assert set((await circuits()).values()) == {"unknown"}  # no worker has ever beaten
    now = utcnow()
    await beat(db, {"alpha": "open", "beta": "closed", "gamma": "half_open"}, now)
    await beat(db, {"alpha": "closed", "beta": "half_open", "gamma": "closed"}, now)
    await beat(db, {"delta": "open"}, now - timedelta(minutes=5))  # gone: not counted
    assert await circuits() == {
        "alpha": "open", "beta": "half_open", "gamma": "half_open", "delta": "closed",
    }  # fmt: skip


async def test_warming_shows_the_day_cap_use_and_adjustments(
    client: httpx.AsyncClient, db: Runtime
) -> None:
    plan = {"steps": [5, 9, 20]}
    tokyo = await add_provider(client, "tokyo", warming_plan=plan, timezone="Asia/Tokyo")
    await add_provider(client, "idle", warming_plan={})
    yesterday_only = await add_provider(client, "yesterday", warming_plan=plan)
    await add_provider(client, "no-plan")
    now = utcnow()
    yesterday = now - timedelta(days=1)
    limits = Limits(tokyo["id"], timezone="Asia/Tokyo", warming=WarmingPlan(steps=[5, 9, 20]))
    assert await grant(db, limits, 3, yesterday) == 3
    await record(db, {tokyo["id"]: Tally(sent=3, delivered=3)}, yesterday)
    assert await grant(db, limits, 4, now) == 4  # day 2: the plan advanced to 9
    other = Limits(yesterday_only["id"], warming=WarmingPlan(steps=[5, 9, 20]))
    assert await grant(db, other, 2, yesterday) == 2

    response = await client.get("/system/warming")
    assert response.status_code == 200, response.text
    rows = {row["provider"]: row for row in response.json()["providers"]}
    assert set(rows) == {"tokyo", "idle", "yesterday"}
    t = rows["tokyo"]
    assert t["plan"] == {**WarmingPlan(steps=[5, 9, 20]).model_dump(exclude_none=True)}
    assert t["today"] == quota.local_date(now, "Asia/Tokyo").isoformat()
    assert (t["phase"], t["plan_day"], t["plan_length"], t["timezone"]) == (
        "warming", 2, 3, "Asia/Tokyo",
    )  # fmt: skip
    assert (t["cap"], t["used"], t["remaining"], t["paused"]) == (9, 4, 5, False)
    actions = [(a["action"], a["plan_day"], a["cap"]) for a in t["adjustments"]]
    assert actions == [("advance", 2, 9), ("start", 1, 5)]
    assert "next step" in t["adjustments"][0]["reason"]
    i = rows["idle"]
    assert (i["phase"], i["plan_day"], i["cap"], i["used"], i["remaining"]) == (
        "not_started", None, None, 0, None,
    )  # fmt: skip
    assert (i["plan"]["start_volume"], i["plan_length"], i["adjustments"]) == (50, 30, [])
    y = rows["yesterday"]  # today's cap is decided by today's first grant: none yet
    assert (y["phase"], y["plan_day"], y["cap"], y["used"]) == ("warming", 1, None, 0)


async def test_warming_lists_at_most_the_last_thirty_adjustments(
    client: httpx.AsyncClient, db: Runtime
) -> None:
    steps = list(range(1, 41))
    long = await add_provider(client, "long", warming_plan={"steps": steps})
    limits = Limits(long["id"], warming=WarmingPlan(steps=steps))
    start = utcnow() - timedelta(days=35)
    for day in range(35):  # no statistics recorded: each new day the plan holds
        assert await grant(db, limits, 1, start + timedelta(days=day)) == 1
    row = (await client.get("/system/warming")).json()["providers"][0]
    assert len(row["adjustments"]) == 30
    days = [a["day"] for a in row["adjustments"]]
    assert days == sorted(days, reverse=True)


async def test_status_is_ok_with_nothing_to_do(client: httpx.AsyncClient, db: Runtime) -> None:
    response = await client.get("/system/status")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["status"], body["problems"], body["workers"]) == ("ok", [], [])
    assert body["database"]["reachable"] is True
    assert body["database"]["dialect"] == db.database.dialect
    assert body["database"]["latency_ms"] >= 0
    assert body["queue"] == {
        "queued": 0, "sending": 0, "oldest_due_age_seconds": None, "runs_sending": 0,
    }  # fmt: skip
    # No provider configured: the workers send through the instance's own transport.
    assert body["providers"] == [
        {"id": 0, "name": "maildir", "enabled": True, "paused": False, "paused_reason": None,
         "circuit": "unknown"},
    ]  # fmt: skip


async def test_queued_mail_without_a_live_worker_is_degraded(
    client: httpx.AsyncClient, db: Runtime
) -> None:
    await fill_subscribers(db, 4)
    await send_campaign(client, db)
    now = utcnow()
    async with db.database.sessions() as session:
        # One waits in backoff (not due), one is claimed, one has waited ten minutes.
        ids = sorted(await session.scalars(select(Delivery.id)))
        waits = {
            ids[0]: ("queued", now + timedelta(hours=1)),
            ids[1]: ("sending", now + timedelta(minutes=5)),
            ids[2]: ("queued", now - timedelta(minutes=10)),
        }
        for delivery_id, (status, at) in waits.items():
            await session.execute(
                update(Delivery)
                .where(Delivery.id == delivery_id)
                .values(status=status, next_attempt_at=at)
            )
        await session.commit()
    body = (await client.get("/system/status")).json()
    assert body["status"] == "degraded"
    assert body["problems"] == ["no worker seen in the last minute while 4 deliveries wait"]
    queue = body["queue"]
    assert (queue["queued"], queue["sending"], queue["runs_sending"]) == (3, 1, 1)
    assert 600 <= queue["oldest_due_age_seconds"] < 700

    worker = await beat(db, {"maildir": "closed"}, utcnow())
    live = (await client.get("/system/status")).json()
    assert (live["status"], live["problems"]) == ("ok", [])
    assert [w["id"] for w in live["workers"]] == [worker.id]
    assert live["workers"][0]["circuits"] == {"maildir": "closed"}
    assert live["providers"][0]["circuit"] == "closed"


async def test_a_paused_provider_or_an_open_circuit_is_degraded(
    client: httpx.AsyncClient, db: Runtime
) -> None:
    warm = await add_provider(client, "warm")
    off = await add_provider(client, "off", enabled=False)
    await add_provider(client, "flaky")
    await pause_provider(db, off["id"], "disabled anyway")
    assert (await client.get("/system/status")).json()["status"] == "ok"
    await pause_provider(db, warm["id"], "complaint rate 0.4%")
    await beat(db, {"warm": "closed", "flaky": "open"}, utcnow())
    body = (await client.get("/system/status")).json()
    assert body["status"] == "degraded"
    assert body["problems"] == [
        "provider 'flaky' has an open circuit",
        "provider 'warm' is paused: complaint rate 0.4%",
    ]
    providers = {p["name"]: (p["paused"], p["circuit"]) for p in body["providers"]}
    assert providers == {
        "warm": (True, "closed"),
        "off": (True, "closed"),
        "flaky": (False, "open"),
    }
    assert (await client.post("/providers/warm/resume")).status_code == 200
    assert (await client.get("/system/status")).json()["problems"] == [
        "provider 'flaky' has an open circuit"
    ]


async def test_status_is_down_when_the_database_is_unreachable(db: Runtime) -> None:
    settings = Settings(database_url="postgresql+asyncpg://postgres@127.0.0.1:9/nowhere")
    broken = create_database(settings)
    try:
        async with broken.sessions() as session:
            report = await system_status(session, "maildir")
    finally:
        await broken.engine.dispose()
    assert (report.status, report.database.reachable, report.queue) == ("down", False, None)
    assert report.database.dialect == "postgresql"
    assert "unreachable" in report.problems[0]


async def test_over_http_an_unreachable_database_is_a_503_not_a_500(db: Runtime) -> None:
    settings = Settings(database_url="postgresql+asyncpg://postgres@127.0.0.1:9/nowhere")
    broken = Runtime(settings=settings, database=create_database(settings), cipher=db.cipher)
    transport = httpx.ASGITransport(app=create_app(runtime=broken))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://tidings.test") as c:
            c.headers["Authorization"] = "Bearer tdg_" + "x" * 43
            for path in ("/system/status", "/subscribers/", "/providers"):
                response = await c.get(path)
                assert response.status_code == 503, (path, response.text)
                assert response.json()["code"] == "database_unavailable"
                assert response.headers["Retry-After"] == "5"
    finally:
        await broken.database.dispose()


async def test_read_keys_see_the_reports_and_anonymous_callers_do_not(
    anon_client: httpx.AsyncClient, api_keys: dict[Scope, str]
) -> None:
    headers = {"Authorization": f"Bearer {api_keys[Scope.read]}"}
    for path in ("/system/status", "/system/providers", "/system/warming"):
        assert (await anon_client.get(path, headers=headers)).status_code == 200, path
        assert (await anon_client.get(path)).status_code == 401, path
