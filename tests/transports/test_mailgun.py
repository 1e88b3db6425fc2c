"""The Mailgun transport against the fake Mailgun API over a real socket: what arrives (the MIME
byte for byte, the recipient, our delivery id as a user variable) and how each of Mailgun's
answers becomes accepted, transient or permanent."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.fakes.mailgun import API_KEY, DOMAIN, FakeMailgun
from tests.transports.api_messages import api_message, outcomes
from tidings.transports import mailgun
from tidings.transports.base import Outcome, OutgoingMessage
from tidings.transports.mailgun import MailgunTransport

SENDER = "bounces@news.example.com"
TIMEOUT = 0.5  # seconds: a hang fails the test at once


def message(i: int, to: str | None = None) -> OutgoingMessage:
    """A newsletter for reader i, as the outbox hands it over: bytes and parts."""
    return api_message(
        i,
        to=to,
        subject=f"Issue {i}: “quotes” & {{braces}}",
        sender=SENDER,
        list_unsubscribe_url=f"https://news.example.com/u/{i}",
        list_unsubscribe_mailto=f"mailto:unsubscribe+{i}@news.example.com",
    )


@pytest.fixture(scope="module")
def server() -> Iterator[FakeMailgun]:
    with FakeMailgun() as running:
        yield running


@pytest.fixture
async def transport(fake: FakeMailgun) -> AsyncIterator[MailgunTransport]:
    settings = {"domain": DOMAIN, "base_url": fake.url}
    sender = mailgun.from_provider(settings, {"api_key": API_KEY}, TIMEOUT)
    yield sender
    await sender.close()


async def test_a_message_arrives_byte_for_byte_with_its_delivery_id(
    fake: FakeMailgun, transport: MailgunTransport
) -> None:
    sent = message(7)
    [result] = await transport.send([sent])
    assert result.outcome == Outcome.accepted
    assert result.detail == "Queued. Thank you."
    [received] = fake.received()
    assert result.provider_message_id == fake.accepted[0].message_id.strip("<>")
    assert received.to == "reader7@example.org"
    assert received.raw == sent.data  # our headers and a DKIM signature survive untouched
    assert received.variables == {"tidings_delivery_id": "7"}
    mime = received.mime
    assert mime["To"] == "reader7@example.org"
    assert mime["Subject"] == "Issue 7: “quotes” & {braces}"
    assert mime["Message-ID"] == "<7.delivery@news.example.com>"
    assert mime["List-Unsubscribe"] == (
        "<https://news.example.com/u/7>, <mailto:unsubscribe+7@news.example.com>"
    )
    assert mime["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    text, html = (mime.get_body(kind) for kind in (("plain",), ("html",)))
    assert text is not None and text.get_content() == "Hello reader 7.\r\n"
    assert html is not None and html.get_content() == "<p>Hello reader 7.</p>\r\n"


async def test_a_batch_is_one_call_per_message_each_with_its_own_result(
    fake: FakeMailgun, transport: MailgunTransport
) -> None:
    batch = [message(i) for i in range(1, 7)]
    results = await transport.send(batch)
    assert [r.delivery_id for r in results] == list(range(1, 7))
    assert outcomes(results) == [Outcome.accepted] * 6
    assert fake.requests == 6
    assert sorted(fake.recipients()) == sorted(m.recipient for m in batch)
    by_recipient = {r.to: r.variables["tidings_delivery_id"] for r in fake.received()}
    assert by_recipient == {m.recipient: str(m.delivery_id) for m in batch}
    assert len({r.provider_message_id for r in results}) == 6


async def test_a_wrong_api_key_is_permanent_and_never_shown(fake: FakeMailgun) -> None:
    wrong = "key-wrong-but-secret"
    sender = mailgun.from_provider({"domain": DOMAIN, "base_url": fake.url}, {"api_key": wrong}, 1)
    results = await sender.send([message(1), message(2)])
    await sender.close()
    assert outcomes(results) == [Outcome.permanent] * 2
    assert results[0].detail == "401 Unauthorized: Forbidden"
    assert all(wrong not in repr(r) for r in results)
    assert fake.accepted == []


async def test_an_unknown_domain_is_permanent(fake: FakeMailgun) -> None:
    settings = {"domain": "other.example.com", "base_url": fake.url}
    sender = mailgun.from_provider(settings, {"api_key": API_KEY}, TIMEOUT)
    [result] = await sender.send([message(1)])
    await sender.close()
    assert result.outcome == Outcome.permanent
    assert result.detail.startswith("404 Not Found:")
    assert "Domain not found: other.example.com" in result.detail


async def test_an_invalid_recipient_is_a_permanent_400_and_the_rest_goes(
    fake: FakeMailgun, transport: MailgunTransport
) -> None:
    results = await transport.send([message(1, to="not-an-address"), message(2)])
    assert outcomes(results) == [Outcome.permanent, Outcome.accepted]
    assert results[0].detail.startswith("400 Bad Request:")
    assert "not a valid address" in results[0].detail
    assert fake.recipients() == ["reader2@example.org"]


async def test_a_message_over_the_size_limit_is_permanent() -> None:
    sent = message(1)
    with FakeMailgun(max_message_bytes=len(sent.data) - 1) as fake:
        sender = MailgunTransport(api_key=API_KEY, domain=DOMAIN, base_url=fake.url)
        [result] = await sender.send([sent])
        await sender.close()
    assert result.outcome == Outcome.permanent
    assert result.detail.startswith("413 ")


async def test_a_rate_limit_is_transient_with_mailguns_retry_after(
    fake: FakeMailgun, transport: MailgunTransport
) -> None:
    fake.fail_next(429, retry_after="7", body={"message": "Too many requests"})
    results = await transport.send([message(1)])
    assert outcomes(results) == [Outcome.transient]
    assert results[0].retry_after == 7.0
    assert "Too many requests" in results[0].detail
    assert outcomes(await transport.send([message(1)])) == [Outcome.accepted]


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_a_server_error_is_transient(
    fake: FakeMailgun, transport: MailgunTransport, status: int
) -> None:
    fake.fail_next(status)
    [result] = await transport.send([message(1)])
    assert result.outcome == Outcome.transient
    assert result.retry_after is None
    assert fake.accepted == []


async def test_no_answer_within_the_timeout_is_transient(
    fake: FakeMailgun, transport: MailgunTransport
) -> None:
    fake.fail_next(200, delay=TIMEOUT + 0.5)
    [result] = await transport.send([message(1)])
    assert result.outcome == Outcome.transient
    assert result.detail == f"no answer from 127.0.0.1 within {TIMEOUT:g} s"


@pytest.mark.parametrize(
    ("settings", "url"),
    [
        ({}, "https://api.mailgun.net"),
        ({"region": "us"}, "https://api.mailgun.net"),
        ({"region": "EU"}, "https://api.eu.mailgun.net"),
        ({"region": "eu", "base_url": "http://proxy.internal:8080/"}, "http://proxy.internal:8080"),
    ],
)
async def test_the_region_picks_the_api_host_and_base_url_overrides_it(
    settings: dict[str, str], url: str
) -> None:
    sender = mailgun.from_provider({"domain": DOMAIN, **settings}, {"api_key": API_KEY}, 5)
    request = sender.build_request([message(1)])
    await sender.close()
    assert str(request.url) == f"{url}/v3/{DOMAIN}/messages.mime"
    assert API_KEY not in str(request.url)


def test_a_provider_without_key_domain_or_a_known_region_is_refused() -> None:
    with pytest.raises(ValueError, match="api_key"):
        mailgun.from_provider({"domain": DOMAIN}, {}, 5)
    with pytest.raises(ValueError, match="domain"):
        mailgun.from_provider({}, {"api_key": API_KEY}, 5)
    with pytest.raises(ValueError, match=r"unknown Mailgun region 'ap'; use one of \['eu', 'us'\]"):
        mailgun.from_provider({"domain": DOMAIN, "region": "ap"}, {"api_key": API_KEY}, 5)
