"""The bounce receiver, a real SMTP server in the test's event loop, spoken to by smtplib (in a
thread, as any MTA would): reports become events for the sink, strangers' recipients are refused
at RCPT, and a sink that fails makes the sender keep the report and retry."""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import pytest

from tests.tracking.test_dsn import GMAIL_DELAYED, PLAIN_TEXT_BOUNCE, POSTFIX_HARD_BOUNCE
from tidings.tracking.bounce_receiver import start_bounce_receiver
from tidings.tracking.events import BounceKind, EventType, InboundEvent

RETURN_PATH = "bounces@bounces.tidings.example"


class Sink:
    """Keeps every batch of events it is given; a failing one raises as a database would."""

    def __init__(self, *, fails: bool = False) -> None:
        self.fails = fails
        self.batches: list[list[InboundEvent]] = []

    async def __call__(self, events: list[InboundEvent]) -> None:
        if self.fails:
            raise RuntimeError("database unavailable")
        self.batches.append(events)


@asynccontextmanager
async def receiver(sink: Sink, max_bytes: int = 1_000_000) -> AsyncIterator[int]:
    """A bounce receiver for bounces.tidings.example on a free port; yields the port."""
    server = await start_bounce_receiver(
        "127.0.0.1", 0, ["Bounces.Tidings.Example"], sink, max_bytes=max_bytes
    )
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def send(port: int, recipients: Sequence[str], data: bytes) -> dict[str, tuple[int, bytes]]:
    """Send from the null sender, as bounces are; the recipients refused, as smtplib says."""
    with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
        return client.sendmail("", list(recipients), data)


def over_smtp(data: bytes) -> bytes:
    """Lines end in CRLF on the wire (smtplib leaves the line ends of bytes as they are)."""
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


async def test_a_report_sent_to_the_return_path_reaches_the_sink_as_events() -> None:
    sink = Sink()
    async with receiver(sink) as port:
        refused = await asyncio.to_thread(send, port, [RETURN_PATH], POSTFIX_HARD_BOUNCE)
        await asyncio.to_thread(
            send, port, ["bounces+31337@BOUNCES.tidings.example"], over_smtp(GMAIL_DELAYED)
        )
    assert refused == {}
    [[bounce], [deferral]] = sink.batches
    assert (bounce.type, bounce.bounce, bounce.delivery_id, bounce.recipient) == (
        EventType.bounced,
        BounceKind.hard,
        1234,
        "ann@example.org",
    )
    assert (deferral.type, deferral.delivery_id) == (EventType.deferred, 31337)


async def test_a_recipient_outside_the_return_path_domains_is_refused_at_rcpt() -> None:
    sink = Sink()
    async with receiver(sink) as port:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refusal:
            await asyncio.to_thread(send, port, ["ann@example.org"], POSTFIX_HARD_BOUNCE)
        # A subdomain is another domain.
        mixed = ["postmaster@mx.bounces.tidings.example", RETURN_PATH]
        refused = await asyncio.to_thread(send, port, mixed, POSTFIX_HARD_BOUNCE)
    [(code, message)] = refusal.value.recipients.values()
    assert code == 550 and message.startswith(b"5.1.1 ")
    assert list(refused) == ["postmaster@mx.bounces.tidings.example"]
    assert len(sink.batches) == 1  # the recipient that is ours got it


async def test_a_sink_that_fails_makes_the_server_answer_451_so_the_sender_retries() -> None:
    async with receiver(Sink(fails=True)) as port:
        with pytest.raises(smtplib.SMTPDataError) as failure:
            await asyncio.to_thread(send, port, [RETURN_PATH], POSTFIX_HARD_BOUNCE)
    assert failure.value.smtp_code == 451
    assert failure.value.smtp_error.startswith(b"4.3.0 ")


async def test_mail_that_is_not_a_report_is_accepted_and_nothing_recorded() -> None:
    sink = Sink(fails=True)  # never called: nothing to record
    async with receiver(sink) as port:
        refused = await asyncio.to_thread(send, port, [RETURN_PATH], PLAIN_TEXT_BOUNCE)
    assert refused == {} and sink.batches == []


async def test_a_message_over_the_size_limit_is_refused() -> None:
    sink = Sink()
    big = POSTFIX_HARD_BOUNCE + b"x" * 2000 + b"\r\n"
    async with receiver(sink, max_bytes=len(POSTFIX_HARD_BOUNCE) + 1000) as port:
        with pytest.raises(smtplib.SMTPSenderRefused) as refusal:  # SIZE= says it at MAIL
            await asyncio.to_thread(send, port, [RETURN_PATH], big)
    assert refusal.value.smtp_code == 552 and sink.batches == []


async def test_a_receiver_needs_a_return_path_domain() -> None:
    with pytest.raises(ValueError, match="return-path domain"):
        await start_bounce_receiver("127.0.0.1", 0, [], Sink())
