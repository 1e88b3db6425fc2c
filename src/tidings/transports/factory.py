"""Transports from configuration: the one the settings name (``TIDINGS_MAIL_TRANSPORT``), for
campaign and transactional mail alike, and the one a stored provider describes."""

from __future__ import annotations

from tidings.config import Settings
from tidings.errors import RuleViolation
from tidings.providers.models import Provider, ProviderKind
from tidings.providers.service import secrets_of
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


def provider_transport(provider: Provider, settings: Settings) -> Transport:
    """The transport of a stored provider; RuleViolation for a kind without one yet."""
    kind = ProviderKind(provider.kind)
    if kind == ProviderKind.smtp:
        secrets, options = secrets_of(provider), provider.settings
        return SmtpTransport(
            SmtpConfig(
                host=str(options["host"]),
                port=int(options.get("port", 25)),
                security=options.get("security", "starttls"),
                username=secrets.get("username"),
                password=secrets.get("password"),
                timeout=settings.smtp_timeout,
                connections=settings.smtp_connections,
            )
        )
    if kind == ProviderKind.console:
        return ConsoleTransport()
    if kind == ProviderKind.maildir:
        return MaildirTransport(settings.data_dir / "mail")
    raise RuleViolation(f"sending through {kind} providers is not available yet")
