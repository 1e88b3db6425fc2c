"""Configuration: generated secrets that persist, environment overrides, database location."""

from __future__ import annotations

import base64
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from tidings.config import SECRETS_FILE, ConfigurationError, Secrets, Settings, load_secrets
from tidings.security.crypto import PiiCipher


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No TIDINGS_* variable from the outside world, and a scratch working directory."""
    for name in list(os.environ):
        if name.startswith("TIDINGS_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    yield


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_missing_secrets_are_generated_into_a_0600_file_and_reused(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = load_secrets(Settings(data_dir=data_dir))
    path = data_dir / SECRETS_FILE
    assert path.exists()
    assert mode(path) == 0o600
    assert len(first.hmac_key) == 32
    assert len(first.encryption_keys) == 1
    cipher = PiiCipher(first.encryption_keys, first.hmac_key)  # the generated keys are usable
    assert cipher.decrypt(cipher.encrypt("ann@example.com")) == "ann@example.com"

    stored = json.loads(path.read_text())
    assert set(stored) == {"hmac_key", "encryption_keys"}
    written = path.read_bytes()
    second = load_secrets(Settings(data_dir=data_dir))
    assert second == first
    assert path.read_bytes() == written  # nothing rewritten when nothing was missing


def test_each_data_dir_gets_its_own_random_secrets(tmp_path: Path) -> None:
    one = load_secrets(Settings(data_dir=tmp_path / "one"))
    two = load_secrets(Settings(data_dir=tmp_path / "two"))
    assert one.hmac_key != two.hmac_key
    assert one.encryption_keys != two.encryption_keys


def test_the_secrets_file_is_0600_even_under_a_permissive_umask(tmp_path: Path) -> None:
    old_umask = os.umask(0)
    try:
        load_secrets(Settings(data_dir=tmp_path))
    finally:
        os.umask(old_umask)
    assert mode(tmp_path / SECRETS_FILE) == 0o600


def test_a_missing_secret_is_added_to_the_file_keeping_the_others(tmp_path: Path) -> None:
    hmac_text = b64(b"s" * 32)
    (tmp_path / SECRETS_FILE).write_text(json.dumps({"hmac_key": hmac_text}))
    loaded = load_secrets(Settings(data_dir=tmp_path))
    assert loaded.hmac_key == b"s" * 32
    stored = json.loads((tmp_path / SECRETS_FILE).read_text())
    assert stored["hmac_key"] == hmac_text
    assert (stored["encryption_keys"],) == loaded.encryption_keys
    assert mode(tmp_path / SECRETS_FILE) == 0o600


def test_secrets_from_the_environment_override_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    generated = load_secrets(Settings(data_dir=tmp_path))
    before = (tmp_path / SECRETS_FILE).read_bytes()
    new, old = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    monkeypatch.setenv("TIDINGS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("TIDINGS_HMAC_KEY", b64(b"e" * 32))
    monkeypatch.setenv("TIDINGS_ENCRYPTION_KEYS", f" {new} , {old},")
    loaded = load_secrets(Settings())
    assert loaded == Secrets(hmac_key=b"e" * 32, encryption_keys=(new, old))
    assert loaded.hmac_key != generated.hmac_key
    assert (tmp_path / SECRETS_FILE).read_bytes() == before  # the file is left as it was


def test_one_secret_from_the_environment_and_the_other_from_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    generated = load_secrets(Settings(data_dir=tmp_path))
    monkeypatch.setenv("TIDINGS_HMAC_KEY", b64(b"e" * 32))
    loaded = load_secrets(Settings(data_dir=tmp_path))
    assert loaded.hmac_key == b"e" * 32
    assert loaded.encryption_keys == generated.encryption_keys


def test_with_every_secret_in_the_environment_nothing_is_written_to_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIDINGS_HMAC_KEY", b64(b"e" * 32))
    monkeypatch.setenv("TIDINGS_ENCRYPTION_KEYS", Fernet.generate_key().decode())
    data_dir = tmp_path / "data"
    load_secrets(Settings(data_dir=data_dir))
    assert not (data_dir / SECRETS_FILE).exists()


def test_an_unpadded_hmac_key_is_accepted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TIDINGS_HMAC_KEY", b64(b"p" * 32).rstrip("="))
    assert load_secrets(Settings(data_dir=tmp_path)).hmac_key == b"p" * 32


@pytest.mark.parametrize("raw", [b"", b"short", b"x" * 31])
def test_a_too_short_hmac_key_is_refused_with_a_clear_message(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, raw: bytes
) -> None:
    monkeypatch.setenv("TIDINGS_HMAC_KEY", b64(raw))
    with pytest.raises(
        ConfigurationError, match="TIDINGS_HMAC_KEY must decode to at least 32 bytes"
    ):
        load_secrets(Settings(data_dir=tmp_path))


def test_encryption_keys_that_hold_no_key_are_refused_with_a_clear_message(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TIDINGS_ENCRYPTION_KEYS", " , ")
    with pytest.raises(ConfigurationError, match="TIDINGS_ENCRYPTION_KEYS is set but holds no key"):
        load_secrets(Settings(data_dir=tmp_path))


def test_secrets_never_show_in_the_settings_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    hmac_text, fernet = b64(b"r" * 32), Fernet.generate_key().decode()
    monkeypatch.setenv("TIDINGS_HMAC_KEY", hmac_text)
    monkeypatch.setenv("TIDINGS_ENCRYPTION_KEYS", fernet)
    settings = Settings()
    assert hmac_text not in repr(settings) and fernet not in repr(settings)
    assert hmac_text not in str(settings.model_dump())


def test_the_default_database_is_a_sqlite_file_in_the_data_dir(tmp_path: Path) -> None:
    settings = Settings()
    assert settings.data_dir == Path("var")
    expected = (tmp_path / "var" / "tidings.db").resolve()
    assert settings.resolved_database_url == f"sqlite+aiosqlite:///{expected}"
    assert settings.is_sqlite
    explicit = Settings(data_dir=tmp_path / "elsewhere")
    assert explicit.resolved_database_url == (
        f"sqlite+aiosqlite:///{(tmp_path / 'elsewhere' / 'tidings.db').resolve()}"
    )


def test_tidings_data_dir_moves_the_database_and_the_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    moved = tmp_path / "moved"
    monkeypatch.setenv("TIDINGS_DATA_DIR", str(moved))
    settings = Settings()
    assert settings.data_dir == moved
    assert settings.resolved_database_url == f"sqlite+aiosqlite:///{moved.resolve() / 'tidings.db'}"
    load_secrets(settings)
    assert (moved / SECRETS_FILE).exists()
    assert not (tmp_path / "var").exists()


def test_tidings_database_url_replaces_the_sqlite_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = "postgresql+asyncpg://tidings@db.internal:5432/tidings"
    monkeypatch.setenv("TIDINGS_DATABASE_URL", url)
    settings = Settings()
    assert settings.resolved_database_url == url
    assert not settings.is_sqlite


def test_an_invalid_fernet_key_is_refused_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIDINGS_ENCRYPTION_KEYS", "not-a-key")
    with pytest.raises(ConfigurationError, match="TIDINGS_ENCRYPTION_KEYS holds a value"):
        load_secrets(Settings(data_dir=tmp_path))


def test_when_two_processes_create_secrets_at_once_both_use_the_first_file(
    tmp_path: Path,
) -> None:
    from tidings import config

    winner = {"hmac_key": "w" * 43, "encryption_keys": TEST_FERNET_KEY_FOR_RACE}
    original = config._read_secrets_file
    calls = {"n": 0}

    def read_then_lose_the_race(data_dir: Path) -> dict[str, str]:
        calls["n"] += 1
        if calls["n"] == 1:  # we read "no file"; meanwhile the other process writes it
            (data_dir / SECRETS_FILE).write_text(json.dumps(winner))
            return {}
        return original(data_dir)

    config._read_secrets_file = read_then_lose_the_race  # type: ignore[assignment]
    try:
        secrets = load_secrets(Settings(data_dir=tmp_path))
    finally:
        config._read_secrets_file = original  # type: ignore[assignment]
    assert secrets.encryption_keys == (TEST_FERNET_KEY_FOR_RACE,)
    assert json.loads((tmp_path / SECRETS_FILE).read_text()) == winner


TEST_FERNET_KEY_FOR_RACE = base64.urlsafe_b64encode(b"r" * 32).decode()
