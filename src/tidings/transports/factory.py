"""Transports from configuration: the one the settings name (``TIDINGS_MAIL_TRANSPORT``), for
campaign and transactional mail alike, and the one a stored provider describes."""

from __future__ import annotations

from tidings.config import Settings
from tidings.errors import RuleViolation
from tidings.providers.models import Provider, ProviderKind
from tidings.providers.service import secrets_of
from tidings.transports.base import Transport
from tidings.transports.local import ConsoleTransport, MaildirTransport
from tidings.transports.registry import API_TRANSPORTS
from tidings.transports.smtp import SmtpConfig, SmtpTransport
from tidings.transports.smtp_session import Security


def open_transport(settings: Settings) -> Transport:
    if settings.mail_transport == "smtp":
        password = settings.smtp_password
        return _smtp(
            settings,
            host=settings.smtp_host,
            port=settings.smtp_port,
            security=settings.smtp_security,
            username=settings.smtp_username,
            password=password.get_secret_value() if password else None,
        )
    return _local(settings.mail_transport, settings)


def provider_transport(provider: Provider, settings: Settings) -> Transport:
    """The transport of a stored provider; RuleViolation when its settings cannot work."""
    kind = ProviderKind(provider.kind)
    if kind == ProviderKind.smtp:
        secrets, options = secrets_of(provider), provider.settings
        return _smtp(
            settings,
            host=str(options["host"]),
            port=int(options.get("port", 25)),
            security=options.get("security", "starttls"),
            username=secrets.get("username"),
            password=secrets.get("password"),
        )
    if kind in (ProviderKind.maildir, ProviderKind.console):
        return _local(kind, settings)
    try:
        return API_TRANSPORTS[kind](
            provider.settings, secrets_of(provider), settings.provider_timeout
        )
    except ValueError as exc:  # a setting the transport cannot use (a bad URL or region)
        raise RuleViolation(f"provider {provider.name!r}: {exc}") from exc


def _smtp(
    settings: Settings,
    *,
    host: str,
    port: int,
    security: Security,
    username: str | None,
    password: str | None,
) -> SmtpTransport:
    """A server's SMTP pool, with the instance's timeout and connections per process."""
    config = SmtpConfig(
        host=host,
        port=port,
        security=security,
        username=username,
        password=password,
        timeout=settings.smtp_timeout,
        connections=settings.smtp_connections,
    )
    return SmtpTransport(config)


def _local(kind: str, settings: Settings) -> Transport:
    """``console`` prints; ``maildir`` writes into the data directory's mail/."""
    return ConsoleTransport() if kind == "console" else MaildirTransport(settings.data_dir / "mail")
