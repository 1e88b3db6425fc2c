"""The message assembler against the standard library's parser: what goes in comes out, no line
is too long, and no header value can add a header."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime
from email.message import EmailMessage

from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.delivery.mime import MessageHeaders, build_message, message_id

WHEN = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def headers(**fields: object) -> MessageHeaders:
    values: dict[str, object] = {
        "from_address": "news@example.com",
        "to_address": "ann@example.org",
        "subject": "Hello",
        "message_id": message_id(42, "example.com"),
        "date": WHEN,
        "from_name": "Example News",
        "reply_to": "help@example.com",
        "list_unsubscribe_url": "https://example.com/u/abc",
        "list_unsubscribe_mailto": "mailto:unsubscribe@example.com?subject=abc",
        "list_id": "Weekly news <weekly.example.com>",
        "feedback_id": "7:42:campaign:tidings",
    }
    values.update(fields)
    return MessageHeaders(**values)  # type: ignore[arg-type]


def parse(raw: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def parts(message: EmailMessage) -> dict[str, str]:
    """Each part's decoded text, with the CRLF line ends of the wire as newlines."""
    return {
        p.get_content_type(): p.get_content().replace("\r\n", "\n")
        for p in message.walk()
        if not p.is_multipart()
    }


def test_a_multipart_message_parses_back_to_its_headers_and_parts() -> None:
    raw = build_message(headers(), "Hi Ann,\nnews.", "<p>Hi Ann,</p><p>news.</p>")
    message = parse(raw)
    assert message.get_content_type() == "multipart/alternative"
    assert message["Subject"] == "Hello"
    assert message["From"] == "Example News <news@example.com>"
    assert message["To"] == "ann@example.org"
    assert message["Reply-To"] == "help@example.com"
    assert message["Message-ID"] == "<42.delivery@example.com>"
    assert message["Date"].datetime == WHEN
    assert message["List-Unsubscribe"] == (
        "<https://example.com/u/abc>, <mailto:unsubscribe@example.com?subject=abc>"
    )
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["List-Id"] == "Weekly news <weekly.example.com>"
    assert parts(message) == {
        "text/plain": "Hi Ann,\nnews.",
        "text/html": "<p>Hi Ann,</p><p>news.</p>",
    }
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")


def test_a_text_only_message_has_no_multipart() -> None:
    message = parse(build_message(headers(list_unsubscribe_url=None), "only text", None))
    assert message.get_content_type() == "text/plain"
    assert message.get_content() == "only text"
    assert message["List-Unsubscribe-Post"] is None  # one-click needs an https URI
    plain_http = headers(list_unsubscribe_url="http://example.com/u/abc")
    assert parse(build_message(plain_http, "t", None))["List-Unsubscribe-Post"] is None


def test_the_message_id_is_the_same_for_every_attempt_of_a_delivery() -> None:
    assert message_id(42, "example.com") == message_id(42, "example.com")
    assert message_id(42, "example.com") != message_id(43, "example.com")
    first = build_message(headers(), "t", "<p>h</p>")
    assert first == build_message(headers(), "t", "<p>h</p>")


def test_line_breaks_in_any_header_value_cannot_add_a_header() -> None:
    evil = "Hi\r\nBcc: victim@example.net\r\n\r\n<p>injected</p>"
    raw = build_message(
        headers(subject=evil, from_name=evil, reply_to="a@example.com\r\nBcc: x@example.net"),
        "body",
        "<p>body</p>",
    )
    message = parse(raw)
    assert message["Bcc"] is None
    assert "Bcc: victim@example.net" in message["Subject"]  # kept as text, on one line
    assert message["Subject"].startswith("Hi ")
    assert parts(message)["text/html"] == "<p>body</p>"


@settings(max_examples=300)
@given(
    subject=st.text(max_size=300),
    name=st.text(max_size=80),
    text=st.text(max_size=3000),
    html=st.text(max_size=3000),
)
def test_any_content_round_trips_and_no_line_passes_998_octets(
    subject: str, name: str, text: str, html: str
) -> None:
    raw = build_message(headers(subject=subject, from_name=name), text, html)
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    message = parse(raw)
    expected_subject = " ".join(
        subject.translate(dict.fromkeys([*range(32), 127], " ")).split(" ")
    ).strip()
    decoded = str(message["Subject"] or "")
    assert decoded.split() == expected_subject.encode("utf-8", "replace").decode().split()

    def normalized(value: str) -> str:
        value = value.encode("utf-8", "replace").decode()
        return value.replace("\r\n", "\n").replace("\r", "\n")

    got = parts(message)
    assert got["text/plain"].rstrip("\n") == normalized(text).rstrip("\n")
    assert got["text/html"].rstrip("\n") == normalized(html).rstrip("\n")


def encodings(raw: bytes) -> list[str]:
    return [str(p["Content-Transfer-Encoding"]) for p in parse(raw).walk() if not p.is_multipart()]


def test_text_that_already_is_7bit_is_sent_as_it_is_and_the_rest_quoted_printable() -> None:
    plain = build_message(headers(), "Hi Ann,\nnews.", '<p class="x">news</p>\n<p>more</p>')
    assert encodings(plain) == ["7bit", "7bit"]
    assert b'<p class="x">news</p>\r\n<p>more</p>' in plain
    long_line = "<p>" + "x" * 1000 + "</p>"
    for text, html in [("Grüße", "<p>ok</p>"), ("ok", long_line), ("nul \x00 here", "<p>ok</p>")]:
        raw = build_message(headers(), text, html)
        assert "quoted-printable" in encodings(raw)
        assert parts(parse(raw)) == {"text/plain": text, "text/html": html}


def test_a_7bit_body_holding_the_boundary_is_quoted_printable_and_cannot_end_a_part() -> None:
    first = build_message(headers(), "t", "<p>h</p>")
    boundary = parse(first).get_boundary()
    assert boundary is not None
    forged = f"before\n--{boundary}\nContent-Type: text/html\n\n<p>forged</p>\n--{boundary}--"
    raw = build_message(headers(), forged, "<p>h</p>")
    assert encodings(raw) == ["quoted-printable", "7bit"]
    assert parts(parse(raw)) == {"text/plain": forged, "text/html": "<p>h</p>"}
