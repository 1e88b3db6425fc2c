"""The SendGrid transport against the fake v3 Mail Send API (tests.fakes.sendgrid) over a real
socket: what arrives, how a batch becomes requests, and how each failure is classified."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import pytest

from tests.fakes.sendgrid import FakeSendGrid
from tests.transports.api_messages import outcomes, send_and_close, this_week
from tidings.transports import sendgrid
from tidings.transports.base import Outcome, OutgoingMessage, SendResult
from tidings.transports.sendgrid import SendGridTransport


def message(
    i: int,
    *,
    recipient: str | None = None,
    text: str = "Hello, reader.",
    html: str | None = "<p>Hello, reader.</p>",
) -> OutgoingMessage:
    """Delivery ``i``: the same parts for every ``i`` unless told, its own headers."""
    return this_week(i, to=recipient, text=text, html=html)


def personalized(i: int) -> OutgoingMessage:
    return message(i, text=f"Hello, reader {i}.", html=f"<p>Hello, reader {i}.</p>")


@pytest.fixture
def fake() -> Iterator[FakeSendGrid]:
    with FakeSendGrid() as server:
        yield server


async def send(
    fake: FakeSendGrid, batch: Sequence[OutgoingMessage], **options: Any
) -> list[SendResult]:
    options.setdefault("api_key", fake.api_key)
    options.setdefault("timeout", 5.0)
    return await send_and_close(SendGridTransport(base_url=fake.url, **options), batch)


async def test_a_message_arrives_with_its_parts_headers_and_delivery_id(fake: FakeSendGrid) -> None:
    (result,) = await send(fake, [message(7)])
    assert result.outcome == Outcome.accepted
    (accepted,) = fake.accepted
    assert result.provider_message_id == accepted.message_id
    mail = accepted.payload
    assert accepted.recipient == "reader7@example.org"
    assert mail["from"] == {"email": "news@example.com", "name": "Weekly News"}
    assert mail["reply_to"] == {"email": "editor@example.com"}
    assert mail["subject"] == "This week"
    assert mail["content"] == [
        {"type": "text/plain", "value": "Hello, reader."},
        {"type": "text/html", "value": "<p>Hello, reader.</p>"},
    ]
    assert mail["headers"] == {
        "Message-ID": "<7.delivery@example.com>",
        "List-Unsubscribe": "<https://news.example.com/unsubscribe/7>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "List-Id": "Weekly news <weekly.example.com>",
    }
    assert mail["custom_args"] == {"tidings_delivery_id": "7"}


async def test_identical_messages_share_a_request_and_personalized_ones_go_alone(
    fake: FakeSendGrid,
) -> None:
    batch = [message(0), personalized(10), message(1), personalized(11), message(2), message(3)]
    results = await send(fake, batch)
    assert [r.delivery_id for r in results] == [0, 10, 1, 11, 2, 3]
    assert set(outcomes(results)) == {Outcome.accepted}
    assert sorted(fake.personalizations_per_request) == [1, 1, 4]
    shared = {r.provider_message_id for r in results if r.delivery_id < 10}
    alone = {r.provider_message_id for r in results if r.delivery_id >= 10}
    assert len(shared) == 1 and len(alone) == 2 and not shared & alone
    # Shared content, yet each recipient got its own unsubscribe link, Message-ID and id.
    by_recipient = {a.recipient: a.payload for a in fake.accepted}
    reader2 = by_recipient["reader2@example.org"]
    assert reader2["headers"]["List-Unsubscribe"] == "<https://news.example.com/unsubscribe/2>"
    assert reader2["headers"]["Message-ID"] == "<2.delivery@example.com>"
    assert reader2["custom_args"] == {"tidings_delivery_id": "2"}
    assert by_recipient["reader11@example.org"]["content"][0]["value"] == "Hello, reader 11."


async def test_more_than_1000_identical_messages_are_split_at_the_documented_limit(
    fake: FakeSendGrid,
) -> None:
    results = await send(fake, [message(i) for i in range(1001)])
    assert set(outcomes(results)) == {Outcome.accepted}
    assert sorted(fake.personalizations_per_request) == [1, 1000]
    assert sorted(fake.recipients()) == sorted(f"reader{i}@example.org" for i in range(1001))


async def test_the_fake_refuses_more_than_1000_personalizations_as_sendgrid_does(
    fake: FakeSendGrid,
) -> None:
    body = {
        "personalizations": [{"to": [{"email": f"r{i}@example.org"}]} for i in range(1001)],
        "from": {"email": "news@example.com"},
        "subject": "Too many",
        "content": [{"type": "text/plain", "value": "Hello."}],
    }
    auth = {"Authorization": f"Bearer {fake.api_key}"}
    async with httpx.AsyncClient(base_url=fake.url, headers=auth) as client:
        response = await client.post("/v3/mail/send", json=body)
    assert response.status_code == 400
    (error,) = response.json()["errors"]
    assert error["field"] == "personalizations"
    assert "limited to 1000 personalizations" in error["message"]
    assert fake.accepted == []


async def test_the_fake_refuses_reserved_headers_and_html_before_text(fake: FakeSendGrid) -> None:
    body = {
        "personalizations": [{"to": [{"email": "r@example.org"}], "headers": {"Reply-To": "x"}}],
        "from": {"email": "news@example.com"},
        "subject": "Wrong",
        "content": [
            {"type": "text/html", "value": "<p>Hi</p>"},
            {"type": "text/plain", "value": "Hi"},
        ],
    }
    auth = {"Authorization": f"Bearer {fake.api_key}"}
    async with httpx.AsyncClient(base_url=fake.url, headers=auth) as client:
        response = await client.post("/v3/mail/send", json=body)
    assert response.status_code == 400
    fields = {error["field"] for error in response.json()["errors"]}
    assert fields == {"personalizations.headers", "content"}


async def test_a_wrong_api_key_fails_permanently_and_the_key_is_not_in_the_detail(
    fake: FakeSendGrid,
) -> None:
    results = await send(fake, [message(1), message(2)], api_key="SG.stolen-or-revoked")
    assert outcomes(results) == [Outcome.permanent, Outcome.permanent]
    assert results[0].detail.startswith("401")
    assert "authorization grant is invalid" in results[0].detail
    assert "SG.stolen-or-revoked" not in results[0].detail
    assert fake.accepted == []


async def test_429_with_retry_after_is_transient_with_its_wait(fake: FakeSendGrid) -> None:
    fake.fail_next(429, retry_after="7")
    (result,) = await send(fake, [message(1)])
    assert result.outcome == Outcome.transient
    assert result.retry_after == 7.0


async def test_429_from_the_rate_limiter_waits_until_its_reset(fake: FakeSendGrid) -> None:
    fake.rate_limit_next(reset_in=30)
    (result,) = await send(fake, [message(1)])
    assert result.outcome == Outcome.transient
    assert result.retry_after is not None and 28 <= result.retry_after <= 30
    assert "too many requests" in result.detail


@pytest.mark.parametrize("status", [500, 503])
async def test_server_errors_are_transient(fake: FakeSendGrid, status: int) -> None:
    fake.fail_next(status)
    results = await send(fake, [message(1), message(2)])
    assert outcomes(results) == [Outcome.transient, Outcome.transient]
    assert results[0].retry_after is None


async def test_no_answer_within_the_timeout_is_transient(fake: FakeSendGrid) -> None:
    fake.fail_next(503, delay=0.6)
    started = time.monotonic()
    (result,) = await send(fake, [message(1)], timeout=0.2)
    assert result.outcome == Outcome.transient
    assert result.detail.startswith("no answer from 127.0.0.1 within 0.2 s")
    assert time.monotonic() - started < 0.5


async def test_a_message_without_a_body_fails_alone_and_the_rest_is_sent(
    fake: FakeSendGrid,
) -> None:
    batch = [message(1), message(2, text="", html=None), message(3)]
    results = await send(fake, batch)
    assert outcomes(results) == [Outcome.accepted, Outcome.permanent, Outcome.accepted]
    assert "without a body" in results[1].detail
    assert fake.personalizations_per_request == [2]


async def test_a_non_ascii_recipient_goes_in_a_request_of_its_own(fake: FakeSendGrid) -> None:
    batch = [message(1), message(2, recipient="jürgen@example.org"), message(3)]
    results = await send(fake, batch)
    assert set(outcomes(results)) == {Outcome.accepted}
    assert sorted(fake.personalizations_per_request) == [1, 2]


async def test_from_provider_takes_base_url_and_defaults_to_production(fake: FakeSendGrid) -> None:
    transport = sendgrid.from_provider({"base_url": fake.url + "/"}, {"api_key": fake.api_key}, 5)
    try:
        (result,) = await transport.send([message(1)])
    finally:
        await transport.close()
    assert result.outcome == Outcome.accepted
    production = sendgrid.from_provider({}, {"api_key": "SG.x"}, 5)
    assert str(production.client.base_url) == "https://api.sendgrid.com"
    await production.close()
    with pytest.raises(ValueError, match="api_key"):
        sendgrid.from_provider({}, {}, 5)
