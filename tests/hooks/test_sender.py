"""The webhook sender against a real HTTP receiver that checks signatures as a user's endpoint
would: successes, retries with backoff and Retry-After, the last answer kept, endpoints disabled
after failing in a row and resumed when enabled again. The clock is passed in, never slept on."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import httpx

from tests.factories import post_created
from tests.hooks.conftest import HookReceiver, register
from tests.live_server import free_port
from tidings.config import Settings
from tidings.db.types import utcnow
from tidings.hooks.models import WebhookDelivery, WebhookEndpoint
from tidings.hooks.queue import Attempt, RetryPolicy, claim_due, record_result
from tidings.hooks.sender import SenderOptions, deliver_due_once, run_webhook_sender
from tidings.runtime import Runtime


def allowing_private(db: Runtime) -> Settings:
    return db.settings.model_copy(update={"webhook_allow_private": True})


async def send(
    db: Runtime, receiver: HookReceiver, at: datetime, options: SenderOptions | None = None
) -> int:
    """One sender pass at ``at``, the receiver checking timestamps against the same clock."""
    receiver.now = at
    return await deliver_due_once(db.database, allowing_private(db), now=at, options=options)


async def queue_test(client: httpx.AsyncClient, endpoint: dict[str, Any]) -> int:
    created = await post_created(client, f"/webhook-endpoints/{endpoint['id']}/test", {})
    delivery_id: int = created["id"]
    return delivery_id


async def delivery(db: Runtime, delivery_id: int) -> WebhookDelivery:
    async with db.database.sessions() as session:
        return await session.get_one(WebhookDelivery, delivery_id)


async def endpoint_row(db: Runtime, endpoint_id: int) -> WebhookEndpoint:
    async with db.database.sessions() as session:
        return await session.get_one(WebhookEndpoint, endpoint_id)


async def test_a_delivery_is_signed_per_standard_webhooks_and_succeeds(
    client: httpx.AsyncClient, db: Runtime, receiver: HookReceiver, private_ok: Runtime
) -> None:
    endpoint = await register(client, receiver, "crm", ["bounced"])
    delivery_id = await queue_test(client, endpoint)
    now = utcnow()
    assert await send(db, receiver, now) == 1
    [received] = receiver.received("crm")
    assert received["webhook-id"] == f"msg_{delivery_id}"
    assert received["webhook-timestamp"] == str(int(now.timestamp()))
    assert received["webhook-signature"].startswith("v1,")
    assert received["content-type"] == "application/json"
    assert received["user-agent"] == "tidings-webhooks"
    done = await delivery(db, delivery_id)
    assert received["body"] == done.payload and received["body"]["type"] == "test"
    assert (done.status, done.attempts, done.last_status_code) == ("succeeded", 1, 200)
    assert done.last_response == '{"ok":true}' and done.delivered_at == now
    assert (await endpoint_row(db, endpoint["id"])).last_success_at == now
    assert await send(db, receiver, now + timedelta(hours=1)) == 0  # sent once

    # After a rotation, the next delivery is signed with the new secret.
    rotated = await client.post(f"/webhook-endpoints/{endpoint['id']}/rotate-secret")
    receiver.secrets["crm"] = rotated.json()["secret"]
    second = await queue_test(client, endpoint)
    assert await send(db, receiver, utcnow()) == 1
    assert (await delivery(db, second)).status == "succeeded" and not receiver.rejected


async def test_a_failed_attempt_is_retried_after_backoff_with_the_same_webhook_id(
    client: httpx.AsyncClient, db: Runtime, receiver: HookReceiver, private_ok: Runtime
) -> None:
    endpoint = await register(client, receiver, "crm", ["bounced"])
    delivery_id = await queue_test(client, endpoint)
    receiver.fail_next(500, body={"message": "database down"})
    start = utcnow()
    assert await send(db, receiver, start) == 1
    failed = await delivery(db, delivery_id)
    assert (failed.status, failed.attempts, failed.last_status_code) == ("pending", 1, 500)
    assert failed.last_error == "HTTP 500" and "database down" in (failed.last_response or "")
    assert start + timedelta(seconds=24) <= failed.next_attempt_at <= start + timedelta(seconds=36)
    assert (await endpoint_row(db, endpoint["id"])).consecutive_failures == 1
    listed = await client.get(f"/webhook-endpoints/{endpoint['id']}/deliveries?status=pending")
    assert listed.json()["items"][0]["last_status_code"] == 500

    assert await send(db, receiver, start + timedelta(seconds=20)) == 0  # not yet due
    assert await send(db, receiver, start + timedelta(seconds=40)) == 1
    done = await delivery(db, delivery_id)
    assert (done.status, done.attempts, done.last_status_code, done.last_error) == (
        "succeeded", 2, 200, None,
    )  # fmt: skip
    assert receiver.ids == [f"msg_{delivery_id}"] * 2  # a receiver can tell a retry
    assert (await endpoint_row(db, endpoint["id"])).consecutive_failures == 0


async def test_retry_after_is_honoured_on_429_and_503_within_bounds(
    client: httpx.AsyncClient, db: Runtime, receiver: HookReceiver, private_ok: Runtime
) -> None:
    endpoint = await register(client, receiver, "crm", ["bounced"])
    delivery_id = await queue_test(client, endpoint)
    start = utcnow()
    receiver.fail_next(429, retry_after="120")
    await send(db, receiver, start)
    assert (await delivery(db, delivery_id)).next_attempt_at == start + timedelta(seconds=120)

    later = start + timedelta(seconds=120)
    receiver.fail_next(503, retry_after="86400")  # a day: more than the 6 h we wait at most
    await send(db, receiver, later)
    assert (await delivery(db, delivery_id)).next_attempt_at == later + timedelta(hours=6)

    latest = later + timedelta(hours=6)
    receiver.fail_next(500, retry_after="3")  # only 429 and 503 are asked to wait
    await send(db, receiver, latest)
    retry_at = (await delivery(db, delivery_id)).next_attempt_at
    assert latest + timedelta(minutes=10 * 0.8) <= retry_at <= latest + timedelta(minutes=12)


async def test_a_delivery_fails_after_its_last_attempt(
    client: httpx.AsyncClient, db: Runtime, receiver: HookReceiver, private_ok: Runtime
) -> None:
    endpoint = await register(client, receiver, "crm", ["bounced"])
    delivery_id = await queue_test(client, endpoint)
    receiver.fail_always(500)
    options = SenderOptions(retry=RetryPolicy(delays=(30,)))  # two attempts
    start = utcnow()
    await send(db, receiver, start, options)
    assert (await delivery(db, delivery_id)).status == "pending"
    await send(db, receiver, start + timedelta(minutes=1), options)
    failed = await delivery(db, delivery_id)
    assert (failed.status, failed.attempts, failed.last_error) == ("failed", 2, "HTTP 500")
    assert await send(db, receiver, start + timedelta(days=30), options) == 0


async def test_an_endpoint_is_disabled_after_failing_in_a_row_and_resumes_when_enabled(
    client: httpx.AsyncClient, db: Runtime, receiver: HookReceiver, private_ok: Runtime
) -> None:
    endpoint = await register(client, receiver, "crm", ["bounced"])
    other = await register(client, receiver, "other", ["bounced"])
    queued = [await queue_test(client, endpoint) for _ in range(3)]
    options = SenderOptions(retry=RetryPolicy(disable_after=4))
    receiver.fail_always(502)
    start = utcnow()
    assert await send(db, receiver, start, options) == 3
    assert (await endpoint_row(db, endpoint["id"])).enabled  # 3 failures of 4
    assert await send(db, receiver, start + timedelta(minutes=1), options) == 3
    disabled = (await client.get(f"/webhook-endpoints/{endpoint['id']}")).json()
    assert disabled["enabled"] is False and disabled["consecutive_failures"] == 6
    assert disabled["disabled_reason"].startswith("4 consecutive failed attempts; disabled since")
    assert "HTTP 502" in disabled["disabled_reason"]
    audit = await client.get("/audit-log", params={"action": "webhook_endpoint.disable"})
    assert [entry["actor"] for entry in audit.json()] == ["system"]
    assert {(await delivery(db, d)).status for d in queued} == {"pending"}

    # Disabled, it is sent nothing, however late; other endpoints go on.
    receiver.recover()
    assert await send(db, receiver, start + timedelta(days=3), options) == 0
    await queue_test(client, other)
    assert await send(db, receiver, start + timedelta(days=3), options) == 1
    assert (await endpoint_row(db, other["id"])).enabled

    enabled = await client.patch(f"/webhook-endpoints/{endpoint['id']}", json={"enabled": True})
    assert enabled.json()["consecutive_failures"] == 0 and enabled.json()["disabled_reason"] is None
    assert await send(db, receiver, utcnow(), options) == 3  # due at once, not after backoff
    assert {(await delivery(db, d)).status for d in queued} == {"succeeded"}
    assert len(receiver.received("crm")) == 3


async def test_network_errors_redirects_and_long_answers_are_failed_attempts(
    client: httpx.AsyncClient, db: Runtime, receiver: HookReceiver, private_ok: Runtime
) -> None:
    targets = {
        "closed": f"http://127.0.0.1:{free_port()}/hook",
        "moved": f"{receiver.url}/moved",
        "chatty": f"{receiver.url}/chatty",
    }
    ids = {}
    for name, url in targets.items():
        created = await post_created(
            client, "/webhook-endpoints", {"name": name, "url": url, "event_types": ["sent"]}
        )
        ids[name] = await queue_test(client, created)
    assert await send(db, receiver, utcnow()) == 3
    closed, moved, chatty = [await delivery(db, ids[name]) for name in targets]
    assert closed.last_status_code is None and "ConnectError" in (closed.last_error or "")
    assert moved.last_status_code == 307
    assert "redirects are not followed" in (moved.last_error or "")
    assert receiver.received("elsewhere") == []
    assert chatty.last_status_code == 500 and chatty.last_response == "x" * 1024
    assert {closed.status, moved.status, chatty.status} == {"pending"}


async def test_a_private_target_is_refused_again_when_sending(
    client: httpx.AsyncClient, db: Runtime, receiver: HookReceiver, private_ok: Runtime
) -> None:
    endpoint = await register(client, receiver, "crm", ["bounced"])
    delivery_id = await queue_test(client, endpoint)
    refusing = db.settings.model_copy(update={"webhook_allow_private": False})
    assert await deliver_due_once(db.database, refusing, now=utcnow()) == 1
    refused = await delivery(db, delivery_id)
    assert "TIDINGS_WEBHOOK_ALLOW_PRIVATE" in (refused.last_error or "")
    assert receiver.ids == []


async def test_a_claim_is_leased_and_a_stale_result_is_not_recorded(
    client: httpx.AsyncClient, db: Runtime, receiver: HookReceiver, private_ok: Runtime
) -> None:
    endpoint = await register(client, receiver, "crm", ["bounced"])
    delivery_id = await queue_test(client, endpoint)
    start = utcnow()
    async with db.database.sessions() as session:
        [first] = await claim_due(session, 10, 60, start)
        assert first.secret == receiver.secrets["crm"] and first.url == receiver.hook_url("crm")
        assert await claim_due(session, 10, 60, start + timedelta(seconds=59)) == []
        [second] = await claim_due(session, 10, 60, start + timedelta(seconds=61))  # lease over
        assert (first.id, first.attempts, second.attempts) == (delivery_id, 1, 2)
        late = Attempt(status_code=200, response="ok")
        assert not await record_result(session, first, late, start, RetryPolicy())
        assert await record_result(session, second, late, start, RetryPolicy())
    assert (await delivery(db, delivery_id)).attempts == 2


async def test_the_sender_loop_sends_what_is_queued_until_stopped(
    client: httpx.AsyncClient, db: Runtime, receiver: HookReceiver, private_ok: Runtime
) -> None:
    endpoint = await register(client, receiver, "crm", ["bounced"])
    stop = asyncio.Event()
    options = SenderOptions(idle_seconds=0.05)
    loop = asyncio.create_task(
        run_webhook_sender(db.database, allowing_private(db), stop, options=options)
    )
    try:
        delivery_ids = [await queue_test(client, endpoint) for _ in range(10)]
        for _ in range(400):  # up to 20 s
            if len(receiver.received("crm")) == 10:
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(loop, 20)
    assert {(await delivery(db, d)).status for d in delivery_ids} == {"succeeded"}
    assert sorted(receiver.ids) == sorted(f"msg_{d}" for d in delivery_ids)


async def test_deliveries_are_listed_newest_first(
    client: httpx.AsyncClient, db: Runtime, receiver: HookReceiver, private_ok: Runtime
) -> None:
    endpoint = await register(client, receiver, "crm", ["bounced"])
    first, second = await queue_test(client, endpoint), await queue_test(client, endpoint)
    path = f"/webhook-endpoints/{endpoint['id']}/deliveries"
    listed = (await client.get(path, params={"limit": 1})).json()
    assert [d["id"] for d in listed["items"]] == [second] and listed["total"] == 2
    rest = (await client.get(path, params={"limit": 1, "offset": 1})).json()
    assert [d["id"] for d in rest["items"]] == [first]
