"""A provider's rate limit holds for the whole fleet: three real `tidings worker` processes on
PostgreSQL send a 3,000-recipient campaign through one fake provider limited to 50 messages a
second; the provider never sees more than that in any second (but for the pace's 0.05 s burst and
a grant in flight), the campaign takes as long as 50/s allows, and everyone gets one message."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections import Counter

import httpx
import pytest

from tests.conftest import subprocess_environment
from tests.delivery.support import fill_subscribers, send_campaign
from tests.delivery.test_provider_sending import add_api_provider
from tests.fakes.generic_http import FakeHttpApi
from tests.live_server import TIDINGS
from tidings.runtime import Runtime

RECIPIENTS = 3000
LIMIT = 50


@pytest.fixture(autouse=True)
def postgresql_only(db: Runtime) -> None:
    if db.database.dialect != "postgresql":
        pytest.skip("several worker processes need PostgreSQL (SQLite has one writer)")


def start_worker(db: Runtime) -> subprocess.Popen[bytes]:
    env = subprocess_environment(db, TIDINGS_LOG_LEVEL="WARNING")
    return subprocess.Popen(
        [str(TIDINGS), "worker"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


async def test_three_workers_share_one_providers_limit(
    client: httpx.AsyncClient, db: Runtime
) -> None:
    addresses = await fill_subscribers(db, RECIPIENTS)
    with FakeHttpApi() as fake:
        await add_api_provider(db, "limited", fake, per_second=LIMIT)
        await send_campaign(client, db, html=None, text="Hello {name}", subject="Short")
        workers = [start_worker(db) for _ in range(3)]
        started = time.monotonic()
        try:
            deadline = started + 240
            while len(fake.recipients()) < RECIPIENTS:
                for worker in workers:
                    assert worker.poll() is None, worker.stderr.read().decode()[-3000:]  # type: ignore[union-attr]
                assert time.monotonic() < deadline, f"{len(fake.recipients())} < {RECIPIENTS}"
                await asyncio.sleep(0.1)
            took = time.monotonic() - started
        finally:
            for worker in workers:
                worker.send_signal(signal.SIGTERM)
            for worker in workers:
                _, errors = worker.communicate(timeout=60)
                assert worker.returncode == 0, errors.decode()[-3000:]
        busiest = fake.most_in_any_window(1.0)
        print(f"\n3 workers, {LIMIT}/s: busiest second {busiest}, {RECIPIENTS} in {took:.1f} s")
        received = Counter(fake.recipients())
    assert sorted(received) == sorted(addresses) and set(received.values()) == {1}
    # 50 a second, plus the pace's burst (0.05 s: 2), plus requests granted in one second that
    # arrive in the next (a worker's event loop held up by the CPU). Measured on 2 shared
    # cores: 56 (57 to 62 with a 0.1 s burst, 67 with another test run beside it).
    assert busiest <= LIMIT + 20
    assert took >= (RECIPIENTS - LIMIT) / LIMIT * 0.95  # the fleet, not each worker, got 50/s
