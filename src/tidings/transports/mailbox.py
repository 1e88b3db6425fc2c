"""Transactional mail (confirmations) through the configured local transport.

The delivery engine (campaign mail, SMTP and provider APIs) builds on the same transports; until
then a transactional message goes straight to the maildir (the embedded default) or the console.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from tidings.config import Settings
from tidings.logs import get_logger
from tidings.transports.local import write_to_maildir

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


def send_transactional(settings: Settings, mail: OutgoingMail) -> None:
    message = build_message(mail, settings.mail_from)
    if settings.mail_transport == "console":
        print(message.as_string())
        return
    path = write_to_maildir(settings.data_dir / "mail", bytes(message))
    log.info("mail.written", transport="maildir", file=path.name)
