"""The Azure Communication Services Email transport against the fake resource of
tests/fakes/azure.py over real sockets: signed sends, operations followed to their end,
refusals, throttling, timeouts and the Operation-Id that makes a resend name the same send."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.fakes.azure import FakeAzureEmail
from tests.transports.api_messages import api_message, send_and_close
from tidings.delivery.mime import MessageContent
from tidings.transports.azure import (
    AzureEmailTransport,
    delivery_of_operation,
    from_provider,
    operation_id,
    signed_headers,
)
from tidings.transports.base import Outcome, OutgoingMessage, SendResult

# A 32-byte key, base64 as the portal shows it ("tidings-test-access-key-32bytes!").
ACCESS_KEY = "dGlkaW5ncy10ZXN0LWFjY2Vzcy1rZXktMzJieXRlcyE="
OTHER_KEY = base64.b64encode(b"someone-else's-access-key-32byte").decode()
SENT_AT = datetime(2024, 1, 15, 10, 0, tzinfo=UTC)


def message(i: int, *, html: str | None = None) -> OutgoingMessage:
    return api_message(
        i,
        subject=f"Issue {i}: what happened",
        html=html if html is not None else f"<p>Hello reader {i}.</p>",
        sender="bounces@example.com",
        domain="example.com",
        date=SENT_AT,
        reply_to="editor@example.com",
        list_unsubscribe_url=f"https://example.com/u/{i}",
        list_unsubscribe_mailto=f"mailto:unsubscribe+{i}@example.com",
        list_id="Weekly news <weekly.example.com>",
        feedback_id=f"{i}:weekly:tidings",
    )


@pytest.fixture(scope="module")
def server() -> Iterator[FakeAzureEmail]:
    with FakeAzureEmail(ACCESS_KEY) as started:
        yield started


def transport(
    fake: FakeAzureEmail, key: str = ACCESS_KEY, timeout: float = 3.0
) -> AzureEmailTransport:
    azure = from_provider({"endpoint": fake.url + "/"}, {"access_key": key}, timeout)
    azure.default_poll_interval = 0.1  # where Azure names no Retry-After: not a second a poll
    return azure


async def send(azure: AzureEmailTransport, *messages: OutgoingMessage) -> list[SendResult]:
    return await send_and_close(azure, messages)


# Sending ------------------------------------------------------------------------------------


async def test_message_arrives_and_its_operation_is_followed_to_succeeded(
    fake: FakeAzureEmail,
) -> None:
    [result] = await send(transport(fake), message(1))

    assert result.outcome == Outcome.accepted, result.detail
    assert result.detail == ""
    [accepted] = fake.accepted
    assert result.provider_message_id == accepted.message_id
    assert fake.operations[accepted.message_id].polls == fake.polls_to_finish == 2
    payload = accepted.payload
    assert accepted.recipient == "reader1@example.org"
    assert payload["senderAddress"] == "news@example.com"
    assert payload["recipients"] == {"to": [{"address": "reader1@example.org"}]}
    assert payload["content"] == {
        "subject": "Issue 1: what happened",
        "plainText": "Hello reader 1.\n",
        "html": "<p>Hello reader 1.</p>",
    }
    assert payload["replyTo"] == [{"address": "editor@example.com"}]
    assert payload["userEngagementTrackingDisabled"] is True
    assert payload["headers"] == {
        "Message-ID": "<1.delivery@example.com>",
        "List-Unsubscribe": "<https://example.com/u/1>, <mailto:unsubscribe+1@example.com>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "List-Id": "Weekly news <weekly.example.com>",
        "Feedback-ID": "1:weekly:tidings",
    }


async def test_several_messages_each_start_their_own_operation(fake: FakeAzureEmail) -> None:
    results = await send(transport(fake), *(message(i) for i in range(1, 6)))

    assert [r.delivery_id for r in results] == [1, 2, 3, 4, 5]
    assert all(r.outcome == Outcome.accepted for r in results), results
    assert sorted(fake.recipients()) == [f"reader{i}@example.org" for i in range(1, 6)]
    ids = {r.provider_message_id for r in results}
    assert ids == set(fake.operations) and len(ids) == 5
    assert all(op.polls == 2 for op in fake.operations.values())


async def test_text_only_message_sends_no_html(fake: FakeAzureEmail) -> None:
    only_text = message(1)
    assert only_text.content is not None
    content = MessageContent(only_text.content.headers, only_text.content.text, None)
    only_text = OutgoingMessage(1, only_text.sender, only_text.recipient, b"", content)

    [result] = await send(transport(fake), only_text)

    assert result.outcome == Outcome.accepted, result.detail
    assert "html" not in fake.accepted[0].payload["content"]


async def test_poll_waits_as_long_as_retry_after_says(fake: FakeAzureEmail) -> None:
    fake.retry_after = "1"
    fake.polls_to_finish = 1
    started = time.monotonic()

    [result] = await send(transport(fake), message(1))

    assert result.outcome == Outcome.accepted, result.detail
    assert time.monotonic() - started >= 0.9  # the 202's Retry-After: 1 before the first poll


async def test_operation_still_running_when_time_is_up_counts_as_accepted(
    fake: FakeAzureEmail,
) -> None:
    fake.polls_to_finish = 1_000

    [result] = await send(transport(fake, timeout=0.6), message(1))

    assert result.outcome == Outcome.accepted
    assert result.provider_message_id == fake.accepted[0].message_id
    assert "still Running after 0.6 s" in result.detail
    assert fake.operations[result.provider_message_id].polls >= 2


# Refusals ------------------------------------------------------------------------------------


async def test_wrong_access_key_is_permanent_and_not_in_the_detail(fake: FakeAzureEmail) -> None:
    [result] = await send(transport(fake, key=OTHER_KEY), message(1))

    assert result.outcome == Outcome.permanent
    assert result.detail.startswith("401 Unauthorized: Denied: ")
    assert "signature does not match" in result.detail
    assert OTHER_KEY not in result.detail and ACCESS_KEY not in result.detail
    assert fake.accepted == []


async def test_failed_operation_is_permanent_with_azures_error(fake: FakeAzureEmail) -> None:
    fake.fail_recipient("reader2@example.org")

    results = await send(transport(fake), message(1), message(2))

    assert [r.outcome for r in results] == [Outcome.accepted, Outcome.permanent]
    assert results[1].detail == (
        "Failed: EmailDropped: Email was dropped after several attempts to deliver."
    )
    assert results[1].provider_message_id in fake.operations


async def test_a_message_composed_without_parts_is_transient(fake: FakeAzureEmail) -> None:
    bare = OutgoingMessage(1, "bounces@example.com", "reader1@example.org", b"raw MIME")

    [result] = await send(transport(fake), bare)

    assert result.outcome == Outcome.transient  # for another provider, or composed again
    assert "parts" in result.detail
    assert fake.requests == 0


# Throttling, outages, timeouts ---------------------------------------------------------------


async def test_throttled_send_is_transient_with_retry_after(fake: FakeAzureEmail) -> None:
    error = {"error": {"code": "TooManyRequests", "message": "Rate limit exceeded."}}
    fake.fail_next(429, retry_after="7", body=error)

    [result] = await send(transport(fake), message(1))

    assert result.outcome == Outcome.transient
    assert result.retry_after == 7.0
    assert result.detail == "429 Too Many Requests: TooManyRequests: Rate limit exceeded."
    assert fake.accepted == []


async def test_server_error_is_transient(fake: FakeAzureEmail) -> None:
    fake.fail_next(503)

    [result] = await send(transport(fake), message(1))

    assert result.outcome == Outcome.transient
    assert result.detail.startswith("503 Service Unavailable")
    assert result.retry_after is None


async def test_no_answer_within_the_timeout_is_transient(fake: FakeAzureEmail) -> None:
    fake.fail_next(202, delay=1.0)

    [result] = await send(transport(fake, timeout=0.3), message(1))

    assert result.outcome == Outcome.transient
    assert result.detail == "no answer from 127.0.0.1 within 0.3 s"


async def test_status_poll_outage_does_not_undo_an_accepted_send(
    fake: FakeAzureEmail, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.polls_to_finish = 1
    azure = transport(fake)
    original_poll = azure._poll

    async def poll_after_an_outage(url: str) -> httpx.Response | None:
        if fake.requests == 1:  # only the send so far: the first poll meets a 503
            fake.fail_next(503)
        return await original_poll(url)

    monkeypatch.setattr(azure, "_poll", poll_after_an_outage)
    [result] = await send(azure, message(1))

    assert result.outcome == Outcome.accepted, result.detail
    assert result.detail == ""
    assert fake.requests == 3  # the send, the refused poll, the poll that saw Succeeded


# Idempotency ---------------------------------------------------------------------------------


async def test_same_delivery_sent_twice_carries_the_same_operation_id(
    fake: FakeAzureEmail,
) -> None:
    first = await send(transport(fake), message(1))
    again = await send(transport(fake), message(1), message(2))

    # The second send's two requests go at once, in either order.
    first_id, later = fake.operation_ids[0], fake.operation_ids[1:]
    assert later.count(first_id) == 1 and len(set(later)) == 2
    assert first[0].provider_message_id == again[0].provider_message_id == fake.operation_ids[0]
    assert fake.recipients() == ["reader1@example.org", "reader2@example.org"]  # not twice


def test_operation_id_is_a_uuid_of_the_delivery_and_its_message_id() -> None:
    one, same, other = message(1), message(1, html="<p>Edited.</p>"), message(2)
    assert one.content and same.content and other.content
    first = operation_id(one, one.content)

    assert first == operation_id(same, same.content)  # the body is not part of it
    assert first != operation_id(other, other.content)
    assert uuid.UUID(first).version == 8  # Azure wants a UUID; ours is derived, not random
    assert delivery_of_operation(first) == 1  # and an Event Grid event names its delivery
    assert delivery_of_operation(operation_id(other, other.content)) == 2
    assert delivery_of_operation(str(uuid.uuid4())) is None
    assert delivery_of_operation("not a uuid") is None


async def test_conflict_on_a_known_operation_reports_that_operation(fake: FakeAzureEmail) -> None:
    [first] = await send(transport(fake), message(1))
    conflict = {"error": {"code": "Conflict", "message": "Operation already exists."}}
    fake.fail_next(409, body=conflict)

    [again] = await send(transport(fake), message(1))

    assert again.outcome == Outcome.accepted, again.detail
    assert again.provider_message_id == first.provider_message_id
    assert len(fake.accepted) == 1


async def test_conflict_on_an_unknown_operation_is_permanent(fake: FakeAzureEmail) -> None:
    conflict = {"error": {"code": "Conflict", "message": "Operation already exists."}}
    fake.fail_next(409, body=conflict)

    [result] = await send(transport(fake), message(1))

    assert result.outcome == Outcome.permanent
    assert result.detail == "409 Conflict: Conflict: Operation already exists."


async def test_status_is_never_asked_of_a_host_other_than_the_resource() -> None:
    azure = from_provider(
        {"endpoint": "https://myres.communication.azure.com"}, {"access_key": ACCESS_KEY}, 1.0
    )
    try:
        own = "https://myres.communication.azure.com/emails/operations/a?api-version=2023-03-31"
        foreign = "https://elsewhere.example/emails/operations/a?api-version=2023-03-31"

        assert azure._status_url("a", own) == own
        assert azure._status_url("a/../b", foreign) == (
            "https://myres.communication.azure.com/emails/operations/a%2F..%2Fb"
            "?api-version=2023-03-31"
        )
    finally:
        await azure.close()


# Signing --------------------------------------------------------------------------------------


def test_signature_matches_a_vector_computed_with_openssl() -> None:
    """Expected values from the openssl CLI, independent of Python's hmac:
    printf '%s' "$BODY" | openssl dgst -sha256 -binary | base64, then the string to sign
    piped to openssl dgst -sha256 -mac HMAC -macopt hexkey:<key hex> -binary | base64."""
    headers = signed_headers(
        "POST",
        "/emails:send?api-version=2023-03-31",
        "myres.communication.azure.com",
        b'{"senderAddress":"news@example.com"}',
        base64.b64decode(ACCESS_KEY),
        SENT_AT,
    )

    assert headers == {
        "x-ms-date": "Mon, 15 Jan 2024 10:00:00 GMT",
        "x-ms-content-sha256": "9TGV+LXnlUNyGo22bRVSsIhvtmaQo20F7Zb44dwOl8U=",
        "Authorization": "HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256"
        "&Signature=WZc+5UfJNQ9ENsPszivFXW/MVEJUOrg35WwC5Lu5P/s=",
    }


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client() as shared:  # a client takes 0.1 s to make (its TLS context)
        yield shared


def signed_post(
    client: httpx.Client,
    fake: FakeAzureEmail,
    body: bytes,
    *,
    sent_body: bytes | None = None,
    **changes: Any,
) -> httpx.Response:
    """A send signed for ``body``; ``sent_body`` goes on the wire instead (tampering)."""
    path = changes.pop("path", "/emails:send?api-version=2023-03-31")
    when = changes.pop("when", datetime.now(UTC))
    host = fake.url.removeprefix("http://")
    key = base64.b64decode(ACCESS_KEY)
    headers = signed_headers("POST", path, host, body, key, when) | changes
    return client.post(fake.url + path, content=sent_body or body, headers=headers)


GOOD_BODY = (
    b'{"senderAddress":"news@example.com","recipients":{"to":[{"address":"a@example.org"}]},'
    b'"content":{"subject":"Hi","plainText":"Hello"}}'
)


def test_fake_accepts_a_well_signed_send(client: httpx.Client, fake: FakeAzureEmail) -> None:
    response = signed_post(client, fake, GOOD_BODY)

    assert response.status_code == 202, response.text
    assert response.headers["Operation-Location"].startswith(fake.url + "/emails/operations/")


@pytest.mark.parametrize(
    ("change", "status", "says"),
    [
        ({"sent_body": GOOD_BODY.replace(b"Hello", b"Hellx")}, 401, "not the hash of the body"),
        ({"x-ms-content-sha256": "", "sent_body": b"{}"}, 401, "not the hash of the body"),
        ({"when": datetime.now(UTC) - timedelta(minutes=20)}, 401, "within 15 minutes"),
        ({"path": "/emails:send"}, 400, "MissingApiVersionParameter"),
        ({"path": "/emails:send?api-version=2021-10-01-preview"}, 400, "UnsupportedApiVersion"),
        ({"Authorization": "HMAC-SHA256 SignedHeaders=host&Signature=x"}, 401, "HMAC-SHA256"),
    ],
)
def test_fake_refuses_what_azure_refuses(
    client: httpx.Client, fake: FakeAzureEmail, change: dict[str, Any], status: int, says: str
) -> None:
    response = signed_post(client, fake, GOOD_BODY, **change)

    assert response.status_code == status
    assert says in response.text
    assert fake.accepted == []


def test_fake_refuses_a_body_the_signature_was_recomputed_for_without_the_key(
    client: httpx.Client,
    fake: FakeAzureEmail,
) -> None:
    tampered = GOOD_BODY.replace(b"Hello", b"Hellx")
    honest = signed_headers(
        "POST",
        "/emails:send?api-version=2023-03-31",
        fake.url.removeprefix("http://"),
        tampered,
        b"not the key",
        datetime.now(UTC),
    )

    response = signed_post(client, fake, GOOD_BODY, sent_body=tampered, **honest)

    assert response.status_code == 401
    assert "signature does not match" in response.text


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (
            b'{"recipients":{"to":[{"address":"a@example.org"}]},"content":{"subject":"x"}}',
            "sender",
        ),
        (b'{"senderAddress":"n@example.com","content":{"subject":"x","html":"y"}}', "recipients"),
        (
            b'{"senderAddress":"n@example.com","recipients":{"to":[{"address":"a@example.org"}]},'
            b'"content":{"plainText":"y"}}',
            "subject",
        ),
        (
            b'{"senderAddress":"n@example.com","recipients":{"to":[{"address":"a@example.org"}]},'
            b'"content":{"subject":"x","plaintext":"y"}}',
            "content must hold only",
        ),
    ],
)
def test_fake_refuses_a_body_without_required_fields(
    client: httpx.Client, fake: FakeAzureEmail, body: bytes, says: str
) -> None:
    response = signed_post(client, fake, body)

    assert response.status_code == 400
    assert says in response.text


# Configuration --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "secrets", "says"),
    [
        (
            {"endpoint": "https://myres.communication.azure.com"},
            {"access_key": "not base64!"},
            "key",
        ),
        ({"endpoint": "myres.communication.azure.com"}, {"access_key": ACCESS_KEY}, "endpoint"),
        ({"endpoint": "ftp://myres"}, {"access_key": ACCESS_KEY}, "endpoint"),
        ({}, {"access_key": ACCESS_KEY}, "endpoint"),
        ({"endpoint": "https://my res\x00"}, {"access_key": ACCESS_KEY}, "endpoint"),
        ({"endpoint": "https://myres.communication.azure.com"}, {}, "access_key"),
    ],
)
def test_provider_with_a_bad_endpoint_or_key_is_refused(
    settings: dict[str, str], secrets: dict[str, str], says: str
) -> None:
    with pytest.raises(ValueError, match=says) as refused:
        from_provider(settings, secrets, 5.0)
    assert secrets.get("access_key", "<none>") not in str(refused.value)
