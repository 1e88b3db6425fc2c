"""The delivery engine end to end on both databases: a campaign's run goes out through a real
SMTP server (aiosmtpd), once per recipient, as standards-correct signed mail; failures retry,
fail or suppress as specified; pause and resume never send anything twice."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from email.message import EmailMessage

import dkim
import httpx
import pytest
from sqlalchemy import select

from tests.delivery.support import SmtpServer, fill_subscribers, send_campaign
from tests.transports.faults import FaultSmtpServer
from tidings.audience.models import Subscriber, Suppression
from tidings.campaigns.models import Campaign, CampaignRun, Delivery
from tidings.campaigns.scheduler import scheduler_tick
from tidings.db.types import utcnow
from tidings.delivery.compose import Composer, SenderIdentity
from tidings.delivery.dkim_keys import create_dkim_key
from tidings.delivery.links import MailLinks
from tidings.delivery.mime import MessageHeaders, build_message
from tidings.delivery.worker import DeliveryWorker, RetryPolicy, WorkerOptions
from tidings.runtime import Runtime
from tidings.transports.smtp import SmtpConfig, SmtpTransport

PUBLIC_URL = "https://mail.example.com"


def make_worker(
    db: Runtime,
    port: int,
    *,
    policy: RetryPolicy | None = None,
    clock: object = None,
    timeout: float = 10.0,
    **options: float,
) -> DeliveryWorker:
    identity = SenderIdentity(
        links=MailLinks(db.cipher.worker_args()[1], PUBLIC_URL),
        default_from="tidings <noreply@example.com>",
        unsubscribe_mailto="unsubscribe@news.example.com",
    )
    transport = SmtpTransport(
        SmtpConfig("127.0.0.1", port, security="none", connections=4, timeout=timeout)
    )
    return DeliveryWorker(
        db.database,
        transport,
        Composer(identity),
        policy or RetryPolicy(),
        WorkerOptions(**{"batch_size": 100, "idle_seconds": 0.05, **options}),  # type: ignore[arg-type]
        **({"clock": clock} if clock else {}),  # type: ignore[dict-item]
    )


async def drain(worker: DeliveryWorker) -> None:
    while await worker.run_once():
        pass
    await worker.transport.close()


async def deliveries(db: Runtime, run_id: int) -> dict[int, Delivery]:
    async with db.database.sessions() as session:
        rows = await session.scalars(select(Delivery).where(Delivery.run_id == run_id))
        return {d.subscriber_id: d for d in rows}


async def get_run(db: Runtime, run_id: int) -> CampaignRun:
    async with db.database.sessions() as session:
        return await session.get_one(CampaignRun, run_id)


def dns_for(record: str):  # type: ignore[no-untyped-def]
    def lookup(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"s1._domainkey.news.example.com."
        return record.encode()

    return lookup


async def test_a_campaign_reaches_each_of_1000_subscribers_once_signed_and_well_formed(
    client: httpx.AsyncClient, db: Runtime
) -> None:
    addresses = await fill_subscribers(db, 1000)
    async with db.database.sessions() as session:
        key = await create_dkim_key(session, "news.example.com", "s1", actor="test")
        record = key.dns_record
    campaign_id, run_id = await send_campaign(client, db)

    with SmtpServer() as server:
        await drain(make_worker(db, server.port))
        received = server.inbox.parsed()

    assert sorted(r for r, _ in received) == sorted(addresses)
    sent = {d.id: d for d in (await deliveries(db, run_id)).values()}
    by_address = {
        f"user{d.subscriber_id - min(s.subscriber_id for s in sent.values())}": d
        for d in sent.values()
    }
    assert all(d.status == "sent" and d.attempts == 1 for d in sent.values())
    assert all(d.provider == "smtp" and d.provider_message_id for d in sent.values())
    raw = dict(server.inbox.messages)
    for recipient, message in received:
        delivery = by_address[recipient.split("@")[0]]
        assert message["Message-ID"] == f"<{delivery.id}.delivery@news.example.com>"
        assert message["To"] == recipient
        assert_bulk_headers(message)
        assert message.get_content_type() == "multipart/alternative"
        assert dkim.verify(raw[recipient], dnsfunc=dns_for(record))
    first = dict(received)["user7@example.org"]
    assert str(first["Subject"]) == "Hello Person"
    text, html = (part.get_content() for part in first.iter_parts())
    assert "News for Person 7" in text and "Number 7" in text
    assert "<h1>News for Person 7</h1>" in html

    await scheduler_tick(db.database)  # settle
    run = await get_run(db, run_id)
    assert (run.status, run.sent, run.queued, run.failed) == ("done", 1000, 0, 0)
    async with db.database.sessions() as session:
        assert (await session.get_one(Campaign, campaign_id)).status == "done"


def assert_bulk_headers(message: EmailMessage) -> None:
    unsubscribe = message["List-Unsubscribe"]
    assert unsubscribe.startswith(f"<{PUBLIC_URL}/u/")
    assert "<mailto:unsubscribe@news.example.com?subject=unsubscribe%20" in unsubscribe
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["List-Id"].endswith(".news.example.com>")
    assert message["Feedback-ID"].endswith(":campaign:tidings")
    assert message["From"] == "Ünïcode Editor <editor@news.example.com>"


async def test_pause_stops_claiming_and_resume_finishes_without_sending_twice(
    client: httpx.AsyncClient, db: Runtime
) -> None:
    addresses = await fill_subscribers(db, 600)
    campaign_id, run_id = await send_campaign(client, db)
    with SmtpServer() as server:
        worker = make_worker(db, server.port, batch_size=20)
        stop = asyncio.Event()
        running = asyncio.create_task(worker.run(stop))
        await wait_for(lambda: len(server.inbox.messages) >= 100)
        assert (await client.post(f"/campaigns/{campaign_id}/pause")).status_code == 200
        await asyncio.sleep(1.0)  # the batches in flight finish
        paused_at = len(server.inbox.messages)
        await asyncio.sleep(1.0)
        assert len(server.inbox.messages) == paused_at < 600
        sent = [d for d in (await deliveries(db, run_id)).values() if d.status == "sent"]
        assert len(sent) == paused_at

        assert (await client.post(f"/campaigns/{campaign_id}/resume")).status_code == 200
        await wait_for(lambda: len(server.inbox.messages) >= 600)
        await asyncio.sleep(0.5)
        stop.set()
        await running
        await worker.transport.close()
        assert sorted(r for r, _ in server.inbox.messages) == sorted(addresses)
        assert set(server.inbox.message_ids().values()) == {1}


async def wait_for(condition, seconds: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_subscribers_gone_since_materializing_are_suppressed_not_sent(
    client: httpx.AsyncClient, db: Runtime
) -> None:
    await fill_subscribers(db, 5)
    _, run_id = await send_campaign(client, db)
    gone = await client.delete("/subscribers/user1@example.org")
    assert gone.status_code == 200
    with SmtpServer() as server:
        await drain(make_worker(db, server.port))
        assert len(server.inbox.messages) == 4
    statuses = sorted(d.status for d in (await deliveries(db, run_id)).values())
    assert statuses == ["sent"] * 4 + ["suppressed"]
    run = await get_run(db, run_id)
    assert (run.sent, run.suppressed, run.queued) == (4, 1, 0)


async def test_a_template_failing_for_one_subscriber_fails_only_that_delivery(
    client: httpx.AsyncClient, db: Runtime
) -> None:
    await fill_subscribers(db, 3)  # attributes.n = 0, 1, 2
    html = "<p>{{ 10 // (subscriber.attributes.n | default(1)) }}</p>"
    _, run_id = await send_campaign(client, db, html=html, text=None)
    with SmtpServer() as server:
        await drain(make_worker(db, server.port))
        assert len(server.inbox.messages) == 2
    failed = [d for d in (await deliveries(db, run_id)).values() if d.status == "failed"]
    assert len(failed) == 1 and "ZeroDivisionError" in (failed[0].error or "")


class Clock:
    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now


async def test_transient_failures_retry_with_backoff_and_permanent_ones_fail(
    client: httpx.AsyncClient, db: Runtime
) -> None:
    await fill_subscribers(db, 5)
    rules = {
        "user0@example.org": "421",
        "user1@example.org": "451",
        "user2@example.org": "550",
        "user3@example.org": "hang",
    }
    _, run_id = await send_campaign(client, db)
    clock = Clock()
    policy = RetryPolicy(base_seconds=60, cap_seconds=600, max_attempts=3)
    async with FaultSmtpServer(rules) as server:  # type: ignore[arg-type]
        worker = make_worker(db, server.port, policy=policy, clock=clock, timeout=0.5)
        await worker.run_once()
        first = await deliveries(db, run_id)
        by_user = {d.subscriber_id - min(first): d for d in first.values()}
        assert [by_user[n].status for n in range(5)] == [
            "queued", "queued", "failed", "queued", "sent",
        ]  # fmt: skip
        assert "421" in (by_user[0].error or "") and "451 4.3.0" in (by_user[1].error or "")
        assert "550 5.1.1" in (by_user[2].error or "")
        for n in (0, 1, 3):  # full jitter: anywhere from now to base * 2**0
            wait = by_user[n].next_attempt_at - clock.now
            assert timedelta(0) <= wait <= timedelta(seconds=60)
        assert await worker.run_once() == 0  # nothing due yet

        server.rules["user1@example.org"] = "accept"  # the lookup failure cleared
        clock.now += timedelta(seconds=61)
        await worker.run_once()
        second = {d.subscriber_id - min(first): d for d in (await deliveries(db, run_id)).values()}
        assert second[1].status == "sent" and second[1].attempts == 2
        assert second[0].status == second[3].status == "queued"
        assert timedelta(0) <= second[0].next_attempt_at - clock.now <= timedelta(seconds=120)

        clock.now += timedelta(seconds=121)
        await worker.run_once()
        await worker.transport.close()
    final = {d.subscriber_id - min(first): d for d in (await deliveries(db, run_id)).values()}
    assert [final[n].status for n in range(5)] == ["failed", "sent", "failed", "failed", "sent"]
    assert (final[0].attempts, final[3].attempts) == (3, 3)
    assert (final[0].error or "").startswith("gave up after 3 attempts; last: 421")
    async with db.database.sessions() as session:  # 5.1.1: the address is never mailed again
        bounced = await session.get_one(Subscriber, by_user[2].subscriber_id)
        assert bounced.status == "bounced"
        assert (
            await session.scalar(
                select(Suppression.reason).where(Suppression.email_hash == bounced.email_hash)
            )
            == "bounced"
        )
    run = await get_run(db, run_id)
    assert (run.sent, run.failed, run.queued) == (2, 3, 0)


@pytest.mark.parametrize("status", ["sent", "queued"])
async def test_deliveries_are_listed_per_campaign_and_per_subscriber(
    client: httpx.AsyncClient, db: Runtime, status: str
) -> None:
    await fill_subscribers(db, 3)
    campaign_id, run_id = await send_campaign(client, db)
    if status == "sent":
        with SmtpServer() as server:
            await drain(make_worker(db, server.port))
    page = (await client.get(f"/campaigns/{campaign_id}/deliveries", params={"limit": 2})).json()
    assert page["total"] == 3 and len(page["items"]) == 2 and page["next_cursor"]
    assert {d["status"] for d in page["items"]} == {status}
    assert all((d["next_attempt_at"] is None) == (status == "sent") for d in page["items"])
    rest = await client.get(
        f"/campaigns/{campaign_id}/deliveries", params={"cursor": page["next_cursor"]}
    )
    assert len(rest.json()["items"]) == 1
    filtered = await client.get(f"/campaigns/{campaign_id}/deliveries?status=failed")
    assert filtered.json()["total"] == 0
    mine = (await client.get("/subscribers/user2@example.org/deliveries")).json()
    assert [d["run_id"] for d in mine["items"]] == [run_id]
    runs = (await client.get(f"/campaigns/{campaign_id}/runs")).json()["items"]
    assert runs[0]["sent"] == (3 if status == "sent" else 0)
    assert (await client.get("/campaigns/999999/deliveries")).status_code == 404
    metrics = (await client.get("/metrics")).text
    if status == "sent":
        assert 'tidings_deliveries_total{result="sent",transport="smtp"}' in metrics
    bad = await client.get(f"/campaigns/{campaign_id}/deliveries?status=lost")
    assert bad.status_code == 422


async def test_a_stopping_worker_gives_back_what_it_claimed_but_did_not_send(
    client: httpx.AsyncClient, db: Runtime
) -> None:
    await fill_subscribers(db, 30)
    _, run_id = await send_campaign(client, db)
    worker = make_worker(db, 9, batch_size=20)  # never connects: nothing is sent
    assert await worker._claim_and_compose() is not None
    held = await deliveries(db, run_id)
    assert sorted(d.status for d in held.values()) == ["queued"] * 10 + ["sending"] * 20
    await worker._give_back()
    back = await deliveries(db, run_id)
    assert {(d.status, d.attempts) for d in back.values()} == {("queued", 0)}
    assert all(d.next_attempt_at <= utcnow() for d in back.values())


async def test_a_message_that_cannot_be_built_fails_alone_and_the_batch_goes_on(
    client: httpx.AsyncClient, db: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    await fill_subscribers(db, 3)
    _, run_id = await send_campaign(client, db)

    def broken_for_user1(headers: MessageHeaders, text: str, html: str | None) -> bytes:
        if headers.to_address == "user1@example.org":
            raise RuntimeError("a bug")
        return build_message(headers, text, html)

    monkeypatch.setattr("tidings.delivery.compose.build_message", broken_for_user1)
    with SmtpServer() as server:
        await drain(make_worker(db, server.port))
        assert sorted(r for r, _ in server.inbox.messages) == [
            "user0@example.org", "user2@example.org",
        ]  # fmt: skip
    failed = [d for d in (await deliveries(db, run_id)).values() if d.status == "failed"]
    assert [d.error for d in failed] == ["could not build the message: RuntimeError"]


async def test_a_worker_whose_lease_ran_out_sends_nothing_another_worker_took_over(
    client: httpx.AsyncClient, db: Runtime
) -> None:
    await fill_subscribers(db, 10)
    _, run_id = await send_campaign(client, db)
    clock = Clock()
    with SmtpServer() as server:
        slow = make_worker(db, server.port, clock=clock, lease_seconds=60)
        held = await slow._claim_and_compose()  # then it stalls past its lease
        assert held is not None and len(held.claimed) == 10
        clock.now += timedelta(seconds=61)
        other = make_worker(db, server.port, clock=clock, lease_seconds=60)
        await drain(other)
        assert len(server.inbox.messages) == 10
        await slow._deliver(held)  # renewing finds nothing still its own
        await slow.transport.close()
        assert len(server.inbox.messages) == 10
    assert {(d.status, d.attempts) for d in (await deliveries(db, run_id)).values()} == {
        ("sent", 2)
    }


async def test_a_held_batch_keeps_its_lease_while_it_waits(
    client: httpx.AsyncClient, db: Runtime
) -> None:
    await fill_subscribers(db, 5)
    _, run_id = await send_campaign(client, db)
    clock = Clock()
    worker = make_worker(db, 9, clock=clock, lease_seconds=60)
    batch = await worker._claim_and_compose()
    assert batch is not None
    clock.now += timedelta(seconds=50)
    assert await worker._renew(batch.claimed) == {d.id for d in batch.claimed}
    leases = {d.lease_until for d in (await deliveries(db, run_id)).values()}
    assert leases == {clock.now + timedelta(seconds=60)}
