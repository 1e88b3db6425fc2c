"""Benchmark: sending a campaign of N recipients end to end into postfix's ``smtp-sink``, against
postfix's ``smtp-source -s 16`` pushing N messages of the same size into the same sink (the
line rate), in the same run.

tidings is measured from "campaign due" to "every delivery recorded sent": a ``tidings
scheduler`` process fires and materializes the run, ``--workers`` ``tidings worker`` processes
claim, render (20 KB personalized HTML + text), sign (DKIM off, then RSA-2048 on), send over SMTP
and record. Goals (issue 6), N = 100,000 on PostgreSQL: >= 0.5 of the line rate with DKIM off,
>= 0.2 with DKIM on; 1 KB messages are reported too. ``--rss-rows 1000000`` adds a DKIM-off run of
that size to check that the workers' peak RSS stays flat.

Needs postfix's tools: ``apt-get install postfix``. Writes bench/results/send.json.
Run: ``.venv/bin/python bench/send.py [--rows N] [--workers 2] [--rss-rows 1000000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from _postfix import free_port, installed, smtp_sink, source_rate
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

from tidings.security.crypto import PiiCipher

GOAL_DKIM_OFF = 0.5
GOAL_DKIM_ON = 0.2
FLAT_MB = 30.0
DOMAIN = "bench.example.com"
TIDINGS = Path(sys.executable).with_name("tidings")

CAMPAIGN = """
INSERT INTO campaigns (name, origin, channel, status, subject, html, text, from_name, from_email,
    audience, timezone, interval, catch_up, runs, schedule_time, next_run_at, created_at,
    updated_at)
VALUES ($1, 'api', 'email', 'scheduled', 'News for {{ subscriber.first_name }}', $2, $3,
    'Bench News', 'news@bench.example.com',
    '{"topic_ids": [], "segment_id": null, "promotion_id": null, "tags": []}', 'UTC', 1, false,
    0, date_trunc('second', now()), now(), now(), now())
RETURNING id
"""
PROGRESS = """
SELECT coalesce(sum(r.sent + r.failed + r.suppressed), 0), coalesce(sum(r.failed), 0)
FROM campaign_runs r WHERE r.campaign_id = $1
"""


@dataclass(frozen=True)
class Case:
    name: str
    size: int  # bytes of the rendered message, roughly
    dkim: bool


def content(size: int) -> tuple[str, str]:
    """A newsletter of about ``size`` bytes (HTML two thirds, text one third), written with line
    breaks as templates are, with a table layout and a style block, and personalized where
    newsletters are: the greeting, a "sent to" line, the reader's plan, the unsubscribe link."""
    words = ["the", "quick", "engine", "sends", "personal", "news", "to", "every", "reader"]
    paragraph = " ".join(words[(i * 7) % len(words)] for i in range(60))
    html = [
        "<html><head><style>p{color:#333;font:14px sans-serif} .cta{color:#06c}</style></head>",
        "<body><table width='100%'><tr><td>",
        "<h1>Hello {{ subscriber.first_name }},</h1>",
        "<p>Your plan: {{ subscriber.attributes.plan | default('free') }}</p>",
    ]
    text = ["Hello {{ subscriber.first_name }},", ""]
    story = 0
    while sum(map(len, html)) < size * 2 // 3:
        story += 1
        html.append(f"<h2>Story {story}</h2>\n<p>{paragraph}</p>")
        html.append(f"<p><a class='cta' href='https://bench.example.com/s/{story}'>Read</a></p>")
        if sum(map(len, text)) < size // 3:
            text.append(f"Story {story}: {paragraph}")
    html.append("<p>Sent to {{ subscriber.name }}. <a href='{{ unsubscribe_url }}'>Leave</a></p>")
    html.append("</td></tr></table></body></html>")
    text.append("Sent to {{ subscriber.name }}. Unsubscribe: {{ unsubscribe_url }}")
    return "\n".join(html), "\n".join(text)


def environment(
    server: str, database: str, data_dir: str, port: int, connections: int
) -> dict[str, str]:
    return {
        **os.environ,
        "TIDINGS_DATABASE_URL": tidings_url(server, database),
        "TIDINGS_DATA_DIR": data_dir,
        "TIDINGS_MAIL_TRANSPORT": "smtp",
        "TIDINGS_SMTP_HOST": "127.0.0.1",
        "TIDINGS_SMTP_PORT": str(port),
        "TIDINGS_SMTP_SECURITY": "none",
        "TIDINGS_SMTP_CONNECTIONS": str(connections),
        "TIDINGS_LOG_LEVEL": "WARNING",
    }


async def fill(server: str, database: str, data_dir: str, rows: int) -> None:
    """``rows`` subscribers with real encrypted addresses, written with COPY."""
    secrets = json.loads((Path(data_dir) / "secrets.json").read_text())
    keys = tuple(k for k in secrets["encryption_keys"].split(",") if k)
    hmac_key = base64.urlsafe_b64decode(secrets["hmac_key"] + "==")
    cipher = PiiCipher(keys, hmac_key)
    now = datetime.now(UTC)
    connection = await asyncpg.connect(server_dsn(server, database))
    try:
        for start in range(0, rows, 100_000):
            addresses = [f"reader{n}@example.org" for n in range(start, min(rows, start + 100_000))]
            tokens = cipher.encrypt_many(addresses)
            records = [
                (token, cipher.email_hash(a), "example.org", f"Reader Number{n + start}", "{}",
                 [], "active", 0.0, now, now)
                for n, (a, token) in enumerate(zip(addresses, tokens, strict=True))
            ]  # fmt: skip
            await connection.copy_records_to_table(
                "subscribers",
                records=records,
                columns=["email", "email_hash", "email_domain", "name", "attributes", "tags",
                         "status", "engagement_score", "created_at", "updated_at"],
            )  # fmt: skip
        await connection.execute("VACUUM ANALYZE subscribers")
    finally:
        await connection.close()


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def tidings_process(env: dict[str, str], command: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        str(TIDINGS), command, env=env, stdout=subprocess.DEVNULL
    )


async def tidings_command(env: dict[str, str], *args: str) -> None:
    process = await asyncio.create_subprocess_exec(
        str(TIDINGS), *args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, errors = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"tidings {' '.join(args)} failed: {errors.decode()[-2000:]}")


async def send_case(
    connection: asyncpg.Connection, env: dict[str, str], case: Case, rows: int, workers: int
) -> dict[str, Any]:
    """Start the scheduler and workers, make a campaign due, wait until every delivery is
    recorded; returns the rate and the workers' peak RSS."""
    processes = [await tidings_process(env, "worker") for _ in range(workers)]
    processes.append(await tidings_process(env, "scheduler"))
    try:
        await asyncio.sleep(3)  # started and idle
        html, text = content(case.size)
        start = time.perf_counter()
        campaign_id = await connection.fetchval(CAMPAIGN, case.name, html, text)
        done, failed = 0, 0
        while done < rows:
            await asyncio.sleep(0.2)
            for process in processes:
                if process.returncode is not None:
                    raise RuntimeError(f"a tidings process exited with {process.returncode}")
            done, failed = await connection.fetchrow(PROGRESS, campaign_id)
        seconds = time.perf_counter() - start
        rss = [peak_rss_mb(p.pid) for p in processes[:workers]]
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            await asyncio.wait_for(process.wait(), 60)
    sample = await connection.fetchval(
        "SELECT octet_length(html) + octet_length(text) FROM campaigns WHERE id = $1", campaign_id
    )
    return {
        "case": case.name,
        "rows": rows,
        "seconds": round(seconds, 2),
        "rate": round(rows / seconds, 1),
        "failed": failed,
        "template_bytes": sample,
        "worker_peak_rss_mb": [round(r, 1) for r in rss],
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    results: dict[str, Any] = {"benchmark": "send", "rows": args.rows, "workers": args.workers}
    with smtp_sink(port):
        async with scratch_database(args.server, "send") as database:
            with tempfile.TemporaryDirectory(prefix="tidings-bench-") as data_dir:
                env = environment(args.server, database, data_dir, port, args.connections)
                await tidings_command(env, "migrate")
                largest = max(args.rows, args.rss_rows or 0)
                started = time.perf_counter()
                await fill(args.server, database, data_dir, largest)
                print(f"{largest:,} subscribers filled in {time.perf_counter() - started:.1f} s")
                connection = await asyncpg.connect(server_dsn(args.server, database))
                try:
                    results["cases"] = await run_cases(args, connection, env, port)
                finally:
                    await connection.close()
    return results


async def run_cases(
    args: argparse.Namespace, connection: asyncpg.Connection, env: dict[str, str], port: int
) -> list[dict[str, Any]]:
    cases = []
    plan = [Case("20KB, DKIM off", 20_480, False), Case("20KB, DKIM RSA-2048", 20_480, True),
            Case("1KB, DKIM off", 1_024, False)]  # fmt: skip
    for case in plan:
        await use_dkim(env, case.dkim)
        await limit_audience(connection, args.rows)
        baseline = await asyncio.to_thread(source_rate, port, args.rows, case.size)
        measured = await send_case(connection, env, case, args.rows, args.workers)
        measured["line_rate"] = round(baseline, 1)
        measured["ratio"] = round(measured["rate"] / baseline, 3)
        print(
            f"  {case.name:22} line rate {baseline:8,.0f}/s   tidings {measured['rate']:8,.0f}/s"
            f"   ratio {measured['ratio']:.2f}   RSS {measured['worker_peak_rss_mb']} MB",
            flush=True,
        )
        cases.append(measured)
    if args.rss_rows:
        await limit_audience(connection, args.rss_rows)
        case = Case("RSS check, 20KB", 20_480, False)
        await use_dkim(env, case.dkim)
        big = await send_case(connection, env, case, args.rss_rows, args.workers)
        print(f"  {args.rss_rows:,}: {big['rate']:,.0f}/s, RSS {big['worker_peak_rss_mb']} MB")
        cases.append(big)
    return cases


async def use_dkim(env: dict[str, str], signed: bool) -> None:
    """Sign (a key for the sending domain, made once) or not (that key disabled)."""
    listed = await asyncio.create_subprocess_exec(
        str(TIDINGS), "dkim", "list", env=env, stdout=subprocess.PIPE
    )
    exists = DOMAIN.encode() in (await listed.communicate())[0]
    if signed and not exists:
        await tidings_command(env, "dkim", "create", DOMAIN, "--selector", "bench")
    elif exists:
        action = "enable" if signed else "disable"
        await tidings_command(env, "dkim", action, DOMAIN, "--selector", "bench")


async def limit_audience(connection: asyncpg.Connection, rows: int) -> None:
    """Exactly ``rows`` subscribers are active (the first ones), so every run has N recipients."""
    await connection.execute(
        "UPDATE subscribers SET status = CASE WHEN id <= $1 THEN 'active' ELSE 'unsubscribed' END",
        rows,
    )


def report(result: dict[str, Any]) -> None:
    cases = {c["case"]: c for c in result["cases"]}
    off, on = cases["20KB, DKIM off"], cases["20KB, DKIM RSA-2048"]
    print(f"\n{result['rows']:,} recipients, {result['workers']} worker processes")
    print(
        f"20 KB, DKIM off: {off['rate']:,.0f}/s = {off['ratio']:.2f} of the line rate "
        f"(goal >= {GOAL_DKIM_OFF}) {verdict(off['ratio'] >= GOAL_DKIM_OFF)}"
    )
    print(
        f"20 KB, DKIM on:  {on['rate']:,.0f}/s = {on['ratio']:.2f} of the line rate "
        f"(goal >= {GOAL_DKIM_ON}) {verdict(on['ratio'] >= GOAL_DKIM_ON)}"
    )
    small = cases["1KB, DKIM off"]
    print(f"1 KB, DKIM off:  {small['rate']:,.0f}/s = {small['ratio']:.2f} of the line rate")
    if "RSS check, 20KB" in cases:
        big = cases["RSS check, 20KB"]
        small_rss = max(off["worker_peak_rss_mb"])
        growth = max(big["worker_peak_rss_mb"]) - small_rss
        result["rss_growth_mb"] = round(growth, 1)
        print(
            f"worker peak RSS (DKIM off): {small_rss:.1f} MB at "
            f"{result['rows']:,}, {max(big['worker_peak_rss_mb']):.1f} MB at {big['rows']:,} "
            f"({growth:+.1f} MB) {'FLAT' if abs(growth) <= FLAT_MB else 'GROWS'}"
        )
    failures = sum(c["failed"] for c in result["cases"])
    print(f"deliveries failed: {failures} {verdict(failures == 0)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="recipients per run")
    parser.add_argument("--workers", type=int, default=2, help="tidings worker processes")
    parser.add_argument("--connections", type=int, default=8, help="SMTP connections per worker")
    parser.add_argument("--rss-rows", type=int, default=0, help="also run this many, for RSS")
    parser.add_argument("--server", default=DEFAULT_SERVER, help="user@host:port of PostgreSQL")
    args = parser.parse_args()
    if not installed():
        print("needs postfix's smtp-sink and smtp-source: apt-get install postfix")
        return 2
    stop_cleanly_on_sigterm()
    result = asyncio.run(run(args))
    result["machine"] = machine()
    result["postgresql"] = asyncio.run(server_settings(args.server))
    report(result)
    print(f"\nwrote {write_result('send', result)}")
    cases = {c["case"]: c for c in result["cases"]}
    ok = (
        cases["20KB, DKIM off"]["ratio"] >= GOAL_DKIM_OFF
        and cases["20KB, DKIM RSA-2048"]["ratio"] >= GOAL_DKIM_ON
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
