"""The transport the settings name (``TIDINGS_MAIL_TRANSPORT``), for campaign and transactional
mail alike."""

from __future__ import annotations

from tidings.config import Settings
from tidings.transports.base import Transport
from tidings.transports.local import ConsoleTransport, MaildirTransport
from tidings.transports.smtp import SmtpConfig, SmtpTransport


def open_transport(settings: Settings) -> Transport:
    if settings.mail_transport == "smtp":
        password = settings.smtp_password
        return SmtpTransport(
            SmtpConfig(
                host=settings.smtp_host,
                port=settings.smtp_port,
                security=settings.smtp_security,
                username=settings.smtp_username,
                password=password.get_secret_value() if password else None,
                timeout=settings.smtp_timeout,
                connections=settings.smtp_connections,
            )
        )
    if settings.mail_transport == "console":
        return ConsoleTransport()
    return MaildirTransport(settings.data_dir / "mail")
