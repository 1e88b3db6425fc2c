"""Benchmark: tidings' SMTP transport against postfix's smtp-source, both sending 20 KB messages
to the same smtp-sink on 127.0.0.1.

The line rate is ``smtp-source -s 16`` (16 sessions, a new connection per message, as postfix's
own tool does by default); with ``-d`` it keeps its connections, as our pool does, and both are
reported. Goal: the transport reaches at least 0.8 of the line rate. Each pool size runs on
asyncio's loop and, when installed, on uvloop (not a dependency: reported for comparison).
Run: ``.venv/bin/python bench/smtp_client.py [--messages N] [--profile]``; writes
bench/results/smtp_client.json.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from _postfix import free_port, smtp_sink, source_rate
from _scratch import machine, verdict, write_result

from tidings.delivery.mime import MessageHeaders, build_message, message_id
from tidings.transports.base import Outcome, OutgoingMessage
from tidings.transports.smtp import SmtpConfig, SmtpTransport

GOAL_RATIO = 0.8
SENDER = "bounces@example.com"
DISTINCT_MESSAGES = 500  # built once and reused: the transport sees bytes, not their origin
PARAGRAPH = (
    "<p>Hello Ann, here is this week's news from the team: new features, fixes, and a few "
    "stories from our readers. <a href='https://example.com/read?id=1'>Read more</a>.</p>\n"
)


def build_messages(count: int, size: int) -> list[OutgoingMessage]:
    """``count`` messages of about ``size`` bytes, assembled by tidings' MIME builder."""
    html = "<html><body>" + PARAGRAPH * max(1, size * 2 // 3 // len(PARAGRAPH)) + "</body></html>"
    text = html.replace("<p>", "").replace("</p>", "")[: len(html) // 3]
    datas = [build_message(_headers(i), text, html) for i in range(DISTINCT_MESSAGES)]
    return [
        OutgoingMessage(i, SENDER, f"reader{i}@example.org", datas[i % DISTINCT_MESSAGES])
        for i in range(count)
    ]


def _headers(i: int) -> MessageHeaders:
    return MessageHeaders(
        from_address=SENDER,
        to_address=f"reader{i}@example.org",
        subject=f"Weekly news for reader {i}",
        message_id=message_id(i, "example.com"),
        date=datetime.now(UTC),
        from_name="Example News",
        list_unsubscribe_url=f"https://example.com/u/{i}",
    )


async def transport_rate(
    port: int, messages: list[OutgoingMessage], pool: int, batch: int
) -> float:
    """Messages per second of SmtpTransport, batch after batch, connections opened included."""
    transport = SmtpTransport(SmtpConfig("127.0.0.1", port, connections=pool, helo_name="bench"))
    start = time.perf_counter()
    for first in range(0, len(messages), batch):
        results = await transport.send(messages[first : first + batch])
        refused = [r for r in results if r.outcome is not Outcome.accepted]
        if refused:
            raise SystemExit(f"{len(refused)} not accepted, first: {refused[0]}")
    elapsed = time.perf_counter() - start
    await transport.close()
    return len(messages) / elapsed


def loop_runners() -> dict[str, Callable[[Coroutine[Any, Any, float]], float]]:
    runners: dict[str, Callable[[Coroutine[Any, Any, float]], float]] = {"asyncio": asyncio.run}
    try:
        import uvloop
    except ImportError:
        return runners
    runners["uvloop"] = uvloop.run
    return runners


def profile(port: int, messages: list[OutgoingMessage], pool: int, batch: int) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    asyncio.run(transport_rate(port, messages, pool, batch))
    profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(20)


@dataclass(frozen=True)
class Run:
    loop: str
    connections: int
    per_second: int


def measure(args: argparse.Namespace, port: int, messages: list[OutgoingMessage]) -> list[Run]:
    runs = []
    for loop_name, run in loop_runners().items():
        for pool in (int(p) for p in args.pools.split(",")):
            rate = run(transport_rate(port, messages, pool, args.batch))
            runs.append(Run(loop_name, pool, round(rate)))
    return runs


def report(result: dict[str, Any], runs: list[Run], line_rate: float, persistent: float) -> None:
    size, batch = result["message_bytes"], result["batch"]
    print(f"{result['messages']:,} messages of {size:,} B, batches of {batch}")
    print(f"smtp-source -s 16:    {line_rate:,.0f}/s (the line rate)")
    print(f"smtp-source -s 16 -d: {persistent:,.0f}/s (keeping its connections)")
    for r in runs:
        print(
            f"tidings on {r.loop:>7}, {r.connections:>2} connections: {r.per_second:>7,}/s  "
            f"{r.per_second / line_rate:.2f}x line rate, {r.per_second / persistent:.2f}x with -d"
        )
    passed = verdict(result["passed_ratio"])
    print(f"best asyncio ratio {result['best_ratio']} (goal >= {GOAL_RATIO}) {passed}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=20_480, help="bytes per message")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--pools", default="4,8,16", help="pool sizes, comma-separated")
    parser.add_argument("--profile", action="store_true", help="cProfile one run of pool 8")
    args = parser.parse_args()
    messages = build_messages(args.messages, args.size)
    port = free_port()
    with smtp_sink(port):
        if args.profile:
            profile(port, messages, 8, args.batch)
            return 0
        line_rate = source_rate(port, args.messages, args.size, keep_connections=False)
        persistent = source_rate(port, args.messages, args.size, keep_connections=True)
        runs = measure(args, port, messages)
    best = max(r.per_second for r in runs if r.loop == "asyncio")
    result = {
        "benchmark": "smtp_client",
        "messages": args.messages,
        "message_bytes": sum(len(m.data) for m in messages[:DISTINCT_MESSAGES])
        // DISTINCT_MESSAGES,
        "batch": args.batch,
        "line_rate_per_second": round(line_rate),
        "line_rate_keeping_connections_per_second": round(persistent),
        "runs": [asdict(r) for r in runs],
        "best_ratio": round(best / line_rate, 2),
        "passed_ratio": best / line_rate >= GOAL_RATIO,
        "machine": machine(),
    }
    report(result, runs, line_rate, persistent)
    print(f"wrote {write_result('smtp_client', result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
