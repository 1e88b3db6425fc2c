"""Refuse to start with keys that do not belong to the database.

Lost or regenerated secrets would otherwise look healthy while every e-mail lookup silently
misses (a new blind-index key) or every read fails (a missing encryption key).
"""

from __future__ import annotations

from sqlalchemy import Text, select, type_coerce
from sqlalchemy.exc import IntegrityError

from tidings.audience.models import Subscriber
from tidings.config import ConfigurationError
from tidings.db.engine import Database
from tidings.security.crypto import PiiCipher
from tidings.security.models import InstanceValue

BLIND_INDEX_CHECK = "blind_index_check"


async def verify_keys(database: Database, cipher: PiiCipher) -> None:
    expected = cipher.blind_index("tidings: blind index key check")
    async with database.sessions() as session:
        stored = await session.get(InstanceValue, BLIND_INDEX_CHECK)
        if stored is None:
            session.add(InstanceValue(name=BLIND_INDEX_CHECK, value=expected))
            try:
                await session.commit()
            except IntegrityError:  # another process recorded it first
                await session.rollback()
                stored = await session.get(InstanceValue, BLIND_INDEX_CHECK)
        if stored is not None and stored.value != expected:
            raise ConfigurationError(
                "TIDINGS_HMAC_KEY is not the key this database was created with (was "
                "var/secrets.json lost or replaced?); restore the original key"
            )
        sample = await session.scalar(select(type_coerce(Subscriber.email, Text)).limit(1))
    if sample is not None and not cipher.knows(sample):
        raise ConfigurationError(
            f"subscriber data is encrypted with key id {sample.partition(':')[0]}, which "
            "TIDINGS_ENCRYPTION_KEYS does not hold; add that key back (after the newest)"
        )
