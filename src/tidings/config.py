"""Configuration: one pydantic-settings class fed by TIDINGS_* environment variables.

Secrets that are not set explicitly are generated once into the data directory (mode 0600) and
reused on every later start, so the embedded default needs no setup at all.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

from cryptography.fernet import Fernet
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

SECRETS_FILE = "secrets.json"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TIDINGS_", extra="ignore")

    data_dir: Path = Field(default=Path("var"), description="Where SQLite, secrets and mail live.")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy async URL; default: SQLite file in the data dir."
    )
    hmac_key: SecretStr | None = Field(
        default=None, description="Key of the e-mail blind index (base64, 32+ bytes)."
    )
    encryption_keys: SecretStr | None = Field(
        default=None, description="Fernet keys for PII, comma-separated, newest first."
    )
    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str | None = Field(
        default=None, description="Base URL users reach the server at (links, printed URLs)."
    )
    mail_transport: Literal["maildir", "console", "smtp"] = Field(
        default="maildir", description="Where mail goes: maildir (./var/mail/), console, smtp."
    )
    mail_from: str = Field(default="tidings <noreply@localhost>", description="Sender of mail.")
    bounce_address: str | None = Field(
        default=None, description="Envelope sender (return path); default: the From address."
    )
    list_unsubscribe_mailto: str | None = Field(
        default=None, description="Address for mailto: unsubscribes in List-Unsubscribe."
    )
    smtp_host: str = "localhost"
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_security: Literal["starttls", "tls", "none"] = Field(
        default="starttls", description="starttls (required), tls (implicit, port 465), none."
    )
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_connections: int = Field(
        default=8, ge=1, le=256, description="Persistent SMTP connections per worker process."
    )
    smtp_timeout: float = Field(default=30.0, gt=0, description="Seconds to wait for a reply.")
    provider_timeout: float = Field(
        default=30.0, gt=0, description="Seconds to wait for a provider API's answer."
    )
    workers: bool = Field(default=True, description="Run delivery workers inside `tidings serve`.")
    worker_batch_size: int = Field(
        default=500, ge=1, le=5000, description="Deliveries claimed per transaction."
    )
    worker_lease_seconds: int = Field(
        default=300, ge=2, description="A claimed batch not recorded by then is claimed again."
    )
    retry_base_seconds: float = Field(default=60.0, gt=0, description="First retry delay cap.")
    retry_cap_seconds: float = Field(default=6 * 3600.0, gt=0, description="Longest retry delay.")
    retry_max_attempts: int = Field(default=8, ge=1, le=100, description="Attempts before failed.")
    rate_limit_storage: str = Field(
        default="async+memory://",
        description="limits storage URI; async+redis://host:6379 to share between processes.",
    )
    public_subscribe_limits: str = Field(
        default="10/minute", description="Public sign-ups allowed per client IP."
    )
    public_address_limits: str = Field(
        default="3/hour", description="Public sign-ups allowed per e-mail address."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["console", "json"] = "console"
    import_workers: int = Field(
        default=0, ge=0, le=64, description="Processes preparing rows of API imports (0: inline)."
    )
    import_max_bytes: int = Field(default=1 << 30, ge=1, description="Largest accepted upload.")
    scheduler: bool = Field(
        default=True, description="Run the scheduler loop inside `tidings serve`."
    )
    tracking_machine_networks: list[str] = Field(
        default=["17.0.0.0/8"],
        description="Networks whose opens and clicks are machines' (JSON list of CIDRs); "
        "default: Apple's, where Mail Privacy Protection prefetches images.",
    )
    tracking_scanner_seconds: float = Field(
        default=10.0, ge=0, description="A click sooner than this after sending is a scanner's."
    )
    soft_bounce_limit: int = Field(
        default=3, ge=1, le=100, description="Soft bounces within soft_bounce_days that suppress."
    )
    soft_bounce_days: int = Field(default=7, ge=1, le=365)
    event_flush_seconds: float = Field(
        default=0.2, gt=0, le=10, description="How often buffered tracking events are written."
    )
    inbound_smtp_port: int = Field(
        default=0, ge=0, le=65535,
        description="Port of the SMTP receiver for bounces and mailto: unsubscribes (0: off).",
    )  # fmt: skip
    inbound_smtp_host: str = Field(default="127.0.0.1", description="Its listening address.")
    webhook_ses_topics: list[str] = Field(
        default=[], description="SNS topic ARNs /webhooks/amazon-ses accepts (JSON list)."
    )
    webhook_sendgrid_public_key: str | None = Field(
        default=None, description="SendGrid's Event Webhook verification key (base64)."
    )
    webhook_postmark_user: str | None = None
    webhook_postmark_password: SecretStr | None = Field(
        default=None, description="Basic auth Postmark sends to /webhooks/postmark."
    )
    webhook_postmark_path_secret: SecretStr | None = Field(
        default=None, description="Or a secret path: /webhooks/postmark/<secret>."
    )
    webhook_mailgun_signing_key: SecretStr | None = Field(
        default=None, description="Mailgun's HTTP webhook signing key."
    )
    webhook_azure_key: SecretStr | None = Field(
        default=None, description="The X-Tidings-Webhook-Key Event Grid sends to /webhooks/azure."
    )
    webhook_generic_secret: SecretStr | None = Field(
        default=None, description="Standard Webhooks secret (whsec_...) of /webhooks/generic."
    )
    webhook_allow_private: bool = Field(
        default=False,
        description="Let outgoing webhooks go to loopback, private and link-local addresses.",
    )
    db_pool_size: int = Field(default=10, ge=1, le=200)
    sqlite_busy_timeout_ms: int = Field(default=30_000, ge=0)

    @cached_property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'tidings.db').resolve()}"

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")


@dataclass(frozen=True)
class Secrets:
    """Key material, resolved from the environment or from the generated secrets file."""

    hmac_key: bytes
    encryption_keys: tuple[str, ...]  # newest first


class ConfigurationError(Exception):
    """The configuration cannot work; the message names the variable and what to do."""


def load_secrets(settings: Settings) -> Secrets:
    """Return the configured secrets, generating and persisting missing ones on first start."""
    stored = _read_secrets_file(settings.data_dir)
    before = dict(stored)

    def explicit_or_stored(explicit: SecretStr | None, name: str) -> str:
        if explicit is not None:
            return explicit.get_secret_value()
        # 32 random bytes in urlsafe base64: a valid Fernet key and a valid HMAC key alike.
        return stored.setdefault(name, base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())

    hmac_key = explicit_or_stored(settings.hmac_key, "hmac_key")
    keys_text = explicit_or_stored(settings.encryption_keys, "encryption_keys")
    if stored != before and not _write_secrets_file(settings.data_dir, stored, create=not before):
        return load_secrets(settings)  # another process created the file first: use its keys
    keys = tuple(k.strip() for k in keys_text.split(",") if k.strip())
    if not keys:
        raise ConfigurationError("TIDINGS_ENCRYPTION_KEYS is set but holds no key")
    for key in keys:
        try:
            Fernet(key.encode())
        except ValueError:
            raise ConfigurationError(
                "TIDINGS_ENCRYPTION_KEYS holds a value that is not a Fernet key (32 bytes in "
                "url-safe base64, as Fernet.generate_key() makes)"
            ) from None
    return Secrets(hmac_key=_decode_key(hmac_key), encryption_keys=keys)


def ensure_data_dir(data_dir: Path) -> None:
    """Create the data directory readable by its owner only: it holds the database and keys."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)


def _decode_key(text: str) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(text.encode() + b"=" * (-len(text) % 4))
    except ValueError:
        raw = b""
    if len(raw) < 32:
        raise ConfigurationError("TIDINGS_HMAC_KEY must decode to at least 32 bytes of base64")
    return raw


def _read_secrets_file(data_dir: Path) -> dict[str, str]:
    path = data_dir / SECRETS_FILE
    if not path.exists():
        return {}
    loaded: dict[str, str] = json.loads(path.read_text())
    return loaded


def _write_secrets_file(data_dir: Path, values: dict[str, str], *, create: bool) -> bool:
    """Write the secrets atomically, mode 0600 from the first byte. With ``create``, only if no
    file exists yet; returns False when another process won that race."""
    ensure_data_dir(data_dir)
    path = data_dir / SECRETS_FILE
    temporary = data_dir / f".{SECRETS_FILE}.{os.getpid()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(values, handle, indent=2)
    try:
        if not create:
            os.replace(temporary, path)
            return True
        try:
            os.link(temporary, path)
        except FileExistsError:
            return False
        return True
    finally:
        temporary.unlink(missing_ok=True)
