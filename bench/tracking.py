"""Benchmark: requests per second of the open pixel (``/t/o/``) and the click redirect (``/t/c/``)
with their events persisted, against a bare ASGI app answering the same paths with the same bytes,
both under the same uvicorn settings and the same load generator (``wrk``), in the same run.

tidings runs as ``uvicorn --factory tidings.app:create_app`` (no scheduler, no workers) over a
campaign sent to ``--deliveries`` subscribers; wrk goes round a real token per delivery with a
mail client's user agent, so every event is a person's (engagement raised, provider counted).
Events are written a moment after the answer, so a run's rate is also given "persisted": its
requests over the run plus the time until their events were all in the database. After the
runs tidings gets SIGTERM (its sink writes what it holds) and the events are counted: every
request wrk wrote must have its event, the answered ones and those cut off at a run's end.

Goal (issue): tidings' persisted rate >= 0.5 of the bare app's, every event persisted, no
errors. Needs ``wrk`` (apt-get installs it if missing, as root). Writes bench/results/tracking.json.
Run: ``.venv/bin/python bench/tracking.py [--seconds 10] [--rounds 2] [--sqlite] [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import importlib.util
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from _postfix import free_port
from _scratch import (
    DEFAULT_SERVER,
    machine,
    scratch_database,
    server_settings,
    stop_cleanly_on_sigterm,
    tidings_url,
    verdict,
    write_result,
)
from cryptography.fernet import Fernet
from sqlalchemy import bindparam, func, insert, select, text
from starlette.types import Receive, Scope, Send

from tidings.audience.models import Subscriber
from tidings.campaigns.models import Campaign, CampaignRun
from tidings.config import Settings
from tidings.db.engine import Database
from tidings.db.types import UTCDateTime, utcnow
from tidings.delivery.links import OPEN_LINK, MailLinks
from tidings.providers.models import Provider
from tidings.runtime import open_runtime
from tidings.tracking.endpoints import NO_CACHE, PIXEL, PIXEL_HEADERS
from tidings.tracking.links import as_location, original_hash
from tidings.tracking.models import Event, Link

GOAL_RATIO = 0.5
KINDS = {"pixel": "opened", "click": "clicked"}  # endpoint -> the event type it records
LINKS = 10  # the campaign's counted URLs; click tokens go round them
PROVIDER = "bench-smtp"
# A person's mail client: not Apple's bare "Mozilla/5.0" proxy, no scanner's name.
USER_AGENT = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML)"
LOCATIONS_ENV = "TIDINGS_BENCH_LOCATIONS"  # the bare app's file of click path -> Location
UVICORN = ["--workers", "1", "--no-access-log", "--log-level", "warning", "--lifespan", "on"]

DELIVERIES = """
INSERT INTO deliveries (run_id, subscriber_id, status, attempts, next_attempt_at, provider,
    created_at, last_attempt_at, sent_at)
SELECT :run_id, id, 'sent', 1, :sent, :provider, :sent, :sent, :sent FROM subscribers ORDER BY id
"""

# Paths in turn, one a request. ``written`` counts requests written, so that those cut off by
# the end of a run (answered after wrk stopped counting) are accounted for; wrk calls request()
# once more to check it, on the first thread.
LUA = """
local paths = {}
for line in io.lines("%(paths)s") do paths[#paths + 1] = line end
local at = 1
written = 0
wrk.headers["User-Agent"] = "%(agent)s"
local threads = {}
function setup(thread)
  thread:set("offset", #threads * 7919)
  threads[#threads + 1] = thread
end
function init(args) at = offset %% #paths + 1 end
function request()
  local path = paths[at]
  at = at %% #paths + 1
  written = written + 1
  return wrk.format("GET", path)
end
function done(summary, latency, requests)
  local total = -1
  for _, thread in ipairs(threads) do total = total + thread:get("written") end
  local e = summary.errors
  io.write(string.format('WRK {"requests": %%d, "microseconds": %%d, "written": %%d, ' ..
    '"non_2xx_3xx": %%d, "socket_errors": %%d, "p50_ms": %%.2f, "p99_ms": %%.2f}\\n',
    summary.requests, summary.duration, total, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
"""


# --- the bare app: the same answers, no work ----------------------------------------------------


def bare_locations() -> dict[str, bytes]:
    """In the bare app's process: the Location tidings answers each click path with."""
    written = os.environ.get(LOCATIONS_ENV)
    paths: dict[str, str] = json.loads(Path(written).read_text()) if written else {}
    return {path: url.encode() for path, url in paths.items()}


_locations = bare_locations()


async def bare_app(scope: Scope, receive: Receive, send: Send) -> None:
    """The pixel for any ``/t/o/`` path, the 302 tidings gives for each known ``/t/c/`` path."""
    if scope["type"] == "lifespan":
        for done in ("lifespan.startup.complete", "lifespan.shutdown.complete"):
            await receive()
            await send({"type": done})
        return
    status, headers, body = 404, [(b"content-length", b"0")], b""
    if scope["path"].startswith("/t/o/"):
        status, headers, body = 200, PIXEL_HEADERS, PIXEL
    elif (location := _locations.get(scope["path"])) is not None:
        status, headers = 302, [(b"location", location), (b"content-length", b"0"), *NO_CACHE]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# --- wrk ----------------------------------------------------------------------------------------


@dataclass
class Load:
    app: str  # "bare" or "tidings"
    kind: str  # "pixel" or "click"
    warmup: bool
    seconds: float
    requests: int
    written: int
    non_2xx_3xx: int
    socket_errors: int
    p50_ms: float
    p99_ms: float
    persisted_after: float = 0.0  # tidings: seconds after the run until its events were written

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    @property
    def persisted_rate(self) -> float:
        return self.requests / (self.seconds + self.persisted_after)


def ensure_wrk() -> str:
    """wrk's path, installing the Debian package first if it is missing (as root only)."""
    if found := shutil.which("wrk"):
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise SystemExit("needs wrk: apt-get install wrk (as root, this script does it itself)")
    install = ["apt-get", "install", "-y", "-q", "wrk"]
    for command in (install, ["apt-get", "update", "-q"], install):
        print(f"wrk not found: {' '.join(command)}", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"  failed ({done.returncode}): {done.stderr.strip()[-500:]}", flush=True)
        if found := shutil.which("wrk"):
            return found
    raise SystemExit("could not install wrk with apt-get (see above): install it and rerun")


async def run_wrk(wrk: str, script: Path, port: int, seconds: int, args: argparse.Namespace) -> Any:
    command = [wrk, f"-t{args.threads}", f"-c{args.connections}", f"-d{seconds}s",
               "--timeout", "10s", "-s", str(script), f"http://127.0.0.1:{port}/"]  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        *command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        out = (await process.communicate())[0].decode()
    except BaseException:  # interrupted: no load left running behind
        process.kill()
        await process.wait()
        raise
    line = next((x for x in out.splitlines() if x.startswith("WRK ")), None)
    if process.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({process.returncode}): {out[-2000:]}")
    return json.loads(line[4:])


async def measure(
    wrk: str, script: Path, port: int, app: str, kind: str, args: argparse.Namespace
) -> list[Load]:
    """A warm-up, then the measured run; both returned, as both leave events behind."""
    loads = []
    for seconds, warmup in ((args.warmup, True), (args.seconds, False)):
        raw = await run_wrk(wrk, script, port, seconds, args)
        seconds_run = raw.pop("microseconds") / 1e6
        loads.append(Load(app=app, kind=kind, warmup=warmup, seconds=seconds_run, **raw))
    return loads


# --- servers ------------------------------------------------------------------------------------


def uvicorn_options() -> list[str]:
    """The same for both apps: one process, no access log, uvloop and httptools if present."""
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return [*UVICORN, "--loop", loop, "--http", http]


@contextlib.asynccontextmanager
async def server(
    app: list[str], env: dict[str, str], log: Path
) -> AsyncIterator[tuple[int, asyncio.subprocess.Process]]:
    """uvicorn serving ``app`` on a free port until the block ends (then SIGTERM; SIGKILL if it
    has not stopped within 60 s). It listens once the app's startup is done."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", *app, *uvicorn_options(), "--port", str(port)]
    with log.open("ab") as output:
        process = await asyncio.create_subprocess_exec(
            *command, env=env, cwd=Path(__file__).parent, stdout=output,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{app[-1]} did not start:\n{tail(log)}")
            with contextlib.suppress(OSError):
                (await asyncio.open_connection("127.0.0.1", port))[1].close()
                break
            await asyncio.sleep(0.1)
        yield port, process
    finally:
        await stop(process)


async def stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 60)
        except TimeoutError:
            process.kill()
            await process.wait()


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.exists() else ""


# --- the instance: keys, a sent campaign, its links, the paths to load ---------------------------


def instance(data_dir: str, database_url: str) -> tuple[Settings, dict[str, str]]:
    """Settings for this process and the environment of the server, with keys made here, so
    that both sign tracking tokens alike."""
    keys = {
        "TIDINGS_HMAC_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "TIDINGS_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
    }
    env = {**os.environ, **keys, "TIDINGS_DATA_DIR": data_dir,
           "TIDINGS_DATABASE_URL": database_url, "TIDINGS_SCHEDULER": "false",
           "TIDINGS_WORKERS": "false", "TIDINGS_LOG_LEVEL": "WARNING"}  # fmt: skip
    settings = Settings(
        data_dir=Path(data_dir), database_url=database_url, log_level="WARNING",
        hmac_key=keys["TIDINGS_HMAC_KEY"], encryption_keys=keys["TIDINGS_ENCRYPTION_KEYS"],
    )  # fmt: skip
    return settings, env


async def fill(database: Database, count: int) -> tuple[list[int], list[tuple[str, int]]]:
    """A campaign with ``LINKS`` counted URLs, sent an hour ago to ``count`` subscribers
    through one provider. Returns the delivery ids and the links' (target, id)."""
    sent = utcnow() - timedelta(hours=1)
    # A made-up blind index (email_hash): events are placed by delivery id, not by address.
    subscribers = [
        {"email": f"reader{n}@example.org", "email_hash": f"{n:064x}", "name": f"Reader {n}",
         "email_domain": "example.org"} for n in range(count)
    ]  # fmt: skip
    async with database.sessions() as session:
        await session.execute(insert(Subscriber), subscribers)
        campaign = Campaign(name="tracking bench", status="done", subject="News",
                            from_email="news@bench.example.com", audience={}, runs=1)  # fmt: skip
        session.add_all([campaign, Provider(name=PROVIDER, kind="smtp")])
        await session.flush()
        run = CampaignRun(campaign_id=campaign.id, status="done", scheduled_for=sent, total=count,
                          sent=count)  # fmt: skip
        targets = [f"https://bench.example.com/story/{n}?utm_source=tidings" for n in range(LINKS)]
        links = [Link(campaign_id=campaign.id, original_hash=original_hash(t), url=as_location(t))
                 for t in targets]  # fmt: skip
        session.add_all([run, *links])
        await session.flush()
        statement = text(DELIVERIES).bindparams(bindparam("sent", type_=UTCDateTime()))
        await session.execute(statement, {"run_id": run.id, "sent": sent, "provider": PROVIDER})
        ids = list(await session.scalars(text("SELECT id FROM deliveries ORDER BY id")))
        await session.commit()
        await session.execute(text("ANALYZE"))
        await session.commit()
        return ids, [(link.url, link.id) for link in links]


def write_scripts(
    work: Path, links: MailLinks, deliveries: list[int], targets: list[tuple[str, int]]
) -> dict[str, Path]:
    """A wrk script per endpoint over a file of paths: a token per delivery (clicks go round
    the links); and the bare app's Location by click path."""
    pixel = [f"/t/o/{links.tracking_token(d, OPEN_LINK)}" for d in deliveries]
    clicks = {}
    for n, delivery_id in enumerate(deliveries):
        url, link_id = targets[n % len(targets)]
        clicks[f"/t/c/{links.tracking_token(delivery_id, link_id)}"] = url
    (work / "locations.json").write_text(json.dumps(clicks))
    scripts = {}
    for kind, paths in (("pixel", pixel), ("click", list(clicks))):
        (work / f"{kind}.paths").write_text("\n".join(paths) + "\n")
        scripts[kind] = work / f"{kind}.lua"
        scripts[kind].write_text(LUA % {"paths": work / f"{kind}.paths", "agent": USER_AGENT})
    return scripts


# --- the run ------------------------------------------------------------------------------------


async def count_events(database: Database) -> dict[str, int]:
    async with database.sessions() as session:
        rows = await session.execute(select(Event.type, func.count()).group_by(Event.type))
        counts: dict[str, int] = {kind: total for kind, total in rows}
        counts["placed"] = await session.scalar(select(func.count(Event.campaign_id))) or 0
    return counts


async def wait_persisted(database: Database, event: str, at_least: int) -> float:
    """Seconds until ``at_least`` events of this type are in the database."""
    start = time.perf_counter()
    while (await count_events(database)).get(event, 0) < at_least:
        if time.perf_counter() - start > 120:
            raise RuntimeError(f"fewer than {at_least:,} {event} events written after 120 s")
        await asyncio.sleep(0.05)
    return time.perf_counter() - start


def show(load: Load, baseline: Load | None = None) -> None:
    line = (f"  {load.kind:6} {load.app:8} {load.rate:8,.0f} req/s   p50 {load.p50_ms:6.2f} ms"
            f"   p99 {load.p99_ms:7.2f} ms")  # fmt: skip
    if baseline is not None:
        line += (f"   ratio {load.rate / baseline.rate:.2f}   persisted {load.persisted_after:.1f}"
                 f" s later: {load.persisted_rate:,.0f}/s, ratio "
                 f"{load.persisted_rate / baseline.rate:.2f}")  # fmt: skip
    if load.non_2xx_3xx or load.socket_errors:
        line += f"   non-2xx/3xx {load.non_2xx_3xx:,}, socket errors {load.socket_errors:,}"
    print(line, flush=True)


async def run(args: argparse.Namespace, wrk: str) -> dict[str, Any]:
    async with contextlib.AsyncExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tidings-bench-")))
        if args.sqlite:
            url = f"sqlite+aiosqlite:///{work / 'tidings.db'}"
        else:
            name = await stack.enter_async_context(scratch_database(args.server, "tracking"))
            url = tidings_url(args.server, name)
        settings, env = instance(str(work), url)
        started = time.perf_counter()
        runtime = await open_runtime(settings)  # migrates
        stack.push_async_callback(runtime.close)
        deliveries, targets = await fill(runtime.database, args.deliveries)
        links = MailLinks(runtime.cipher.worker_args()[1], settings.base_url)
        scripts = write_scripts(work, links, deliveries, targets)
        print(f"{len(deliveries):,} deliveries, {len(targets)} links in "
              f"{time.perf_counter() - started:.1f} s", flush=True)  # fmt: skip
        loads = await run_loads(args, wrk, scripts, env, runtime.database, work)
        return {"loads": loads, "events": await count_events(runtime.database)}


async def run_loads(
    args: argparse.Namespace,
    wrk: str,
    scripts: dict[str, Path],
    env: dict[str, str],
    database: Database,
    work: Path,
) -> list[Load]:
    """Both servers up at once (the idle one costs nothing), measured in turn: each round, for
    each endpoint, the bare app then tidings. tidings is stopped before this returns."""
    bare_env = {**os.environ, LOCATIONS_ENV: str(work / "locations.json")}
    tidings_app = ["--factory", "tidings.app:create_app"]
    loads: list[Load] = []
    answered = dict.fromkeys(KINDS.values(), 0)
    async with (
        server(["tracking:bare_app"], bare_env, work / "bare.log") as (bare_port, _),
        server(tidings_app, env, work / "tidings.log") as (tidings_port, tidings),
    ):
        print(f"uvicorn {' '.join(uvicorn_options())}; wrk -t{args.threads} -c{args.connections};"
              f" {args.warmup} s warm-up + {args.seconds} s, {args.rounds} round(s)")  # fmt: skip
        for _ in range(args.rounds):
            for kind, event in KINDS.items():
                bare = await measure(wrk, scripts[kind], bare_port, "bare", kind, args)
                show(bare[-1])
                ours = await measure(wrk, scripts[kind], tidings_port, "tidings", kind, args)
                answered[event] += sum(x.requests - x.non_2xx_3xx for x in ours)
                # The next run starts once these events are written: a backlog being written
                # would slow it down, and would hide in this run's rate.
                ours[-1].persisted_after = await wait_persisted(database, event, answered[event])
                show(ours[-1], bare[-1])
                loads += [*bare, *ours]
        await stop(tidings)  # SIGTERM: the sink writes what it still holds
        if tidings.returncode not in (0, -signal.SIGTERM):  # uvicorn re-raises the SIGTERM
            log = tail(work / "tidings.log")
            raise RuntimeError(f"tidings exited with {tidings.returncode}:\n{log}")
    return loads


def summarize(loads: list[Load], counts: dict[str, int]) -> dict[str, Any]:
    """Per endpoint: the best measured run of each app over the rounds, the ratios, and the
    events of all tidings runs (warm-ups too) against the requests that wrk wrote."""
    summary: dict[str, Any] = {}
    for kind, event in KINDS.items():
        measured = [x for x in loads if x.kind == kind and not x.warmup]
        bare = max((x for x in measured if x.app == "bare"), key=lambda x: x.rate)
        ours = max((x for x in measured if x.app == "tidings"), key=lambda x: x.persisted_rate)
        runs = [x for x in loads if x.kind == kind and x.app == "tidings"]
        answered = sum(x.requests - x.non_2xx_3xx for x in runs)
        written = sum(x.written for x in runs)
        summary[kind] = {
            "bare_rate": round(bare.rate),
            "tidings_rate": round(ours.rate),
            "tidings_persisted_rate": round(ours.persisted_rate),
            "ratio": round(ours.rate / bare.rate, 3),
            "persisted_ratio": round(ours.persisted_rate / bare.rate, 3),
            "answered": answered,
            "written": written,
            "events": counts.get(event, 0),
            "errors": sum(x.non_2xx_3xx + x.socket_errors for x in runs),
            "all_persisted": answered <= counts.get(event, 0) <= written,
        }
    summary["all_placed"] = counts["placed"] == sum(counts.get(e, 0) for e in KINDS.values())
    return summary


def report(summary: dict[str, Any]) -> bool:
    print(f"\n{'':6} {'bare/s':>8} {'tidings/s':>10} {'ratio':>6} {'persisted/s':>12} "
          f"{'ratio':>6}   {'answered':>9} {'events':>9} {'written':>9}")  # fmt: skip
    for kind in KINDS:
        s = summary[kind]
        print(f"{kind:6} {s['bare_rate']:8,} {s['tidings_rate']:10,} {s['ratio']:6.2f} "
              f"{s['tidings_persisted_rate']:12,} {s['persisted_ratio']:6.2f}   "
              f"{s['answered']:9,} {s['events']:9,} {s['written']:9,}")  # fmt: skip
    ok = summary["all_placed"]
    for kind in KINDS:
        s = summary[kind]
        good = s["persisted_ratio"] >= GOAL_RATIO
        print(f"{kind}: persisted rate {s['persisted_ratio']:.2f} of bare (goal >= {GOAL_RATIO}) "
              f"{verdict(good)}; answered <= events <= written {verdict(s['all_persisted'])}; "
              f"errors {s['errors']} {verdict(not s['errors'])}")  # fmt: skip
        ok = ok and good and s["all_persisted"] and not s["errors"]
    print(f"every event placed on its delivery {verdict(summary['all_placed'])}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="measured seconds per run")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up seconds before each run")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each; the best counts")
    parser.add_argument("--connections", type=int, default=64, help="wrk -c")
    parser.add_argument("--threads", type=int, default=1, help="wrk -t")
    parser.add_argument("--deliveries", type=int, default=10_000, help="tokens (deliveries)")
    parser.add_argument("--server", default=DEFAULT_SERVER, help="user@host:port of PostgreSQL")
    parser.add_argument("--sqlite", action="store_true", help="SQLite in the data dir instead")
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.warmup, args.rounds, args.deliveries = 2, 1, 1, 2_000
    wrk = ensure_wrk()
    stop_cleanly_on_sigterm()
    measured = asyncio.run(run(args, wrk))
    summary = summarize(measured["loads"], measured["events"])
    ok = report(summary)
    result = {
        "benchmark": "tracking", "database": "sqlite" if args.sqlite else "postgresql",
        "options": {k: v for k, v in vars(args).items() if k != "server"},
        "uvicorn": uvicorn_options(), "summary": summary, "events": measured["events"],
        "loads": [{**asdict(x), "rate": round(x.rate, 1)} for x in measured["loads"]],
        "machine": machine(),
    }  # fmt: skip
    if not args.sqlite:
        result["postgresql"] = asyncio.run(server_settings(args.server))
    name = "tracking-quick" if args.quick else "tracking-sqlite" if args.sqlite else "tracking"
    print(f"\nwrote {write_result(name, result)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
