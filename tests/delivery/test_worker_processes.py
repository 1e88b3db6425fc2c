"""Real `tidings worker` processes on PostgreSQL: killed with SIGKILL mid-run and restarted,
they still reach every recipient, repeating only the batch in flight, with the same Message-ID;
stopped with SIGTERM they send nothing twice; two of them share a run without overlap."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
from collections import Counter

import httpx
import pytest

from tests.conftest import subprocess_environment
from tests.delivery.support import Inbox, SmtpServer, fill_subscribers, send_campaign
from tests.live_server import TIDINGS
from tidings.runtime import Runtime

BATCH = 200
SMALL = {"html": None, "text": "Hello {name}", "subject": "Short"}


@pytest.fixture(autouse=True)
def postgresql_only(db: Runtime) -> None:
    if db.database.dialect != "postgresql":
        pytest.skip("several worker processes need PostgreSQL (SQLite has one writer)")


def start_worker(db: Runtime, port: int, *args: str) -> subprocess.Popen[bytes]:
    env = subprocess_environment(
        db,
        TIDINGS_MAIL_TRANSPORT="smtp",
        TIDINGS_SMTP_HOST="127.0.0.1",
        TIDINGS_SMTP_PORT=str(port),
        TIDINGS_SMTP_SECURITY="none",
        TIDINGS_WORKER_BATCH_SIZE=str(BATCH),
        TIDINGS_WORKER_LEASE_SECONDS="3",
        TIDINGS_LOG_LEVEL="WARNING",
    )
    return subprocess.Popen(
        [str(TIDINGS), "worker", *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def stop_gracefully(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    _, errors = process.communicate(timeout=60)
    assert process.returncode == 0, errors.decode()[-3000:]


async def wait_until(inbox: Inbox, count: int, process: subprocess.Popen[bytes]) -> None:
    deadline = asyncio.get_running_loop().time() + 300
    while len(inbox.messages) < count:
        assert process.poll() is None, (process.stderr.read() if process.stderr else b"").decode()
        assert asyncio.get_running_loop().time() < deadline, f"{len(inbox.messages)} < {count}"
        await asyncio.sleep(0.02)


async def wait_for_everyone(
    inbox: Inbox, addresses: list[str], process: subprocess.Popen[bytes]
) -> None:
    wanted = set(addresses)
    deadline = asyncio.get_running_loop().time() + 300
    while {r for r, _ in list(inbox.messages)} != wanted:
        assert process.poll() is None, (process.stderr.read() if process.stderr else b"").decode()
        assert asyncio.get_running_loop().time() < deadline, "not every recipient was reached"
        await asyncio.sleep(0.1)


def duplicates(inbox: Inbox) -> dict[str, list[str]]:
    """Recipients who got more than one message, with those messages' Message-IDs."""
    ids: dict[str, list[str]] = {}
    for recipient, message in inbox.parsed():
        ids.setdefault(recipient, []).append(str(message["Message-ID"]))
    return {r: found for r, found in ids.items() if len(found) > 1}


async def test_a_worker_killed_three_times_still_reaches_everyone_repeating_one_batch_at_most(
    client: httpx.AsyncClient, db: Runtime
) -> None:
    addresses = await fill_subscribers(db, 20_000)
    await send_campaign(client, db, **SMALL)
    kills = 3
    with SmtpServer() as server:
        worker = start_worker(db, server.port)
        for kill in range(kills):
            await wait_until(server.inbox, random.randint(1_000, 5_000) * (kill + 1), worker)
            worker.kill()  # SIGKILL: no chance to release anything
            worker.wait()
            worker = start_worker(db, server.port)
        await wait_for_everyone(server.inbox, addresses, worker)
        await asyncio.sleep(1)
        stop_gracefully(worker)
        repeated = duplicates(server.inbox)
    assert all(len(set(ids)) == 1 for ids in repeated.values()), "a resend changed Message-ID"
    assert sum(len(ids) - 1 for ids in repeated.values()) <= kills * BATCH


async def test_sigterm_sends_or_gives_back_the_batch_in_hand_so_nothing_repeats(
    client: httpx.AsyncClient, db: Runtime
) -> None:
    addresses = await fill_subscribers(db, 5_000)
    await send_campaign(client, db, **SMALL)
    with SmtpServer() as server:
        worker = start_worker(db, server.port)
        await wait_until(server.inbox, 1_500, worker)
        stop_gracefully(worker)
        worker = start_worker(db, server.port)
        await wait_for_everyone(server.inbox, addresses, worker)
        await asyncio.sleep(1)
        stop_gracefully(worker)
        assert duplicates(server.inbox) == {}


async def test_two_worker_processes_share_a_run_without_sending_anyone_twice(
    client: httpx.AsyncClient, db: Runtime
) -> None:
    addresses = await fill_subscribers(db, 5_000)
    await send_campaign(client, db, **SMALL)
    with SmtpServer() as server:
        workers = start_worker(db, server.port, "--concurrency", "2")
        await wait_for_everyone(server.inbox, addresses, workers)
        await asyncio.sleep(1)
        stop_gracefully(workers)
        assert Counter(server.inbox.message_ids().values()) == Counter({1: 5_000})
