"""The bounce receiver: a small SMTP server, in the app's own event loop, that takes the delivery
and feedback reports other servers send to our return path, reads them (tracking.dsn) and hands
the events to a sink.

Why an SMTP receiver and not IMAP polling of a bounce mailbox: point the MX of the return-path
(VERP) domain at this server and reports arrive the moment they are sent. Nothing is polled on a
timer, we hold no mailbox credentials, and it works with any MTA or ESP that sends standard
reports. Nor is anything lost: when the sink fails we answer 451 and the sending server keeps
the report and tries again, as it would for any busy mail server.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import UTC, datetime

import structlog
from aiosmtpd.smtp import SMTP, Envelope, Session

from tidings.tracking.dsn import events_from_report
from tidings.tracking.events import InboundEvent

log = structlog.get_logger(__name__)

EventSink = Callable[[list[InboundEvent]], Awaitable[None]]
# The delivery a message is vouched for by one of our signed tokens (in the VERP return path it
# was sent to, or in the returned headers), or None: anyone can send mail to a return path.
Voucher = Callable[[Sequence[str], bytes], int | None]
# Mail that is a request, not a report (a mailto: unsubscribe): True when it was one, and done.
Requests = Callable[[Sequence[str], bytes], Awaitable[bool]]

ACCEPTED = "250 2.0.0 Report accepted"
NOT_A_REPORT = "250 2.0.0 Accepted, not a delivery report"
UNKNOWN_RECIPIENT = "550 5.1.1 Recipient address rejected: not a return-path domain of this server"
TRY_AGAIN = "451 4.3.0 The report could not be recorded, try again later"
IDENT = "tidings bounce receiver"


def utc_now() -> datetime:
    return datetime.now(UTC)


class BounceHandler:
    """aiosmtpd hooks: take mail for the return-path ``domains`` only, read each message as a
    report and pass its events to ``sink``."""

    def __init__(
        self,
        domains: Collection[str],
        sink: EventSink,
        clock: Callable[[], datetime] = utc_now,
        vouch: Voucher | None = None,
        requests: Requests | None = None,
    ) -> None:
        """With ``vouch``, only reports it vouches for are recorded, as events of the delivery
        it names (an unsigned report could otherwise suppress any address it names)."""
        self.domains = frozenset(domain.strip().lower().rstrip(".") for domain in domains)
        self.sink = sink
        self.clock = clock
        self.vouch = vouch
        self.requests = requests

    def accepts(self, address: str) -> bool:
        """Whether ``address`` is in one of our domains (exactly: subdomains are not ours)."""
        _, at, domain = address.rpartition("@")
        return bool(at) and domain.lower().rstrip(".") in self.domains

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        # Refused now, not after DATA: the sender learns at once, and we never take in mail
        # that we would have to bounce ourselves.
        if not self.accepts(address):
            return UNKNOWN_RECIPIENT
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or b""
        try:
            if self.requests is not None and await self.requests(envelope.rcpt_tos, data):
                return ACCEPTED
        except Exception:
            log.exception("inbound_request_failed", peer=str(session.peer))
            return TRY_AGAIN
        # Off the loop, which serves the API too: a 10 MB message takes a fifth of a second.
        events = await asyncio.to_thread(events_from_report, data, self.clock())
        if events and self.vouch is not None:
            events = self._vouched(envelope.rcpt_tos, data, events)
        if not events:
            # Mail to a return path that is not a report (an auto-reply, a plain-text bounce
            # of an old MTA, spam): nothing to record, and refusing it would only bounce it.
            log.info("bounce_not_a_report", size=len(data), peer=str(session.peer))
            return NOT_A_REPORT
        try:
            await self.sink(events)
        except Exception:
            log.exception("bounce_sink_failed", events=len(events), peer=str(session.peer))
            return TRY_AGAIN
        log.info(
            "bounce_report_received",
            events=len(events),
            types=sorted({event.type.value for event in events}),
            delivery_ids=sorted({e.delivery_id for e in events if e.delivery_id is not None}),
        )
        return ACCEPTED

    def _vouched(
        self, recipients: Sequence[str], data: bytes, events: list[InboundEvent]
    ) -> list[InboundEvent]:
        assert self.vouch is not None
        delivery_id = self.vouch(recipients, data)
        if delivery_id is None:
            log.info("bounce_report_unvouched", events=len(events), size=len(data))
            return []
        return [dataclasses.replace(e, delivery_id=delivery_id) for e in events]


async def start_bounce_receiver(
    host: str,
    port: int,
    domains: Collection[str],
    sink: EventSink,
    max_bytes: int = 10_000_000,
    vouch: Voucher | None = None,
    requests: Requests | None = None,
) -> asyncio.Server:
    """Listen for reports on ``host``:``port`` in the running event loop; mail to addresses of
    ``domains`` is read, mail over ``max_bytes`` refused (552). Close the server to stop."""
    if not domains:
        raise ValueError("the bounce receiver needs at least one return-path domain")
    handler = BounceHandler(domains, sink, vouch=vouch, requests=requests)
    loop = asyncio.get_running_loop()
    # aiosmtpd looks the name up (socket.getfqdn, blocking DNS) for every connection unless
    # it is given one: once here, off the loop.
    hostname = await asyncio.to_thread(socket.getfqdn)

    def smtp_session() -> SMTP:
        return SMTP(
            handler,
            data_size_limit=max_bytes,
            hostname=hostname,
            ident=IDENT,
            loop=loop,
        )

    return await loop.create_server(smtp_session, host, port)
