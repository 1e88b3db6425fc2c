"""Sending providers as data: which services mail goes through, with their (encrypted)
credentials, weights, priorities and rate limits."""

from __future__ import annotations

import enum
from typing import Any

from sqlalchemy import Boolean, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from tidings.db.base import Base, JSONType, Timestamped
from tidings.db.ids import BigId
from tidings.db.types import EncryptedText


class ProviderKind(enum.StrEnum):
    smtp = "smtp"
    ses = "ses"
    sendgrid = "sendgrid"
    postmark = "postmark"
    mailgun = "mailgun"
    azure = "azure"
    http = "http"
    maildir = "maildir"
    console = "console"


class Provider(Timestamped, Base):
    __tablename__ = "providers"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False, unique=True)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    priority: Mapped[int] = mapped_column(Integer, nullable=False, default=0)  # lower goes first
    weight: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    domains: Mapped[list[str]] = mapped_column(JSONType, nullable=False, default=list)
    settings: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, default=dict)
    # A JSON object of secrets (API keys, passwords), encrypted with the PII keys.
    credentials: Mapped[str] = mapped_column(EncryptedText(), nullable=False, default="{}")
    per_second: Mapped[int | None] = mapped_column(Integer)
    per_minute: Mapped[int | None] = mapped_column(Integer)
    per_hour: Mapped[int | None] = mapped_column(Integer)
    per_day: Mapped[int | None] = mapped_column(Integer)
    timezone: Mapped[str] = mapped_column(String(64), nullable=False, default="UTC")
    warming_plan: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
