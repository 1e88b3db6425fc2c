"""Campaigns sent through configured providers (fake JSON APIs over real sockets), on both
databases: routing rules and weights recorded per delivery, failover when a provider starts
failing, waiting (not failing) when no provider is healthy, rate limits, warming overflow."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from sqlalchemy import select, update

from tests.delivery.support import fill_subscribers, send_campaign
from tests.delivery.test_worker import wait_for
from tests.fakes.generic_http import TOKEN, FakeHttpApi
from tidings.audience.models import Subscriber
from tidings.campaigns.models import CampaignRun, Delivery
from tidings.campaigns.scheduler import scheduler_tick
from tidings.delivery.circuit import BreakerPolicy
from tidings.delivery.compose import Composer, SenderIdentity
from tidings.delivery.runner import mail_links
from tidings.delivery.worker import DeliveryWorker, RetryPolicy, WorkerOptions
from tidings.providers.models import Provider, RoutingRule
from tidings.providers.schemas import ProviderCreate
from tidings.providers.service import create_provider
from tidings.runtime import Runtime
from tidings.transports.factory import provider_transport
from tidings.transports.local import ConsoleTransport

FAST_RETRIES = RetryPolicy(base_seconds=0.05, cap_seconds=0.2, max_attempts=20)


async def add_api_provider(db: Runtime, name: str, fake: FakeHttpApi, **fields: Any) -> None:
    """A provider of kind ``http`` in front of ``fake``."""
    async with db.database.sessions() as session:
        body = ProviderCreate(
            name=name, kind="http",  # type: ignore[arg-type]
            settings={"url": fake.endpoint}, credentials={"auth_value": TOKEN}, **fields,
        )  # fmt: skip
        await create_provider(session, body, "test")


def provider_worker(
    db: Runtime, breaker: BreakerPolicy | None = None, **options: float
) -> DeliveryWorker:
    identity = SenderIdentity(links=mail_links(db), default_from="News <news@example.com>")
    return DeliveryWorker(
        db.database,
        ConsoleTransport(),  # never used: providers are configured
        Composer(identity),
        FAST_RETRIES,
        WorkerOptions(**{"batch_size": 50, "idle_seconds": 0.05, **options}),  # type: ignore[arg-type]
        open_provider=lambda provider: provider_transport(provider, db.settings),
        breaker=breaker,
    )


async def drain(worker: DeliveryWorker) -> None:
    while await worker.run_once():
        pass
    await worker.pool.close()


async def deliveries(db: Runtime, run_id: int) -> list[Delivery]:
    async with db.database.sessions() as session:
        return list(await session.scalars(select(Delivery).where(Delivery.run_id == run_id)))


async def run_status(db: Runtime, run_id: int) -> str:
    async with db.database.sessions() as session:
        run = await session.get(CampaignRun, run_id, populate_existing=True)
        assert run is not None
        return run.status


async def test_each_delivery_records_its_provider_and_the_rule_that_chose_it(
    client: httpx.AsyncClient, db: Runtime
) -> None:
    gmail = await fill_subscribers(db, 40, "gmail.com")
    others = await fill_subscribers(db, 60, "example.org")
    _, run_id = await send_campaign(client, db)
    with FakeHttpApi() as a, FakeHttpApi() as b:
        await add_api_provider(db, "a", a)
        await add_api_provider(db, "b", b)
        async with db.database.sessions() as session:
            provider_a = await session.scalar(select(Provider).where(Provider.name == "a"))
            assert provider_a is not None
            session.add(
                RoutingRule(
                    name="gmail-via-a", recipient_domains=["gmail.com"], provider_id=provider_a.id
                )
            )
            await session.commit()
        await drain(provider_worker(db))
        assert set(gmail) <= set(a.recipients())
        assert sorted(a.recipients() + b.recipients()) == sorted(gmail + others)
        assert len(b.recipients()) > 10  # the rest is shared by weight
    rows = await deliveries(db, run_id)
    assert {(d.provider, d.route) for d in rows if d.subscriber_id <= 40} == {("a", "gmail-via-a")}
    assert {d.route for d in rows if d.subscriber_id > 40} == {"weighted"}
    assert {d.status for d in rows} == {"sent"}


async def test_a_provider_failing_mid_campaign_is_cut_off_and_the_rest_goes_elsewhere(
    client: httpx.AsyncClient, db: Runtime
) -> None:
    addresses = await fill_subscribers(db, 400)
    _, run_id = await send_campaign(client, db)
    with FakeHttpApi() as a, FakeHttpApi() as b:
        await add_api_provider(db, "a", a, weight=3)
        await add_api_provider(db, "b", b, weight=1)
        worker = provider_worker(db, BreakerPolicy(failures_in_row=5, cool_down=60.0))
        stop = asyncio.Event()
        running = asyncio.create_task(worker.run(stop))
        await wait_for(lambda: len(a.recipients()) >= 100)
        a.fail_always(503)
        failing_since = time.monotonic()
        requests_seen = asyncio.create_task(sample_requests(a))
        await wait_for(lambda: len(set(a.recipients()) | set(b.recipients())) >= 400)
        assert worker.pool.circuits()["a"] == "open"
        # Seed 002's real-time failover: within 5 s of failing, a gets no more traffic.
        await asyncio.sleep(max(0.0, failing_since + 5.5 - time.monotonic()))
        samples = (
            requests_seen.result() if requests_seen.done() else await stop_sampling(requests_seen)
        )
        at_5s = [count for moment, count in samples if moment <= failing_since + 5.0][-1]
        assert samples[-1][1] == at_5s
        assert time.monotonic() - failing_since < 60
        await asyncio.sleep(0.3)  # the last batch is recorded
        stop.set()
        await running
        await worker.pool.close()
        received = a.recipients() + b.recipients()
    assert sorted(received) == sorted(addresses)  # each exactly once: nothing lost or doubled
    rows = await deliveries(db, run_id)
    assert {d.status for d in rows} == {"sent"}
    assert any(d.route == "failover: weighted" and d.provider == "b" for d in rows)
    await scheduler_tick(db.database)
    assert await run_status(db, run_id) == "done"


async def sample_requests(fake: FakeHttpApi) -> list[tuple[float, int]]:
    """(time, requests so far) every 20 ms, until cancelled."""
    samples: list[tuple[float, int]] = []
    try:
        while True:
            samples.append((time.monotonic(), fake.requests))
            await asyncio.sleep(0.02)
    except asyncio.CancelledError:
        samples.append((time.monotonic(), fake.requests))
        return samples


async def stop_sampling(task: asyncio.Task[list[tuple[float, int]]]) -> list[tuple[float, int]]:
    task.cancel()
    return await task


async def test_with_no_healthy_provider_deliveries_wait_instead_of_failing(
    client: httpx.AsyncClient, db: Runtime
) -> None:
    addresses = await fill_subscribers(db, 30)
    _, run_id = await send_campaign(client, db)
    with FakeHttpApi() as only:
        await add_api_provider(db, "only", only)
        only.fail_always(503)
        worker = provider_worker(
            db,
            BreakerPolicy(failures_in_row=3, cool_down=0.5),
            provider_chunk=5,
            provider_wait_seconds=0.2,  # less than the cool-down: the rest is deferred at once
        )
        assert await worker.run_once() == 30
        rows = await deliveries(db, run_id)
        assert {d.status for d in rows} == {"queued"}  # none failed
        never_tried = [d for d in rows if d.attempts == 0]
        assert len(never_tried) >= 20  # deferred before any provider took them: no attempt
        assert all("waiting for only" in (d.error or "") for d in never_tried)
        only.recover()
        await asyncio.sleep(0.6)  # the cool-down: the circuit half-opens for a probe
        for _ in range(100):
            await _make_due(db, run_id)
            await worker.run_once()
            if len(set(only.recipients())) == 30:
                break
            await asyncio.sleep(0.1)
        await worker.pool.close()
        assert sorted(only.recipients()) == sorted(addresses)
    assert {d.status for d in await deliveries(db, run_id)} == {"sent"}


async def _make_due(db: Runtime, run_id: int) -> None:
    """Bring waiting deliveries forward (the test does not wait out their retry times)."""
    async with db.database.sessions() as session:
        await session.execute(
            update(Delivery)
            .where(Delivery.run_id == run_id, Delivery.status == "queued")
            .values(next_attempt_at=Delivery.created_at)
        )
        await session.commit()


async def test_a_per_second_limit_paces_the_provider(
    client: httpx.AsyncClient, db: Runtime
) -> None:
    addresses = await fill_subscribers(db, 60)
    await send_campaign(client, db)
    with FakeHttpApi() as limited:
        await add_api_provider(db, "limited", limited, per_second=20)
        await drain(provider_worker(db, batch_size=100))
        assert sorted(limited.recipients()) == sorted(addresses)
        assert limited.most_in_any_window(1.0) <= 20 * 1.1 + 1 + 8  # + the requests in flight


async def test_warming_sends_the_days_cap_to_the_most_engaged_and_defers_the_rest(
    client: httpx.AsyncClient, db: Runtime
) -> None:
    await fill_subscribers(db, 30)
    async with db.database.sessions() as session:  # engagement 0, 10, ... 290
        await session.execute(update(Subscriber).values(engagement_score=Subscriber.id * 10 - 10))
        await session.commit()
    _, run_id = await send_campaign(client, db)
    with FakeHttpApi() as warming:
        await add_api_provider(db, "new-ip", warming, warming_plan={"steps": [10, 20]})
        await drain(provider_worker(db))
        sent_to = sorted(warming.recipients(), key=lambda a: int(a[4:].split("@")[0]))
    assert sent_to == [f"user{n}@example.org" for n in range(20, 30)]  # the 10 most engaged
    rows = await deliveries(db, run_id)
    waiting = [d for d in rows if d.status == "queued"]
    assert len(waiting) == 20 and {d.attempts for d in waiting} == {0}
    tomorrow = {d.next_attempt_at for d in waiting}
    assert len(tomorrow) == 1 and next(iter(tomorrow)).hour == 0  # UTC midnight: the next day
    assert all("warming" in (d.error or "") for d in waiting)


async def test_mail_from_a_domain_no_provider_sends_for_fails_with_the_reason(
    client: httpx.AsyncClient, db: Runtime
) -> None:
    await fill_subscribers(db, 3)
    _, run_id = await send_campaign(client, db)  # from editor@news.example.com
    with FakeHttpApi() as shop_only:
        await add_api_provider(db, "shop", shop_only, domains=["shop.example.com"])
        await drain(provider_worker(db))
        assert shop_only.recipients() == []
    rows = await deliveries(db, run_id)
    assert {(d.status, d.route) for d in rows} == {("failed", "unrouted")}
    assert "no enabled provider sends mail from news.example.com" in (rows[0].error or "")


async def test_a_message_composed_without_parts_is_composed_again_for_an_api_provider(
    client: httpx.AsyncClient, db: Runtime
) -> None:
    addresses = await fill_subscribers(db, 5)
    _, run_id = await send_campaign(client, db)
    worker = provider_worker(db)
    batch = await worker._claim_and_compose()  # no provider yet: MIME bytes only
    assert batch is not None and all(m.content is None for m in batch.messages)
    with FakeHttpApi() as api:
        await add_api_provider(db, "api", api)  # takes parts, not MIME
        await worker.pool.refresh(force=True)
        await worker._deliver(batch)
        assert api.recipients() == []
        assert {d.status for d in await deliveries(db, run_id)} == {"queued"}  # not failed
        await _make_due(db, run_id)
        await drain(worker)
        assert sorted(api.recipients()) == sorted(addresses)
        assert all(body["subject"] == "Hello Person" for body in api.bodies())
