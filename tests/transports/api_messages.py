"""What the provider API transport tests share: the messages they send (rendered as the outbox
hands them over, bytes and parts), sending one batch on a transport that is then closed, and
the outcomes of the results."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from tidings.delivery.mime import MessageContent, MessageHeaders, build_message, message_id
from tidings.transports.base import Outcome, OutgoingMessage, SendResult, Transport


class _Default(enum.Enum):
    HTML = enum.auto()


DEFAULT_HTML = _Default.HTML  # ``html``'s default: the reader's own HTML part
DATE = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


def api_message(
    i: int,
    *,
    to: str | None = None,
    subject: str | None = None,
    text: str | None = None,
    html: str | _Default | None = DEFAULT_HTML,
    sender: str = "bounces@news.example.com",
    domain: str = "news.example.com",
    date: datetime = DATE,
    from_name: str = "Weekly News",
    **header_fields: Any,
) -> OutgoingMessage:
    """Delivery ``i`` from news@example.com to ``to`` (reader{i}@example.org unless told):
    subject ``Issue {i}``, text ``Hello reader {i}.\\n`` and its HTML (``html=None``: text
    only), the Message-ID of ``domain``, the envelope ``sender``. ``header_fields`` are the
    other fields of MessageHeaders (reply_to, list_unsubscribe_url, list_id, ...)."""
    headers = MessageHeaders(
        from_address="news@example.com",
        from_name=from_name,
        to_address=to or f"reader{i}@example.org",
        subject=subject if subject is not None else f"Issue {i}",
        message_id=message_id(i, domain),
        date=date,
        **header_fields,
    )
    text = text if text is not None else f"Hello reader {i}.\n"
    body_html = f"<p>Hello reader {i}.</p>\n" if html is DEFAULT_HTML else html
    data = build_message(headers, text, body_html)
    content = MessageContent(headers, text, body_html)
    return OutgoingMessage(i, sender, headers.to_address, data, content)


def this_week(
    i: int, *, text: str, html: str | None, to: str | None = None, from_name: str = "Weekly News"
) -> OutgoingMessage:
    """Delivery ``i`` of the "This week" issue the Postmark and SendGrid tests send."""
    return api_message(
        i,
        to=to,
        subject="This week",
        text=text,
        html=html,
        sender="bounces@example.com",
        domain="example.com",
        date=datetime(2025, 3, 3, 9, 0, tzinfo=UTC),
        from_name=from_name,
        reply_to="editor@example.com",
        list_unsubscribe_url=f"https://news.example.com/unsubscribe/{i}",
        list_id="Weekly news <weekly.example.com>",
    )


async def send_and_close(
    transport: Transport, batch: Sequence[OutgoingMessage]
) -> list[SendResult]:
    """The results of sending ``batch`` on ``transport``, which is closed afterwards."""
    try:
        return await transport.send(batch)
    finally:
        await transport.close()


def outcomes(results: Sequence[SendResult]) -> list[Outcome]:
    return [r.outcome for r in results]
