"""Benchmark: materializing a campaign run of N recipients on PostgreSQL, against a bare
``INSERT ... SELECT`` of the same rows into a table with the same columns and indexes as
``deliveries`` (``LIKE deliveries INCLUDING ALL``), in the same run.

Goals (issue): ratio <= 1.3 (no per-row work in Python), N = 1,000,000 in under 10 s, and the
materializing process's peak RSS flat (within 20 MB between N/10 and N). Writes
bench/results/materialize.json. Run: ``.venv/bin/python bench/materialize.py [--rows N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

from tidings.security.crypto import key_id
from _scratch import (
    DEFAULT_SERVER,
    machine,
    scratch_database,
    server_dsn,
    server_settings,
    stop_cleanly_on_sigterm,
    tidings_url,
    verdict,
    write_result,
)

GOAL_RATIO = 1.3
GOAL_SECONDS = 10.0
FLAT_MB = 20.0
REPEATS = 3

FILL = """
INSERT INTO subscribers (email, email_hash, email_domain, name, attributes, tags, status,
    engagement_score, created_at, updated_at)
SELECT $2 || ':bench' || g, md5(g::text) || md5((g + 1)::text), 'example.com', 'Reader ' || g, '{}',
    '{}', 'active', 0, now(), now()
FROM generate_series(1, $1) AS g
"""
CAMPAIGN = """
INSERT INTO campaigns (name, origin, channel, status, subject, from_name, audience, timezone,
    interval, catch_up, runs, created_at, updated_at)
VALUES ('bench', 'api', 'email', 'running', 'bench', '',
    '{"topic_ids": [], "segment_id": null, "promotion_id": null, "tags": []}', 'UTC', 1, false,
    1, now(), now())
RETURNING id
"""
RUN = """
INSERT INTO campaign_runs (campaign_id, status, scheduled_for, started_at, total, queued,
    created_at, updated_at)
VALUES ($1, 'materializing', now(), now(), 0, 0, now(), now())
RETURNING id
"""
BASELINE = """
INSERT INTO deliveries_baseline (run_id, subscriber_id, status, attempts, next_attempt_at,
    created_at)
SELECT $1, id, 'queued', 0, now(), now() FROM subscribers
"""


async def prepare(server: str, database: str, rows: int, data_dir: str) -> None:
    env = {**os.environ, "TIDINGS_DATABASE_URL": tidings_url(server, database)}
    env["TIDINGS_DATA_DIR"] = data_dir
    tidings = Path(sys.executable).with_name("tidings")
    await asyncio.to_thread(
        subprocess.run, [str(tidings), "migrate"], env=env, check=True, capture_output=True
    )
    # Addresses under the instance's key id: start-up refuses data under an unknown key.
    keys = json.loads((Path(data_dir) / "secrets.json").read_text())["encryption_keys"]
    connection = await asyncpg.connect(server_dsn(server, database))
    try:
        await connection.execute(FILL, rows, key_id(keys.split(",")[0]))
        await connection.execute("VACUUM ANALYZE subscribers")
        await connection.execute("CREATE TABLE deliveries_baseline (LIKE deliveries INCLUDING ALL)")
    finally:
        await connection.close()


async def time_baseline(connection: asyncpg.Connection, run_id: int) -> float:
    await connection.execute("TRUNCATE deliveries_baseline")
    await connection.execute("CHECKPOINT")
    start = time.perf_counter()
    await connection.execute(BASELINE, run_id)
    return time.perf_counter() - start


def time_tidings(server: str, database: str, run_id: int, data_dir: str) -> dict[str, Any]:
    """materialize_run in a child process of its own, for its peak RSS (wait4's rusage)."""
    env = {**os.environ, "TIDINGS_DATABASE_URL": tidings_url(server, database)}
    env["TIDINGS_DATA_DIR"] = data_dir
    process = subprocess.Popen(
        [sys.executable, __file__, "--child", str(run_id)], env=env, stdout=subprocess.PIPE
    )
    assert process.stdout is not None
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"materializing failed: {output[-2000:]!r}")
    result: dict[str, Any] = json.loads(output)
    result["peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)
    return result


async def child(run_id: int) -> None:
    from tidings.campaigns.materialize import materialize_run
    from tidings.campaigns.models import Campaign, CampaignRun
    from tidings.config import Settings
    from tidings.runtime import open_runtime

    runtime = await open_runtime(Settings())
    try:
        async with runtime.database.sessions() as session:
            run = await session.get_one(CampaignRun, run_id)
            campaign = await session.get_one(Campaign, run.campaign_id)
            start = time.perf_counter()
            total = await materialize_run(session, run, campaign)
            seconds = time.perf_counter() - start
    finally:
        await runtime.close()
    print(json.dumps({"seconds": seconds, "deliveries": total}))


async def measure_size(server: str, rows: int) -> dict[str, Any]:
    async with scratch_database(server, "materialize") as database:
        with tempfile.TemporaryDirectory(prefix="tidings-bench-") as data_dir:
            start = time.perf_counter()
            await prepare(server, database, rows, data_dir)
            print(f"\n{rows:,} subscribers filled in {time.perf_counter() - start:.1f} s")
            connection = await asyncpg.connect(server_dsn(server, database))
            try:
                campaign_id = await connection.fetchval(CAMPAIGN)
                baselines, tidings = [], []
                for _ in range(REPEATS):  # alternate, so that noise hits both alike
                    run_id = await connection.fetchval(RUN, campaign_id)
                    baselines.append(await time_baseline(connection, run_id))
                    await connection.execute("TRUNCATE deliveries")
                    await connection.execute("CHECKPOINT")
                    tidings.append(
                        await asyncio.to_thread(time_tidings, server, database, run_id, data_dir)
                    )
            finally:
                await connection.close()
    baseline = statistics.median(baselines)
    seconds = statistics.median(r["seconds"] for r in tidings)
    correct = all(r["deliveries"] == rows for r in tidings)
    peak = max(r["peak_rss_mb"] for r in tidings)
    print(
        f"  bare INSERT ... SELECT {baseline:7.2f} s   materialize_run {seconds:7.2f} s   "
        f"ratio {seconds / baseline:.2f}   peak RSS {peak:.1f} MB   "
        f"deliveries {'ok' if correct else 'WRONG'}",
        flush=True,
    )
    return {
        "rows": rows,
        "baseline_seconds": [round(s, 3) for s in baselines],
        "tidings_seconds": [round(r["seconds"], 3) for r in tidings],
        "baseline_median": round(baseline, 3),
        "tidings_median": round(seconds, 3),
        "ratio": round(seconds / baseline, 2),
        "peak_rss_mb": peak,
        "correct": correct,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tenth = await measure_size(args.server, max(args.rows // 10, 1))
    full = await measure_size(args.server, args.rows)
    growth = full["peak_rss_mb"] - tenth["peak_rss_mb"]
    return {
        "benchmark": "materialize",
        "rows": args.rows,
        "full": full,
        "tenth": tenth,
        "ratio": full["ratio"],
        "passed_ratio": full["ratio"] <= GOAL_RATIO,
        "passed_seconds": full["tidings_median"] < GOAL_SECONDS,
        "rss_growth_mb": round(growth, 1),
        "rss_flat": abs(growth) <= FLAT_MB,
        "correct": full["correct"] and tenth["correct"],
    }


def report(result: dict[str, Any]) -> None:
    full = result["full"]
    print(
        f"\nmaterialize {result['rows']:,} deliveries: {full['tidings_median']:.2f} s "
        f"(goal < {GOAL_SECONDS:.0f} s) {verdict(result['passed_seconds'])}"
    )
    print(
        f"ratio materialize_run / bare INSERT ... SELECT: {full['ratio']:.2f}x "
        f"(goal <= {GOAL_RATIO}x) {verdict(result['passed_ratio'])}"
    )
    print(
        f"peak RSS {full['peak_rss_mb']:.1f} MB at {result['rows']:,}, "
        f"{result['tenth']['peak_rss_mb']:.1f} MB at {result['tenth']['rows']:,} "
        f"({result['rss_growth_mb']:+.1f} MB) {'FLAT' if result['rss_flat'] else 'GROWS'}"
    )
    print(f"delivery counts as expected: {verdict(result['correct'])}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="recipients of the run")
    parser.add_argument("--server", default=DEFAULT_SERVER, help="user@host:port of PostgreSQL")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        asyncio.run(child(args.child))
        return 0
    stop_cleanly_on_sigterm()
    result = asyncio.run(run(args))
    result["machine"] = machine()
    result["postgresql"] = asyncio.run(server_settings(args.server))
    report(result)
    print(f"\nwrote {write_result('materialize', result)}")
    ok = result["passed_ratio"] and result["passed_seconds"] and result["rss_flat"]
    return 0 if ok and result["correct"] else 1


if __name__ == "__main__":
    sys.exit(main())
