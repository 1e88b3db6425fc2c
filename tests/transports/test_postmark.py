"""The Postmark transport against the fake batch API (tests.fakes.postmark) over a real socket:
what arrives, how a batch is cut, per-message ErrorCodes, and how each failure is classified."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import pytest

from tests.fakes.postmark import FakePostmark
from tests.transports.api_messages import outcomes, send_and_close, this_week
from tidings.transports import postmark
from tidings.transports.base import Outcome, OutgoingMessage, SendResult
from tidings.transports.postmark import PostmarkTransport

INACTIVE = "bounced@example.org"


def message(
    i: int, *, recipient: str | None = None, from_name: str = "Weekly News"
) -> OutgoingMessage:
    """Delivery ``i``, rendered for its recipient (its own body, unsubscribe link, Message-ID)."""
    text, html = f"Hello, reader {i}.", f"<p>Hello, reader {i}.</p>"
    return this_week(i, to=recipient, from_name=from_name, text=text, html=html)


@pytest.fixture
def fake() -> Iterator[FakePostmark]:
    with FakePostmark(inactive={INACTIVE}) as server:
        yield server


async def send(
    fake: FakePostmark, batch: Sequence[OutgoingMessage], **options: Any
) -> list[SendResult]:
    options.setdefault("server_token", fake.server_token)
    options.setdefault("timeout", 5.0)
    return await send_and_close(PostmarkTransport(base_url=fake.url, **options), batch)


async def test_a_message_arrives_with_its_fields_headers_stream_and_delivery_id(
    fake: FakePostmark,
) -> None:
    (result,) = await send(fake, [message(7)])
    assert result.outcome == Outcome.accepted
    (accepted,) = fake.accepted
    assert result.provider_message_id == accepted.message_id
    sent = accepted.payload
    assert accepted.recipient == "reader7@example.org"
    assert sent["From"] == "Weekly News <news@example.com>"
    assert sent["To"] == "reader7@example.org"
    assert sent["ReplyTo"] == "editor@example.com"
    assert sent["Subject"] == "This week"
    assert sent["TextBody"] == "Hello, reader 7."
    assert sent["HtmlBody"] == "<p>Hello, reader 7.</p>"
    assert sent["Headers"] == [
        {"Name": "Message-ID", "Value": "<7.delivery@example.com>"},
        {"Name": "List-Unsubscribe", "Value": "<https://news.example.com/unsubscribe/7>"},
        {"Name": "List-Unsubscribe-Post", "Value": "List-Unsubscribe=One-Click"},
        {"Name": "List-Id", "Value": "Weekly news <weekly.example.com>"},
    ]
    assert sent["MessageStream"] == "broadcast"
    assert sent["Metadata"] == {"tidings_delivery_id": "7"}


async def test_a_batch_over_500_is_cut_into_calls_of_at_most_500(fake: FakePostmark) -> None:
    results = await send(fake, [message(i) for i in range(1001)])
    assert [r.delivery_id for r in results] == list(range(1001))
    assert set(outcomes(results)) == {Outcome.accepted}
    assert sorted(fake.batch_sizes) == [1, 500, 500]
    assert len({r.provider_message_id for r in results}) == 1001


async def test_the_fake_refuses_501_messages_with_error_code_410(fake: FakePostmark) -> None:
    body = [
        {"From": "news@example.com", "To": f"r{i}@example.org", "TextBody": "Hi"}
        for i in range(501)
    ]
    headers = {"X-Postmark-Server-Token": fake.server_token, "Accept": "application/json"}
    async with httpx.AsyncClient(base_url=fake.url, headers=headers) as client:
        response = await client.post("/email/batch", json=body)
    assert response.status_code == 422
    assert response.json()["ErrorCode"] == 410
    assert fake.accepted == []


async def test_inactive_and_invalid_recipients_fail_alone_and_the_rest_is_accepted(
    fake: FakePostmark,
) -> None:
    batch = [
        message(1),
        message(2, recipient=INACTIVE),
        message(3),
        message(4, recipient="no-at-sign.example.org"),
        message(5),
    ]
    results = await send(fake, batch)
    assert outcomes(results) == [
        Outcome.accepted,
        Outcome.permanent,
        Outcome.accepted,
        Outcome.permanent,
        Outcome.accepted,
    ]
    assert results[1].detail.startswith("Postmark ErrorCode 406: You tried to send")
    assert results[3].detail.startswith("Postmark ErrorCode 300: ")
    assert results[1].provider_message_id is None
    assert fake.recipients() == [f"reader{i}@example.org" for i in (1, 3, 5)]


async def test_a_wrong_server_token_fails_permanently_and_is_not_in_the_detail(
    fake: FakePostmark,
) -> None:
    results = await send(fake, [message(1), message(2)], server_token="not-the-token")
    assert outcomes(results) == [Outcome.permanent, Outcome.permanent]
    assert results[0].detail.startswith("401")
    assert '"ErrorCode":10' in results[0].detail.replace(" ", "")
    assert "not-the-token" not in results[0].detail
    assert fake.accepted == []


async def test_429_with_retry_after_is_transient_with_its_wait(fake: FakePostmark) -> None:
    fake.fail_next(429, retry_after="12", body={"ErrorCode": 429, "Message": "Rate limit exceeded"})
    (result,) = await send(fake, [message(1)])
    assert result.outcome == Outcome.transient
    assert result.retry_after == 12.0


@pytest.mark.parametrize("status", [500, 503])
async def test_server_errors_are_transient(fake: FakePostmark, status: int) -> None:
    fake.fail_next(status)
    results = await send(fake, [message(1), message(2)])
    assert outcomes(results) == [Outcome.transient, Outcome.transient]


async def test_a_422_is_decided_by_its_error_code(fake: FakePostmark) -> None:
    fake.fail_next(422, body={"ErrorCode": 300, "Message": "Invalid email request"})
    fake.fail_next(422, body={"ErrorCode": 100, "Message": "Maintenance"})
    assert outcomes(await send(fake, [message(1)])) == [Outcome.permanent]
    assert outcomes(await send(fake, [message(1)])) == [Outcome.transient]


async def test_no_answer_within_the_timeout_is_transient(fake: FakePostmark) -> None:
    fake.fail_next(503, delay=0.6)
    started = time.monotonic()
    (result,) = await send(fake, [message(1)], timeout=0.2)
    assert result.outcome == Outcome.transient
    assert result.detail.startswith("no answer from 127.0.0.1 within 0.2 s")
    assert time.monotonic() - started < 0.5


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        (0, Outcome.accepted),
        (100, Outcome.transient),  # maintenance
        (429, Outcome.transient),  # rate limit exceeded
        (10, Outcome.permanent),  # bad or missing server token
        (300, Outcome.permanent),  # invalid email request
        (406, Outcome.permanent),  # inactive recipient
    ],
)
def test_each_documented_error_code_has_its_outcome(code: int, outcome: Outcome) -> None:
    answer = {"ErrorCode": code, "Message": "m", "MessageID": "id"}
    assert postmark.message_result(message(1), answer).outcome == outcome


async def test_a_sender_name_with_punctuation_is_quoted(fake: FakePostmark) -> None:
    (result,) = await send(fake, [message(1, from_name='Weekly "News", Inc.')])
    assert result.outcome == Outcome.accepted
    assert fake.accepted[0].payload["From"] == '"Weekly \\"News\\", Inc." <news@example.com>'


async def test_from_provider_takes_stream_and_base_url_and_defaults_to_production(
    fake: FakePostmark,
) -> None:
    settings = {"message_stream": "newsletters", "base_url": fake.url}
    transport = postmark.from_provider(settings, {"server_token": fake.server_token}, 5)
    try:
        (result,) = await transport.send([message(1)])
    finally:
        await transport.close()
    assert result.outcome == Outcome.accepted
    assert fake.accepted[0].payload["MessageStream"] == "newsletters"
    production = postmark.from_provider({}, {"server_token": "t"}, 5)
    assert str(production.client.base_url) == "https://api.postmarkapp.com"
    assert production.message_stream == "broadcast"
    await production.close()
    with pytest.raises(ValueError, match="server_token"):
        postmark.from_provider({}, {}, 5)
