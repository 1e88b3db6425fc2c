"""Transactional mail (confirmations): one message at a time, through the same transport as
campaign mail (maildir by default, console, or SMTP), outside the outbox."""

from __future__ import annotations

import email.policy
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from tidings.config import Settings
from tidings.logs import get_logger
from tidings.transports.base import Outcome, OutgoingMessage
from tidings.transports.factory import open_transport

log = get_logger("tidings.mail")


@dataclass(frozen=True)
class OutgoingMail:
    to: str
    subject: str
    text: str
    html: str | None = None


def build_message(mail: OutgoingMail, sender: str) -> EmailMessage:
    message = EmailMessage()  # refuses CR/LF in header values: no header injection
    message["From"] = sender
    message["To"] = mail.to
    message["Subject"] = mail.subject
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2].strip("> ") or None)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(mail.text)
    if mail.html:
        message.add_alternative(mail.html, subtype="html")
    return message


async def send_transactional(settings: Settings, mail: OutgoingMail) -> bool:
    """Send now; False (and a warning in the log) when the transport did not accept it."""
    message = build_message(mail, settings.mail_from)
    sender = message["From"].addresses[0].addr_spec
    outgoing = OutgoingMessage(0, sender, mail.to, message.as_bytes(policy=email.policy.SMTP))
    transport = open_transport(settings)
    try:
        [result] = await transport.send([outgoing])
    finally:
        await transport.close()
    if result.outcome != Outcome.accepted:
        log.warning("mail.not_sent", transport=transport.name, reason=result.detail)
        return False
    log.info("mail.sent", transport=transport.name, id=result.provider_message_id)
    return True
