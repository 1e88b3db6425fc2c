"""Starting with keys that do not belong to the database is refused, not silently wrong."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from tidings.audience.schemas import SubscriberCreate
from tidings.audience.subscribers import create_subscriber
from tidings.config import ConfigurationError, Settings
from tidings.runtime import open_runtime


def _settings(tmp_path: Path, hmac_byte: bytes, fernet_byte: bytes) -> Settings:
    return Settings(
        data_dir=tmp_path,
        hmac_key=base64.urlsafe_b64encode(hmac_byte * 32).decode(),  # type: ignore[arg-type]
        encryption_keys=base64.urlsafe_b64encode(fernet_byte * 32).decode(),  # type: ignore[arg-type]
    )


async def test_a_different_blind_index_key_is_refused(tmp_path: Path) -> None:
    runtime = await open_runtime(_settings(tmp_path, b"a", b"f"))
    await runtime.close()
    with pytest.raises(ConfigurationError, match="TIDINGS_HMAC_KEY is not the key"):
        await open_runtime(_settings(tmp_path, b"b", b"f"))


async def test_data_under_a_missing_encryption_key_is_refused(tmp_path: Path) -> None:
    runtime = await open_runtime(_settings(tmp_path, b"a", b"f"))
    async with runtime.database.sessions() as session:
        await create_subscriber(session, SubscriberCreate(email="k@example.com"), "test")
    await runtime.close()
    with pytest.raises(ConfigurationError, match="TIDINGS_ENCRYPTION_KEYS does not hold"):
        await open_runtime(_settings(tmp_path, b"a", b"g"))
    reopened = await open_runtime(_settings(tmp_path, b"a", b"f"))
    await reopened.close()
