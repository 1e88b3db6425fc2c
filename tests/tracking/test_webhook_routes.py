"""The webhook routes end to end, on both databases: a verified request's events are stored and
take effect (a hard bounce suppresses, a complaint suppresses and marks); a replay adds
nothing; an unsigned, tampered, stale or replayed request is 401 and changes nothing."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import SecretStr
from sqlalchemy import func, select

from tests.delivery.support import SmtpServer, fill_subscribers, send_campaign
from tests.delivery.test_worker import drain, make_worker
from tests.tracking.webhooks.test_sns import (  # noqa: F401 (fixtures)
    TOPIC,
    FakeSns,
    fake_sns,
    notification,
    signed,
    subscription_confirmation,
)
from tests.tracking.webhooks.test_sns import client as sns_client  # noqa: F401
from tidings.app import create_app
from tidings.audience.models import Subscriber, Suppression
from tidings.runtime import Runtime
from tidings.tracking.models import Event
from tidings.tracking.webhooks import sns
from tidings.tracking.webhooks.base import MemoryReplayGuard
from tidings.tracking.webhooks.standard import generate_secret, sign
from tidings.tracking.webhooks_api import WebhookServices

SENDGRID_KEY = ec.generate_private_key(ec.SECP256R1())
MAILGUN_KEY = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0"
GENERIC_SECRET = generate_secret()
AZURE_KEY = "azure-shared-secret"


def sendgrid_public_key() -> str:
    der = SENDGRID_KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


@pytest.fixture
async def hooks(db: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app whose webhook secrets are set."""
    settings = db.settings.model_copy(
        update={
            "webhook_sendgrid_public_key": sendgrid_public_key(),
            "webhook_mailgun_signing_key": SecretStr(MAILGUN_KEY),
            "webhook_generic_secret": SecretStr(GENERIC_SECRET),
            "webhook_azure_key": SecretStr(AZURE_KEY),
            "webhook_postmark_user": "pm",
            "webhook_postmark_password": SecretStr("pm-password"),
            "webhook_ses_topics": [TOPIC],
        }
    )
    app = create_app(runtime=dataclasses.replace(db, settings=settings))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://tidings.test") as client:
        yield client
    await app.state.tracker.sink.close()


async def sent_delivery(client: httpx.AsyncClient, db: Runtime) -> int:
    """One subscriber, one campaign sent to them; the delivery's id."""
    await fill_subscribers(db, 1)
    await send_campaign(client, db)
    with SmtpServer() as server:
        await drain(make_worker(db, server.port))
    return 1


async def state(db: Runtime) -> tuple[list[tuple[str, str | None]], str, list[str]]:
    async with db.database.sessions() as session:
        kinds = (await session.execute(select(Event.type, Event.bounce).order_by(Event.id))).all()
        status = (await session.get_one(Subscriber, 1)).status
        reasons = (await session.scalars(select(Suppression.reason))).all()
        return [(k, b) for k, b in kinds], status, list(reasons)


def sendgrid_request(events: list[dict[str, Any]], at: int | None = None) -> dict[str, Any]:
    body = json.dumps(events).encode()
    timestamp = str(at if at is not None else int(time.time()))
    signature = SENDGRID_KEY.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        "content": body,
        "headers": {
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
            "Content-Type": "application/json",
        },
    }


def sendgrid_event(name: str, delivery: int, **fields: Any) -> dict[str, Any]:
    return {
        "email": "user0@example.org",
        "timestamp": int(time.time()),
        "event": name,
        "sg_event_id": f"sg-{name}-{delivery}",
        "sg_message_id": "abc.filter0001",
        "tidings_delivery_id": str(delivery),
        **fields,
    }


async def test_sendgrid_events_are_stored_take_effect_and_a_replay_adds_nothing(
    client: httpx.AsyncClient, hooks: httpx.AsyncClient, db: Runtime
) -> None:
    delivery = await sent_delivery(client, db)
    batch = [
        sendgrid_event("delivered", delivery),
        sendgrid_event("bounce", delivery, type="bounce", status="5.1.1", reason="550 5.1.1 no"),
    ]
    answer = await hooks.post("/webhooks/sendgrid", **sendgrid_request(batch))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"events": 2}
    assert await state(db) == ([("delivered", None), ("bounced", "hard")], "bounced", ["bounced"])
    again = await hooks.post("/webhooks/sendgrid", **sendgrid_request(batch))
    assert again.status_code == 200
    assert len((await state(db))[0]) == 2  # the same sg_event_ids: nothing new


async def test_sendgrid_requests_not_signed_by_the_key_are_401_and_change_nothing(
    client: httpx.AsyncClient, hooks: httpx.AsyncClient, db: Runtime
) -> None:
    delivery = await sent_delivery(client, db)
    batch = [sendgrid_event("spamreport", delivery)]
    tampered = sendgrid_request(batch)
    tampered["content"] = tampered["content"].replace(b"spamreport", b"spamreporT")
    stale = sendgrid_request(batch, at=int(time.time()) - 600)
    unsigned = {"content": json.dumps(batch).encode()}
    for request in (tampered, stale, unsigned):
        answer = await hooks.post("/webhooks/sendgrid", **request)
        assert answer.status_code == 401
        assert answer.json()["code"] == "unauthorized"
    assert await state(db) == ([], "active", [])


def mailgun_body(event: dict[str, Any], token: str) -> bytes:
    timestamp = str(int(time.time()))
    digest = hmac.new(MAILGUN_KEY.encode(), (timestamp + token).encode(), hashlib.sha256)
    signature = {"timestamp": timestamp, "token": token, "signature": digest.hexdigest()}
    return json.dumps({"signature": signature, "event-data": event}).encode()


async def test_a_mailgun_token_is_accepted_once_across_the_fleet(
    client: httpx.AsyncClient, hooks: httpx.AsyncClient, db: Runtime
) -> None:
    delivery = await sent_delivery(client, db)
    event = {
        "id": "mg-1", "timestamp": time.time(), "event": "complained",
        "recipient": "user0@example.org", "user-variables": {"tidings_delivery_id": str(delivery)},
    }  # fmt: skip
    body = mailgun_body(event, "a" * 50)
    assert (await hooks.post("/webhooks/mailgun", content=body)).status_code == 200
    replayed = await hooks.post("/webhooks/mailgun", content=body)
    assert replayed.status_code == 401 and "token" in replayed.json()["detail"]
    assert await state(db) == ([("complained", None)], "complained", ["complained"])


def generic_request(payload: object, secret: str = GENERIC_SECRET) -> dict[str, Any]:
    body = json.dumps(payload).encode()
    stamp = int(time.time())
    return {
        "content": body,
        "headers": {
            "webhook-id": "msg_1",
            "webhook-timestamp": str(stamp),
            "webhook-signature": sign(secret, "msg_1", stamp, body),
        },
    }


async def test_generic_standard_webhooks_are_verified(
    client: httpx.AsyncClient, hooks: httpx.AsyncClient, db: Runtime
) -> None:
    delivery = await sent_delivery(client, db)
    payload = {
        "type": "bounced", "id": "ev-1", "delivery_id": delivery, "bounce": "soft",
        "occurred_at": "2026-12-01T10:00:00Z",
    }  # fmt: skip
    forged = await hooks.post("/webhooks/generic", **generic_request(payload, generate_secret()))
    assert forged.status_code == 401
    ok = await hooks.post("/webhooks/generic", **generic_request(payload))
    assert ok.status_code == 200, ok.text
    malformed = await hooks.post("/webhooks/generic", **generic_request({"type": "nonsense"}))
    assert malformed.status_code == 400
    assert await state(db) == ([("bounced", "soft")], "active", [])  # one soft bounce: kept


async def test_postmark_needs_its_basic_auth(
    client: httpx.AsyncClient, hooks: httpx.AsyncClient, db: Runtime
) -> None:
    delivery = await sent_delivery(client, db)
    record = {
        "RecordType": "Delivery", "MessageID": "pm-1", "Recipient": "user0@example.org",
        "DeliveredAt": "2026-12-01T10:00:00Z", "Metadata": {"tidings_delivery_id": str(delivery)},
    }  # fmt: skip
    wrong = await hooks.post("/webhooks/postmark", json=record, auth=("pm", "nope"))
    assert wrong.status_code == 401
    ok = await hooks.post("/webhooks/postmark", json=record, auth=("pm", "pm-password"))
    assert ok.status_code == 200, ok.text
    by_path = await hooks.post("/webhooks/postmark/guess", json=record)
    assert by_path.status_code == 401  # no path secret configured: everything refused
    assert (await state(db))[0] == [("delivered", None)]


async def test_azure_handshakes_and_key(
    client: httpx.AsyncClient, hooks: httpx.AsyncClient, db: Runtime
) -> None:
    validation = [
        {
            "id": "v1", "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
            "eventTime": "2026-12-01T10:00:00Z", "data": {"validationCode": "512d38b6"},
            "subject": "", "dataVersion": "1",
        }
    ]  # fmt: skip
    answer = await hooks.post("/webhooks/azure", json=validation)
    assert answer.json() == {"validationResponse": "512d38b6"}
    report = [
        {
            "id": "az-1", "eventType": "Microsoft.Communication.EmailDeliveryReportReceived",
            "eventTime": "2026-12-01T10:00:00Z", "subject": "x", "dataVersion": "1.0",
            "data": {"sender": "a@b.c", "recipient": "user0@example.org", "messageId": "m",
                     "status": "Delivered", "deliveryAttemptTimeStamp": "2026-12-01T10:00:00Z"},
        }
    ]  # fmt: skip
    assert (await hooks.post("/webhooks/azure", json=report)).status_code == 401
    keyed = await hooks.post(
        "/webhooks/azure", json=report, headers={"X-Tidings-Webhook-Key": AZURE_KEY}
    )
    assert keyed.status_code == 200, keyed.text
    handshake = await hooks.options(
        "/webhooks/azure", headers={"WebHook-Request-Origin": "eventgrid.azure.net"}
    )
    assert handshake.headers["WebHook-Allowed-Origin"] == "eventgrid.azure.net"


async def test_ses_through_sns_confirms_the_subscription_and_records_bounces(
    client: httpx.AsyncClient,
    hooks: httpx.AsyncClient,
    db: Runtime,
    fake_sns: FakeSns,  # noqa: F811
    sns_client: httpx.AsyncClient,  # noqa: F811
) -> None:
    app = hooks._transport.app  # type: ignore[attr-defined]
    app.state.webhooks = WebhookServices(
        sns_client, sns.CertificateCache(sns_client), MemoryReplayGuard()
    )
    delivery = await sent_delivery(client, db)
    confirmations = fake_sns.hits["/"]
    confirmed = await hooks.post(
        "/webhooks/amazon-ses", content=signed(subscription_confirmation(), fake_sns.signing_key)
    )
    assert confirmed.status_code == 200, confirmed.text
    assert fake_sns.hits["/"] == confirmations + 1  # the SubscribeURL was visited
    bounce = {
        "eventType": "Bounce",
        "mail": {"messageId": "ses-1", "timestamp": "2026-12-01T10:00:00Z",
                 "tags": {"delivery_id": [str(delivery)]}, "destination": ["user0@example.org"]},
        "bounce": {"bounceType": "Permanent", "bounceSubType": "General",
                   "timestamp": "2026-12-01T10:00:01Z", "feedbackId": "fb-1",
                   "bouncedRecipients": [{"emailAddress": "user0@example.org",
                                          "status": "5.1.1", "diagnosticCode": "smtp; 550 5.1.1"}]},
    }  # fmt: skip
    envelope = notification(Message=json.dumps(bounce), MessageId="sns-bounce-1")
    stored = await hooks.post(
        "/webhooks/amazon-ses", content=signed(envelope, fake_sns.signing_key)
    )
    assert stored.status_code == 200, stored.text
    foreign = notification(Message=json.dumps(bounce), TopicArn=TOPIC + "-other")
    refused = await hooks.post(
        "/webhooks/amazon-ses", content=signed(foreign, fake_sns.signing_key)
    )
    assert refused.status_code == 401
    assert await state(db) == ([("bounced", "hard")], "bounced", ["bounced"])


async def test_events_name_the_delivery_campaign_and_subscriber(
    client: httpx.AsyncClient, hooks: httpx.AsyncClient, db: Runtime
) -> None:
    delivery = await sent_delivery(client, db)
    await hooks.post("/webhooks/sendgrid", **sendgrid_request([sendgrid_event("open", delivery)]))
    async with db.database.sessions() as session:
        (row,) = (await session.scalars(select(Event))).all()
        assert (row.delivery_id, row.campaign_id, row.subscriber_id) == (delivery, 1, 1)
        assert await session.scalar(select(func.count()).select_from(Suppression)) == 0
