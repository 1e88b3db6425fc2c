"""Transactional mail (confirmations) through the configured local transport.

The delivery engine (campaign mail, SMTP and provider APIs) builds on the same transports; until
then a transactional message goes straight to the maildir (the embedded default) or the console.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

from tidings.config import Settings, ensure_data_dir
from tidings.logs import get_logger

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


def write_to_maildir(root: Path, message: EmailMessage) -> Path:
    """Deliver into a Maildir (tmp/ then an atomic rename into new/), as mail servers do."""
    for part in ("tmp", "new", "cur"):
        ensure_data_dir(root / part)
    name = f"{time.time_ns()}.{os.getpid()}.{socket.gethostname()}.eml"
    temporary = root / "tmp" / name
    temporary.write_bytes(bytes(message))
    final = root / "new" / name
    temporary.rename(final)
    return final


def send_transactional(settings: Settings, mail: OutgoingMail) -> None:
    message = build_message(mail, settings.mail_from)
    if settings.mail_transport == "console":
        print(message.as_string())
        return
    path = write_to_maildir(settings.data_dir / "mail", message)
    log.info("mail.written", transport="maildir", file=path.name)
