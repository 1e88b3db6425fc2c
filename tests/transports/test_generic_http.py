"""The generic HTTP JSON transport against a configurable fake JSON API over a real socket: the
body template (placeholders replaced, structure kept, no injection whatever a subject holds),
the status classes, Retry-After and timeouts, and the template checks a provider is saved with."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import replace
from email import message_from_bytes
from typing import Any

import pytest

from tests.fakes.generic_http import TOKEN, FakeHttpApi
from tests.transports.api_messages import DEFAULT_HTML, api_message, outcomes, send_and_close
from tidings.transports import generic_http
from tidings.transports.base import Outcome, OutgoingMessage, SendResult
from tidings.transports.generic_http import GenericHttpTransport, check_body_template

TIMEOUT = 0.5  # seconds: a hang fails the test at once
NASTY_SUBJECT = 'He said "hi" }, {"to": "evil@example.net"} \\ $to {{x}} \u2603'


def message(
    i: int, *, to: str | None = None, subject: str | None = None, html: bool = True
) -> OutgoingMessage:
    return api_message(
        i,
        to=to,
        subject=subject,
        html=DEFAULT_HTML if html else None,
        reply_to="editor@example.com",
        list_unsubscribe_url=f"https://news.example.com/u/{i}",
    )


def settings_of(fake: FakeHttpApi, **more: Any) -> dict[str, Any]:
    return {"url": fake.endpoint, **more}


def open_transport(
    settings: Mapping[str, Any], secrets: Mapping[str, str] | None = None
) -> GenericHttpTransport:
    return generic_http.from_provider(settings, secrets or {"auth_value": TOKEN}, TIMEOUT)


async def send_once(
    settings: Mapping[str, Any],
    batch: Sequence[OutgoingMessage],
    secrets: Mapping[str, str] | None = None,
) -> list[SendResult]:
    return await send_and_close(open_transport(settings, secrets), batch)


@pytest.fixture(scope="module")
def server() -> Iterator[FakeHttpApi]:
    with FakeHttpApi() as running:
        yield running


@pytest.fixture
async def transport(fake: FakeHttpApi) -> AsyncIterator[GenericHttpTransport]:
    sender = open_transport(settings_of(fake))
    yield sender
    await sender.close()


async def test_the_default_template_sends_the_parts_and_headers(
    fake: FakeHttpApi, transport: GenericHttpTransport
) -> None:
    [result] = await transport.send([message(3)])
    assert result.outcome == Outcome.accepted
    assert result.provider_message_id == fake.accepted[0].message_id
    assert fake.bodies() == [
        {
            "from": "news@example.com",
            "to": "reader3@example.org",
            "subject": "Issue 3",
            "html": "<p>Hello reader 3.</p>\n",
            "text": "Hello reader 3.\n",
            "headers": {
                "Message-ID": "<3.delivery@news.example.com>",
                "List-Unsubscribe": "<https://news.example.com/u/3>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            },
        }
    ]


async def test_a_nested_template_keeps_its_structure_and_its_literals() -> None:
    template = {
        "message": {
            "sender": {"email": "$from", "name": "$from_name"},
            "personalizations": [{"to": [{"email": "$to"}], "custom_args": {"d": "$delivery_id"}}],
            "reply_to": "$reply_to",
            "content": ["$text", "$html"],
            "raw": "$raw_base64",
            "message_id": "$message_id",
        },
        "tags": ["newsletter", 3, True, None, "$5 off", "costs $ 10"],
        "$to": "keys are names, never placeholders",
    }
    recipient_at = ("message", "personalizations", 0, "to", 0, "email")
    with FakeHttpApi(required=[recipient_at], recipient_at=recipient_at, status=202) as fake:
        sent = message(9, html=False)
        settings = settings_of(fake, body_template=json.dumps(template))
        [result] = await send_once(settings, [sent])
    assert result.outcome == Outcome.accepted
    [body] = fake.bodies()
    assert body["message"] == {
        "sender": {"email": "news@example.com", "name": "Weekly News"},
        "personalizations": [{"to": [{"email": "reader9@example.org"}], "custom_args": {"d": "9"}}],
        "reply_to": "editor@example.com",
        "content": ["Hello reader 9.\n", None],  # no HTML part: null, not a string
        "raw": base64.b64encode(sent.data).decode(),
        "message_id": "<9.delivery@news.example.com>",
    }
    assert body["tags"] == ["newsletter", 3, True, None, "$5 off", "costs $ 10"]
    assert body["$to"] == "keys are names, never placeholders"
    assert message_from_bytes(base64.b64decode(body["message"]["raw"]))["To"] == sent.recipient


async def test_a_subject_with_quotes_and_braces_arrives_intact_and_injects_nothing(
    fake: FakeHttpApi, transport: GenericHttpTransport
) -> None:
    [result] = await transport.send([message(1, subject=NASTY_SUBJECT)])
    assert result.outcome == Outcome.accepted
    [body] = fake.bodies()
    assert body["subject"] == NASTY_SUBJECT
    assert body["to"] == "reader1@example.org"
    assert sorted(body) == ["from", "headers", "html", "subject", "text", "to"]


async def test_a_line_break_in_a_subject_does_not_reach_a_header(
    fake: FakeHttpApi, transport: GenericHttpTransport
) -> None:
    await transport.send([message(1, subject="Issue 1\r\nBcc: everyone@example.net")])
    assert fake.bodies()[0]["subject"] == "Issue 1  Bcc: everyone@example.net"


async def test_a_message_without_parts_goes_raw_or_fails_clearly(fake: FakeHttpApi) -> None:
    bare = replace(message(4), content=None)
    raw_template = '{"from": "-", "subject": "-", "to": "$to", "raw": "$raw_base64"}'
    [raw] = await send_once(settings_of(fake, body_template=raw_template), [bare])
    [parts] = await send_once(settings_of(fake), [bare])
    assert raw.outcome == Outcome.accepted
    assert base64.b64decode(fake.bodies()[0]["raw"]) == bare.data
    assert parts.outcome == Outcome.transient  # for another provider, or composed again
    assert "composed without its parts" in parts.detail
    assert fake.requests == 1


async def test_a_batch_is_one_request_per_message(
    fake: FakeHttpApi, transport: GenericHttpTransport
) -> None:
    batch = [message(i) for i in range(1, 6)]
    results = await transport.send(batch)
    assert [r.delivery_id for r in results] == [1, 2, 3, 4, 5]
    assert outcomes(results) == [Outcome.accepted] * 5
    assert fake.requests == 5
    assert sorted(fake.recipients()) == sorted(m.recipient for m in batch)
    assert {r.provider_message_id for r in results} == {a.message_id for a in fake.accepted}


async def test_the_answer_id_is_taken_from_message_id_or_absent() -> None:
    with FakeHttpApi(answer_id_key="message_id") as fake:
        [named] = await send_once(settings_of(fake), [message(1)])
    with FakeHttpApi(answer_id_key=None, status=202) as fake:
        [empty] = await send_once(settings_of(fake), [message(1)])
    assert (named.outcome, named.provider_message_id) == (Outcome.accepted, "msg-1")
    assert (empty.outcome, empty.provider_message_id) == (Outcome.accepted, None)


async def test_a_custom_auth_header_carries_the_secret() -> None:
    with FakeHttpApi(auth_header="X-Api-Key", auth_value="k-123") as fake:
        settings = settings_of(fake, auth_header="X-Api-Key")
        [result] = await send_once(settings, [message(1)], {"auth_value": "k-123"})
    assert result.outcome == Outcome.accepted


async def test_wrong_credentials_are_permanent_and_never_shown(fake: FakeHttpApi) -> None:
    wrong = "Bearer wrong-but-secret"
    results = await send_once(settings_of(fake), [message(1), message(2)], {"auth_value": wrong})
    assert outcomes(results) == [Outcome.permanent] * 2
    assert results[0].detail.startswith("401 Unauthorized:")
    assert all(wrong not in repr(r) for r in results)
    assert fake.accepted == []


async def test_a_body_the_api_refuses_is_a_permanent_400(fake: FakeHttpApi) -> None:
    settings = settings_of(fake, body_template='{"to": "$to", "subject": "$subject"}')
    [result] = await send_once(settings, [message(1)])
    assert result.outcome == Outcome.permanent
    assert result.detail == '400 Bad Request: {"message":"missing field from"}'


async def test_a_wrong_url_is_a_permanent_404(fake: FakeHttpApi) -> None:
    [result] = await send_once({"url": fake.url + "/nowhere"}, [message(1)])
    assert result.outcome == Outcome.permanent
    assert result.detail.startswith("404 Not Found")


async def test_a_rate_limit_is_transient_with_its_retry_after(
    fake: FakeHttpApi, transport: GenericHttpTransport
) -> None:
    fake.fail_next(429, retry_after="12")
    [limited] = await transport.send([message(1)])
    [later] = await transport.send([message(1)])
    assert (limited.outcome, limited.retry_after) == (Outcome.transient, 12.0)
    assert later.outcome == Outcome.accepted


@pytest.mark.parametrize("status", [500, 503])
async def test_a_server_error_is_transient(
    fake: FakeHttpApi, transport: GenericHttpTransport, status: int
) -> None:
    fake.fail_next(status)
    [result] = await transport.send([message(1)])
    assert result.outcome == Outcome.transient
    assert fake.accepted == []


async def test_no_answer_within_the_timeout_is_transient(
    fake: FakeHttpApi, transport: GenericHttpTransport
) -> None:
    fake.fail_next(200, delay=TIMEOUT + 0.5)
    [result] = await transport.send([message(1)])
    assert result.outcome == Outcome.transient
    assert result.detail == f"no answer from 127.0.0.1 within {TIMEOUT:g} s"


@pytest.mark.parametrize(
    ("template", "error"),
    [
        ('{"to": "$to",}', "body_template is not JSON: Expecting property name"),
        ('"$to"', "must be a JSON object or array, not str"),
        ("42", "must be a JSON object or array, not int"),
        ('{"to": "$recipient"}', r"unknown placeholder '\$recipient' in body_template; allowed: "),
        ('[{"a": ["$subjet"]}]', r"unknown placeholder '\$subjet'"),
        ('{"s": "News: $subject"}', r"placeholder \$subject inside the text 'News: \$subject'"),
    ],
)
def test_check_body_template_says_what_is_wrong(template: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        check_body_template(template)


def test_an_unknown_placeholder_error_lists_every_allowed_one() -> None:
    with pytest.raises(ValueError) as raised:
        check_body_template('{"x": "$xyz"}')
    for name in ("from", "from_name", "to", "subject", "html", "text", "raw_base64"):
        assert f"${name}" in str(raised.value)
    for name in ("message_id", "delivery_id", "headers", "reply_to"):
        assert f"${name}" in str(raised.value)


def test_valid_templates_pass() -> None:
    check_body_template(generic_http.DEFAULT_BODY_TEMPLATE)
    check_body_template('[{"raw": "$raw_base64", "price": "$5", "note": "$tomorrow at 9"}]')


def test_a_provider_with_a_bad_url_template_or_header_is_refused() -> None:
    with pytest.raises(ValueError, match="setting 'url'"):
        generic_http.from_provider({}, {}, 5)
    with pytest.raises(ValueError, match="http:// or https://"):
        generic_http.from_provider({"url": "ftp://example.com/send"}, {}, 5)
    with pytest.raises(ValueError, match="unknown placeholder"):
        generic_http.from_provider({"url": "https://x.test", "body_template": '{"a": "$b"}'}, {}, 5)
    with pytest.raises(ValueError, match="not a valid HTTP header name"):
        generic_http.from_provider(
            {"url": "https://x.test", "auth_header": "X Key"}, {"auth_value": "k"}, 5
        )
    secret = "Bearer abc\r\nX-Evil: 1"
    with pytest.raises(ValueError, match="control character") as raised:
        generic_http.from_provider({"url": "https://x.test"}, {"auth_value": secret}, 5)
    assert "abc" not in str(raised.value)
