"""Benchmark: `tidings import` of an N-row CSV into PostgreSQL against a raw COPY of the same file.

Goal (issue): the import (validation, normalization, encryption, blind index, upsert) takes at
most 3x a plain ``COPY`` of the file into a table with comparable columns and indexes, and its
peak memory stays flat as the file grows (measured again at N/10). Writes
bench/results/import.json. Run: ``.venv/bin/python bench/import.py [--rows N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unicodedata
from pathlib import Path
from typing import Any

import asyncpg
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

GOAL_RATIO = 3.0
# Peak RSS at N may exceed the one at N/10 by this much and still count as flat (noise, caches).
FLAT_TOLERANCE = 1.25
HEADER = ("email", "name", "tags", "timezone", "city", "plan")
BROKEN_EVERY = 100  # one row in a hundred has an address no validator accepts

# The COPY target: the CSV's columns and the same kinds and number of indexes as tidings'
# subscribers (pk id; unique email_hash; btree email_domain, status, engagement_score,
# status_changed_at; GIN tags). The unique index on the address stands in for the blind index,
# the one on its domain for email_domain, plan / city / timezone for the three low-cardinality
# btrees, and a GIN index on the split tags for the one on the tags array.
BASELINE_TABLE = """
CREATE TABLE copy_baseline (
    id BIGSERIAL PRIMARY KEY,
    email TEXT NOT NULL,
    name TEXT,
    tags TEXT,
    timezone TEXT,
    city TEXT,
    plan TEXT
);
CREATE UNIQUE INDEX copy_baseline_email ON copy_baseline (email);
CREATE INDEX copy_baseline_domain ON copy_baseline (lower(split_part(email, '@', 2)));
CREATE INDEX copy_baseline_plan ON copy_baseline (plan);
CREATE INDEX copy_baseline_city ON copy_baseline (city);
CREATE INDEX copy_baseline_timezone ON copy_baseline (timezone);
CREATE INDEX copy_baseline_tags ON copy_baseline USING gin (string_to_array(tags, ';'));
"""

FIRST = ("anna", "Ben", "chloé", "david", "Emma", "felix", "Grace", "hugo", "Iris", "jonas", "zoë")
LAST = ("schmidt", "Martin", "garcía", "rossi", "Smith", "novak", "Kowalski", "müller", "Tanaka")
DOMAINS = ("gmail.com", "GMail.com", "yahoo.co.uk", "outlook.com", "proton.me", "web.de",
           "acme-corp.io", "example.org", "mail.example.net")  # fmt: skip
TAGS = ("tech", "retail", "finance", "vip", "news", "beta")
ZONES = ("Europe/Berlin", "America/New_York", "Asia/Tokyo", "Europe/Paris", "UTC",
         "America/Sao_Paulo", "Australia/Sydney", "", "")  # fmt: skip
CITIES = ("Berlin", "Paris", "Lisbon", "Oslo", "Austin", "Osaka", "Lagos", "Lima", "")
PLANS = ("free", "pro", "team")


def plain(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()


def generate_csv(path: Path, rows: int, seed: int = 7) -> int:
    """Write the file; returns how many of its rows are broken (invalid addresses)."""
    rng = random.Random(seed)
    broken = 0
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        for i in range(rows):
            first, last = rng.choice(FIRST), rng.choice(LAST)
            name = f"{first.title()} {last.title()}"
            if i % 7:  # mostly ASCII local parts; the rest keep their accents (SMTPUTF8)
                first, last = plain(first), plain(last)
            local = f"{first}.{last}.{i}" if i % 3 else f"{first[0]}{last}{i}"
            if i % BROKEN_EVERY == 37:
                broken += 1
                email = rng.choice((f"{local}@", f"{local}.example.com", f"{local}@@x.org",
                                    f"{local} @gmail.com"))  # fmt: skip
            else:
                # 1 in 500 an IDN domain (email-validator's slow path), 1 in 50 stray spaces.
                domain = "bücher.de" if i % 500 == 11 else rng.choice(DOMAINS)
                email = f" {local}@{domain} " if i % 50 == 3 else f"{local}@{domain}"
            tags = ";".join(t for t in TAGS if rng.random() < 0.25)
            row = (email, name, tags, rng.choice(ZONES), rng.choice(CITIES), rng.choice(PLANS))
            writer.writerow(row)
    return broken


# --- baseline: COPY ------------------------------------------------------------------------------


async def copy_baseline(server: str, csv_path: Path) -> dict[str, Any]:
    async with scratch_database(server, "copy") as database:
        connection = await asyncpg.connect(server_dsn(server, database))
        try:
            await connection.execute(BASELINE_TABLE)
            start = time.perf_counter()
            await connection.copy_to_table(
                "copy_baseline", source=csv_path, columns=HEADER, format="csv", header=True
            )
            seconds = time.perf_counter() - start
            rows = await connection.fetchval("SELECT count(*) FROM copy_baseline")
        finally:
            await connection.close()
    return {"seconds": round(seconds, 3), "rows": rows}


# --- tidings import ------------------------------------------------------------------------------


def process_tree(root: int) -> list[int]:
    """The process and all its descendants, from /proc (spawned workers included)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as handle:
                ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    tree, stack = [], [root]
    while stack:
        pid = stack.pop()
        tree.append(pid)
        stack.extend(children.get(pid, ()))
    return tree


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class RssSampler(threading.Thread):
    """Samples the summed RSS of a process tree every 100 ms until stopped."""

    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.stopped = threading.Event()
        self.peak_kib = 0
        self.processes = 0
        self.timeline_mib: list[float] = []  # one sample a second

    def run(self) -> None:
        ticks = 0
        while not self.stopped.wait(0.1):
            tree = process_tree(self.root)
            total = sum(rss_kib(pid) for pid in tree)
            self.peak_kib = max(self.peak_kib, total)
            self.processes = max(self.processes, len(tree))
            if ticks % 10 == 0:
                self.timeline_mib.append(round(total / 1024, 1))
            ticks += 1


def run_cli(
    command: list[str], env: dict[str, str], log: Path, started: list[subprocess.Popen[bytes]]
) -> dict[str, Any]:
    """Run a command (in its own process group, appended to ``started`` so that the caller can
    kill it), timing it and sampling its memory."""
    with log.open("wb") as output:
        start = time.perf_counter()
        process = subprocess.Popen(
            command, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
        started.append(process)
        sampler = RssSampler(process.pid)
        sampler.start()
        try:
            # wait4, not wait: its rusage holds the peak RSS of the process and its reaped
            # children (the worker pool), the largest single process of the tree.
            _, status, usage = os.wait4(process.pid, 0)
        except BaseException:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise
        finally:
            sampler.stopped.set()
            sampler.join()
        seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    return {
        "exit": process.returncode,
        "seconds": round(seconds, 3),
        "peak_tree_rss_mib": round(sampler.peak_kib / 1024, 1),
        "peak_process_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "processes": sampler.processes,
        "rss_timeline_mib": sampler.timeline_mib,
    }


async def tidings_import(server: str, csv_path: Path, workers: int) -> dict[str, Any]:
    tidings = Path(sys.executable).with_name("tidings")
    async with scratch_database(server, "import") as database:
        with tempfile.TemporaryDirectory(prefix="tidings-bench-") as data_dir:
            env = {
                **os.environ,
                "TIDINGS_DATABASE_URL": tidings_url(server, database),
                "TIDINGS_DATA_DIR": data_dir,
            }
            # Migrate first, untimed: the timed command then only checks the schema revision.
            await asyncio.to_thread(
                subprocess.run, [str(tidings), "migrate"], env=env, check=True, capture_output=True
            )
            log = Path(data_dir) / "import.log"
            command = [str(tidings), "import", str(csv_path), "--workers", str(workers)]
            started: list[subprocess.Popen[bytes]] = []
            try:
                result = await asyncio.to_thread(run_cli, command, env, log, started)
            except BaseException:  # interrupted: stop the import before its database goes
                for process in started:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                raise
            output = log.read_text(errors="replace")
            if result["exit"] != 0:
                raise RuntimeError(f"tidings import failed ({result['exit']}):\n{output[-3000:]}")
            result["summary"] = next(
                (line.strip() for line in output.splitlines() if line.startswith("import ")), ""
            )
            connection = await asyncpg.connect(server_dsn(server, database))
            try:
                result["subscribers"] = await connection.fetchval(
                    "SELECT count(*) FROM subscribers"
                )
                job = await connection.fetchrow(
                    "SELECT status, inserted, updated, skipped, failed FROM imports"
                )
                result["job"] = dict(job) if job else None
            finally:
                await connection.close()
    result["workers"] = workers
    return result


# --- the run -------------------------------------------------------------------------------------


async def measure_size(
    server: str, rows: int, workers: list[int], work_dir: Path
) -> dict[str, Any]:
    csv_path = work_dir / f"subscribers-{rows}.csv"
    start = time.perf_counter()
    broken = generate_csv(csv_path, rows)
    print(
        f"\n{rows:,} rows ({broken:,} broken), {csv_path.stat().st_size / 2**20:.0f} MiB CSV "
        f"generated in {time.perf_counter() - start:.1f} s",
        flush=True,
    )
    copy = await copy_baseline(server, csv_path)
    print(
        f"  COPY                  {copy['seconds']:8.2f} s  {rows / copy['seconds']:>9,.0f} rows/s"
    )
    imports = []
    for count in workers:
        result = await tidings_import(server, csv_path, count)
        result["rows_per_second"] = round(rows / result["seconds"])
        result["ratio"] = round(result["seconds"] / copy["seconds"], 2)
        result["expected_subscribers"] = rows - broken
        result["correct"] = result["subscribers"] == rows - broken
        imports.append(result)
        print(
            f"  tidings --workers {count}   {result['seconds']:8.2f} s  "
            f"{result['rows_per_second']:>9,} rows/s  {result['ratio']:5.2f}x COPY  "
            f"peak RSS {result['peak_tree_rss_mib']:6.1f} MiB tree / "
            f"{result['peak_process_rss_mib']:6.1f} MiB largest process  "
            f"subscribers {result['subscribers']:,} "
            f"({'ok' if result['correct'] else 'expected ' + format(rows - broken, ',')})",
            flush=True,
        )
    csv_path.unlink()
    copy["rows_per_second"] = round(rows / copy["seconds"])
    return {"rows": rows, "broken": broken, "copy": copy, "imports": imports}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    small = max(args.rows // 10, 1)
    compare = [args.workers, *(w for w in (1, 0) if w != args.workers)]
    with tempfile.TemporaryDirectory(prefix="tidings-bench-csv-") as work_dir:
        full = await measure_size(args.server, args.rows, [args.workers], Path(work_dir))
        tenth = await measure_size(
            args.server, small, compare if args.compare_workers else [args.workers], Path(work_dir)
        )
    main, reference = full["imports"][0], tenth["imports"][0]
    growth = main["peak_tree_rss_mib"] / reference["peak_tree_rss_mib"]
    fastest = min(tenth["imports"], key=lambda r: r["seconds"])
    return {
        "benchmark": "import",
        "rows": args.rows,
        "workers": args.workers,
        "full": full,
        "tenth": tenth,
        "ratio": main["ratio"],
        "goal_ratio": GOAL_RATIO,
        "passed_ratio": main["ratio"] <= GOAL_RATIO,
        "rss_growth": round(growth, 2),
        "rss_flat": growth <= FLAT_TOLERANCE,
        "correct": all(r["correct"] for r in full["imports"] + tenth["imports"]),
        "fastest_workers_at_tenth": fastest["workers"],
    }


def report(result: dict[str, Any]) -> None:
    full, tenth = result["full"], result["tenth"]
    main, reference = full["imports"][0], tenth["imports"][0]
    print()
    print(
        f"tidings import {main['rows_per_second']:,} rows/s vs COPY "
        f"{full['copy']['rows_per_second']:,} rows/s at {result['rows']:,} rows "
        f"(--workers {result['workers']})"
    )
    print(
        f"ratio tidings / COPY: {result['ratio']:.2f}x  (goal <= {result['goal_ratio']:.1f}x) "
        f"{verdict(result['passed_ratio'])}"
    )
    print(
        f"peak RSS of the process tree: {main['peak_tree_rss_mib']:.1f} MiB at "
        f"{full['rows']:,} rows, {reference['peak_tree_rss_mib']:.1f} MiB at {tenth['rows']:,} "
        f"({result['rss_growth']:.2f}x) {'FLAT' if result['rss_flat'] else 'GROWS'}"
    )
    if len(tenth["imports"]) > 1:
        timings = ", ".join(
            f"--workers {r['workers']}: {r['seconds']:.1f} s" for r in tenth["imports"]
        )
        print(
            f"at {tenth['rows']:,} rows: {timings}; fastest: {result['fastest_workers_at_tenth']}"
        )
    print(f"subscriber counts as expected: {verdict(result['correct'])}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the CSV")
    parser.add_argument("--workers", type=int, default=2, help="tidings import --workers")
    parser.add_argument(
        "--no-compare-workers",
        dest="compare_workers",
        action="store_false",
        help="skip timing --workers 1 and 0 at N/10",
    )
    parser.add_argument("--server", default=DEFAULT_SERVER, help="user@host:port of PostgreSQL")
    args = parser.parse_args()
    stop_cleanly_on_sigterm()
    result = asyncio.run(run(args))
    result["machine"] = machine()
    result["postgresql"] = asyncio.run(server_settings(args.server))
    report(result)
    print(f"\nwrote {write_result('import', result)}")
    return 0 if result["passed_ratio"] and result["rss_flat"] and result["correct"] else 1


if __name__ == "__main__":
    sys.exit(main())
