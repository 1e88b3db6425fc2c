"""Benchmark: GET /segments/{id}/count for a three-condition rule over N subscribers on PostgreSQL.

Goal (issue): on 1,000,000 subscribers the count answers in under 1 s. Baseline, measured in the
same run: a plain ``SELECT count(*) FROM subscribers``. Prints the query plan and writes
bench/results/segments.json. Run: ``.venv/bin/python bench/segments.py [--rows N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
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
from sqlalchemy import ClauseElement, Executable, func, select, text
from sqlalchemy.ext.compiler import compiles

from tidings.audience.models import Subscriber
from tidings.audience.schemas import SegmentWrite
from tidings.audience.segment_rules import compile_rule, parse_rule
from tidings.audience.segments import count_matching, create_segment, segment_rule
from tidings.config import Settings
from tidings.runtime import Runtime, open_runtime
from tidings.security.apikeys import create_api_key
from tidings.security.models import Scope

GOAL_SECONDS = 1.0
RULE = {
    "all": [
        {"field": "tag", "op": "eq", "value": "tech"},
        {"field": "attributes.seats", "op": "gt", "value": 20},
        {"field": "engagement_score", "op": "gt", "value": 60},
    ]
}

# --explore: what the planner does with other rules, other indexes and another form of the SQL.
SELECTIVE_RULE = {
    "all": [
        {"field": "tag", "op": "eq", "value": "vip"},
        {"field": "engagement_score", "op": "gt", "value": 95},
    ]
}
ATTRIBUTE_RULE = {"field": "attributes.seats", "op": "gt", "value": 45}
SEATS = (
    "jsonb_typeof(attributes #> '{seats}'::text[]) = 'number' AND CASE WHEN "
    "jsonb_typeof(attributes #> '{seats}'::text[]) = 'number' THEN "
    "((attributes #>> '{seats}'::text[])::varchar)::float8 END > %s"
)
# The same rules as tidings compiles them, minus the COALESCE(..., false) around each condition,
# which no index can serve. In a WHERE clause NULL already acts as false under AND and OR; only a
# condition under NOT needs it turned into false: ``(x) IS NOT TRUE`` instead of ``NOT x``.
UNGUARDED = {
    "goal": f"tags && '{{tech}}'::varchar(64)[] AND {SEATS % 20} AND engagement_score > 60",
    "selective": "tags && '{vip}'::varchar(64)[] AND engagement_score > 95",
    "attribute": SEATS % 45,
}
TAGS_GIN = "CREATE INDEX IF NOT EXISTS ix_subscribers_tags ON subscribers USING gin (tags)"
NO_TAGS_GIN = "DROP INDEX IF EXISTS ix_subscribers_tags"
SEATS_INDEX = (
    "CREATE INDEX bench_seats ON subscribers ((CASE WHEN jsonb_typeof(attributes #> "
    "'{seats}'::text[]) = 'number' THEN ((attributes #>> '{seats}'::text[])::varchar)::float8 END))"
)

# Set-based fill, deterministic through setseed(). Tags are stored sorted, as TagList keeps them.
# About 30% have "tech", 60% of seats are > 20, 40% of scores are > 60: ~7% match the rule.
# 5% have no "seats" and 1% a string "seats", so the rule's type test has something to reject.
FILL = """
INSERT INTO subscribers (email, email_hash, email_domain, name, attributes, tags, timezone,
    status, engagement_score, last_opened_at, created_at, updated_at)
SELECT 'bench:' || i,
    md5(i::text) || md5((i + 1)::text),
    (ARRAY['gmail.com', 'yahoo.com', 'outlook.com', 'example.org', 'corp.example',
           'mail.example'])[1 + floor(random() * 6)::int],
    'Subscriber ' || i,
    jsonb_strip_nulls(jsonb_build_object(
        'plan', (ARRAY['pro', 'team', 'free'])[1 + floor(random() * 3)::int],
        'seats', CASE WHEN r < 0.05 THEN NULL
                      WHEN r < 0.06 THEN to_jsonb((1 + floor(random() * 50))::int::text)
                      ELSE to_jsonb(1 + floor(random() * 50)::int) END,
        'city', (ARRAY['Berlin', 'Paris', 'Lisbon', 'Oslo', 'Austin', 'Osaka', 'Lagos',
                       'Lima'])[1 + floor(random() * 8)::int])),
    array_remove(ARRAY[
        CASE WHEN random() < 0.20 THEN 'finance' END,
        CASE WHEN random() < 0.40 THEN 'retail' END,
        CASE WHEN random() < 0.30 THEN 'tech' END,
        CASE WHEN random() < 0.05 THEN 'vip' END]::varchar(64)[], NULL),
    (ARRAY['Europe/Berlin', 'America/New_York', 'Asia/Tokyo', NULL])[1 + floor(random() * 4)::int],
    CASE WHEN s < 0.90 THEN 'active' WHEN s < 0.95 THEN 'unsubscribed'
         WHEN s < 0.98 THEN 'bounced' ELSE 'complained' END,
    round((random() * 100)::numeric, 2)::float8,
    CASE WHEN random() < 0.7 THEN now() - random() * interval '365 days' END,
    now() - random() * interval '1000 days',
    now() - random() * interval '100 days'
FROM (SELECT i, random() AS r, random() AS s FROM generate_series(1, $1) AS i) AS g
"""


class Explain(Executable, ClauseElement):
    """EXPLAIN of a statement, compiled and bound exactly as the statement itself would be."""

    inherit_cache = False

    def __init__(self, statement: Any, options: str) -> None:
        self.statement = statement
        self.options = options


@compiles(Explain, "postgresql")
def _compile_explain(element: Explain, compiler: Any, **kw: Any) -> str:
    return f"EXPLAIN ({element.options}) " + compiler.process(element.statement, **kw)


def count_statement(rule: dict[str, Any]) -> Any:
    condition = compile_rule(parse_rule(rule), "postgresql", datetime.now(UTC))
    return select(func.count()).select_from(Subscriber).where(condition)


async def clock(work: Callable[[], Awaitable[int]]) -> tuple[float, int]:
    start = time.perf_counter()
    result = await work()
    return time.perf_counter() - start, result


async def fill(server: str, database: str, rows: int) -> float:
    start = time.perf_counter()
    connection = await asyncpg.connect(server_dsn(server, database))
    try:
        await connection.execute("SELECT setseed(0.42)")
        await connection.execute(FILL, rows)
        await connection.execute("VACUUM ANALYZE subscribers")
    finally:
        await connection.close()
    return time.perf_counter() - start


async def explain(runtime: Runtime, statement: Any) -> list[str]:
    async with runtime.database.sessions() as session:
        result = await session.execute(Explain(statement, "ANALYZE, BUFFERS"))
        return [line for (line,) in result]


async def http_count(runtime: Runtime, segment_id: int) -> tuple[float, dict[str, Any]]:
    """The same count through the real route, in process (httpx's ASGI transport)."""
    import httpx

    from tidings.app import create_app

    async with runtime.database.sessions() as session:
        issued = await create_api_key(session, "bench", Scope.admin, "bench")
    transport = httpx.ASGITransport(app=create_app(runtime=runtime))
    headers = {"Authorization": f"Bearer {issued.secret}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        url = f"/segments/{segment_id}/count"
        (await client.get(url, headers=headers)).raise_for_status()  # warm-up
        start = time.perf_counter()
        response = await client.get(url, headers=headers)
        elapsed = time.perf_counter() - start
    response.raise_for_status()
    return elapsed, response.json()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    async with scratch_database(args.server, "segments") as database:
        with tempfile.TemporaryDirectory(prefix="tidings-bench-") as data_dir:
            settings = Settings(
                data_dir=Path(data_dir), database_url=tidings_url(args.server, database)
            )
            runtime = await open_runtime(settings)
            try:
                return await measure(args, runtime, database)
            finally:
                await runtime.close()


async def measure(args: argparse.Namespace, runtime: Runtime, database: str) -> dict[str, Any]:
    print(f"filling {args.rows:,} subscribers (set-based INSERT ... SELECT) ...", flush=True)
    fill_seconds = await fill(args.server, database, args.rows)
    print(f"  filled and analyzed in {fill_seconds:.1f} s", flush=True)

    async with runtime.database.sessions() as session:
        segment = await create_segment(
            session, SegmentWrite(name="bench: tech, seats > 20, engaged", rule=RULE), "bench"
        )
        rule = segment_rule(segment)

    async def segment_count() -> int:
        async with runtime.database.sessions() as session:
            return await count_matching(session, rule)

    async def full_count() -> int:
        async with runtime.database.sessions() as session:
            return int(await session.scalar(select(func.count()).select_from(Subscriber)) or 0)

    # Interleaved rounds, so that a noisy neighbour slows both sides alike.
    segment_times: list[float] = []
    full_times: list[float] = []
    matched = total = 0
    await segment_count(), await full_count()  # warm-up: caches, prepared statements
    for _ in range(args.runs):
        seconds, matched = await clock(segment_count)
        segment_times.append(seconds)
        seconds, total = await clock(full_count)
        full_times.append(seconds)
    segment_median = statistics.median(segment_times)
    full_median = statistics.median(full_times)

    plan = await explain(runtime, count_statement(RULE))
    async with runtime.database.sessions() as session:
        indexes = list(
            await session.scalars(
                text("SELECT indexdef FROM pg_indexes WHERE tablename = 'subscribers' ORDER BY 1")
            )
        )
    http_seconds, http_body = await http_count(runtime, segment.id)
    explored = await explore(runtime, args.runs) if args.explore else []
    literal_sql = str(
        count_statement(RULE).compile(
            dialect=runtime.database.engine.dialect, compile_kwargs={"literal_binds": True}
        )
    )
    return {
        "benchmark": "segments",
        "rows": args.rows,
        "rule": RULE,
        "matched": matched,
        "total": total,
        "fill_seconds": round(fill_seconds, 2),
        "segment_count_seconds": [round(t, 4) for t in segment_times],
        "segment_count_median": round(segment_median, 4),
        "full_count_seconds": [round(t, 4) for t in full_times],
        "full_count_median": round(full_median, 4),
        "ratio": round(segment_median / full_median, 2),
        "http_count_seconds": round(http_seconds, 4),
        "http_count_body": http_body,
        "goal_seconds": GOAL_SECONDS,
        "passed": segment_median < GOAL_SECONDS,
        "sql": literal_sql,
        "plan": plan,
        "indexes": indexes,
        "explore": explored,
    }


async def explore(runtime: Runtime, runs: int) -> list[dict[str, Any]]:
    """Each rule as compiled and unguarded, before and after adding indexes by hand."""
    rules = {"goal": RULE, "selective": SELECTIVE_RULE, "attribute": ATTRIBUTE_RULE}
    rows: list[dict[str, Any]] = []

    async def measure_variant(name: str, form: str, indexes: str, setup: str = "") -> None:
        statement = (
            count_statement(rules[name])
            if form == "compiled"
            else select(func.count()).select_from(Subscriber).where(text(UNGUARDED[name]))
        )

        async def once() -> int:
            async with runtime.database.sessions() as session:
                if setup:
                    await session.execute(text(setup))
                return int(await session.scalar(statement) or 0)

        await once()
        times = []
        for _ in range(runs):
            seconds, matched = await clock(once)
            times.append(seconds)
        async with runtime.database.sessions() as session:
            if setup:
                await session.execute(text(setup))
            plan = [line for (line,) in await session.execute(Explain(statement, "COSTS OFF"))]
        scans = [line.strip().removeprefix("->  ") for line in plan if "Scan" in line]
        row = {
            "rule": name,
            "form": form + (" (1 core)" if setup else ""),
            "indexes": indexes,
            "matched": matched,
            "median_seconds": round(statistics.median(times), 4),
            "seconds": [round(t, 4) for t in times],
            "scans": scans,
        }
        rows.append(row)
        print(
            f"  {name:<9} {row['form']:<17} {indexes:<16} {matched:>8,} "
            f"{row['median_seconds'] * 1000:8.1f} ms  {'; '.join(scans)}",
            flush=True,
        )

    async def ddl(statement: str) -> None:
        async with runtime.database.engine.begin() as connection:
            await connection.execute(text(statement))
            await connection.execute(text("ANALYZE subscribers"))

    print("\nexplore: rule, SQL form, indexes, matched, median, scans", flush=True)
    no_parallel = "SET LOCAL max_parallel_workers_per_gather = 0"
    for indexes, statement in (("no GIN on tags", NO_TAGS_GIN), ("GIN on tags", TAGS_GIN)):
        await ddl(statement)
        for name in rules:
            for form in ("compiled", "unguarded"):
                await measure_variant(name, form, indexes)
    await measure_variant("goal", "compiled", "GIN on tags", no_parallel)
    await ddl(SEATS_INDEX)
    for form in ("compiled", "unguarded"):
        await measure_variant("attribute", form, "GIN + seats expr")
    return rows


def report(result: dict[str, Any]) -> None:
    print()
    print("SQL (binds shown inline):")
    print("  " + result["sql"].replace("\n", "\n  "))
    print()
    print("indexes on subscribers (as migrated):")
    for index in result["indexes"]:
        print("  " + index)
    print()
    print("EXPLAIN (ANALYZE, BUFFERS):")
    for line in result["plan"]:
        print("  " + line)
    print()
    print(f"segment count   {result['matched']:>10,} of {result['total']:,} subscribers")
    print(
        f"  count_matching median {result['segment_count_median'] * 1000:8.1f} ms   "
        f"runs: {', '.join(f'{t * 1000:.0f}' for t in result['segment_count_seconds'])} ms"
    )
    print(
        f"  SELECT count(*) median {result['full_count_median'] * 1000:7.1f} ms   "
        f"runs: {', '.join(f'{t * 1000:.0f}' for t in result['full_count_seconds'])} ms"
    )
    print(f"  HTTP GET /segments/{{id}}/count  {result['http_count_seconds'] * 1000:.1f} ms")
    print(f"ratio segment count / full count: {result['ratio']:.2f}x")
    print(
        f"goal: under {result['goal_seconds']:.0f} s at {result['rows']:,} rows -> "
        f"{result['segment_count_median']:.3f} s {verdict(result['passed'])}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="subscribers to create")
    parser.add_argument("--runs", type=int, default=5, help="timed runs after one warm-up")
    parser.add_argument(
        "--explore",
        action="store_true",
        help="also time other rules, hand-made indexes and COALESCE-free SQL (a few minutes)",
    )
    parser.add_argument("--server", default=DEFAULT_SERVER, help="user@host:port of PostgreSQL")
    args = parser.parse_args()
    stop_cleanly_on_sigterm()
    result = asyncio.run(run(args))
    result["machine"] = machine()
    result["postgresql"] = asyncio.run(server_settings(args.server))
    report(result)
    print(f"\nwrote {write_result('segments', result)}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
