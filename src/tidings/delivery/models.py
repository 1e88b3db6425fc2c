"""Tables of the delivery engine: DKIM keys per sending domain."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tidings.db.base import Base
from tidings.db.ids import BigId
from tidings.db.types import UTCDateTime, utcnow


class DkimKey(Base):
    """A DKIM signing key. The private key (PEM) is encrypted at rest with the PII keys; the
    public part is kept as the DNS TXT record to publish at ``selector._domainkey.domain``."""

    __tablename__ = "dkim_keys"
    __table_args__ = (UniqueConstraint("domain", "selector"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    domain: Mapped[str] = mapped_column(String(253), nullable=False)
    selector: Mapped[str] = mapped_column(String(63), nullable=False)
    algorithm: Mapped[str] = mapped_column(String(16), nullable=False)  # rsa-sha256, ed25519
    private_key: Mapped[str] = mapped_column(Text, nullable=False)  # encrypted PEM
    dns_record: Mapped[str] = mapped_column(Text, nullable=False)
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
