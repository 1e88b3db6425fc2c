"""PII protection: address parsing, the blind index, encryption at rest and key rotation."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from cryptography.fernet import Fernet
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession
from typer.testing import CliRunner

from tests.factories import add_subscriber
from tidings.audience.models import Subscriber
from tidings.audience.schemas import SubscriberCreate
from tidings.audience.subscribers import create_subscriber, find_subscriber
from tidings.cli import app
from tidings.config import Settings, load_secrets
from tidings.db.engine import create_database
from tidings.db.registry import all_metadata
from tidings.runtime import Runtime
from tidings.security.crypto import (
    FernetBatchDecryptor,
    FernetBatchEncryptor,
    InvalidEmail,
    PiiCipher,
    UnknownEncryptionKey,
    install_cipher,
    key_id,
    parse_email,
)
from tidings.security.models import AuditEntry
from tidings.security.rotation import count_stale_rows, rotate_encryption

HMAC_KEY = b"k" * 32
OTHER_HMAC_KEY = b"o" * 32
OLD_KEY = Fernet.generate_key().decode()
NEW_KEY = Fernet.generate_key().decode()

runner = CliRunner()


def expected_index(address: str, key: bytes = HMAC_KEY) -> str:
    return hmac.new(key, address.encode(), hashlib.sha256).hexdigest()


async def raw_rows(session: AsyncSession, sql: str) -> list[dict[str, object]]:
    rows = [dict(row) for row in (await session.execute(text(sql))).mappings().all()]
    await session.rollback()  # hand the connection back: SQLite has only one
    return rows


# --- parsing --------------------------------------------------------------------------------


def test_parse_email_trims_and_lowercases_the_domain_but_keeps_the_local_part() -> None:
    parsed = parse_email("  Ann.Lee@Example.COM \n")
    assert parsed.address == "Ann.Lee@example.com"
    assert parsed.index_key == "ann.lee@example.com"


def test_parse_email_stores_an_idn_domain_as_punycode() -> None:
    parsed = parse_email("Jörg@Bücher.Example")
    assert parsed.address == "Jörg@xn--bcher-kva.example"
    assert parsed.index_key == "jörg@xn--bcher-kva.example"
    assert parse_email("jörg@xn--bcher-kva.example").index_key == parsed.index_key


@pytest.mark.parametrize(
    "raw", ["", "   ", "not-an-address", "ann@", "@example.com", "ann@@example.com", "ann@example"]
)
def test_parse_email_rejects_invalid_addresses_saying_why(raw: str) -> None:
    with pytest.raises(InvalidEmail) as caught:
        parse_email(raw)
    assert str(caught.value)
    assert isinstance(caught.value, ValueError)


# --- blind index ----------------------------------------------------------------------------


def test_the_blind_index_is_hmac_sha256_of_the_index_key() -> None:
    cipher = PiiCipher([NEW_KEY], HMAC_KEY)
    assert cipher.blind_index("ann@example.com") == expected_index("ann@example.com")
    assert cipher.email_hash("Ann@Example.com") == expected_index("ann@example.com")
    assert len(cipher.email_hash("ann@example.com")) == 64


@pytest.mark.parametrize(
    "variant", ["ann@example.com", "ANN@EXAMPLE.COM", "  Ann@Example.Com ", "aNN@example.COM"]
)
def test_the_blind_index_is_the_same_for_any_casing_of_the_address(variant: str) -> None:
    cipher = PiiCipher([NEW_KEY], HMAC_KEY)
    assert cipher.email_hash(variant) == expected_index("ann@example.com")


def test_the_blind_index_differs_for_another_address_or_another_hmac_key() -> None:
    cipher = PiiCipher([NEW_KEY], HMAC_KEY)
    other = PiiCipher([NEW_KEY], OTHER_HMAC_KEY)
    assert cipher.email_hash("ann@example.com") != cipher.email_hash("bob@example.com")
    assert other.email_hash("ann@example.com") != cipher.email_hash("ann@example.com")
    assert other.email_hash("ann@example.com") == expected_index("ann@example.com", OTHER_HMAC_KEY)


def test_the_blind_index_does_not_depend_on_the_encryption_key() -> None:
    assert PiiCipher([NEW_KEY], HMAC_KEY).email_hash("ann@example.com") == PiiCipher(
        [OLD_KEY], HMAC_KEY
    ).email_hash("ann@example.com")


# --- encryption -----------------------------------------------------------------------------


@pytest.mark.parametrize("plaintext", ["ann@example.com", "+4915112345678", "", "Jörg 🐍 ∑"])
def test_decrypt_reverses_encrypt(plaintext: str) -> None:
    cipher = PiiCipher([NEW_KEY], HMAC_KEY)
    stored = cipher.encrypt(plaintext)
    assert cipher.decrypt(stored) == plaintext
    if plaintext:
        assert plaintext not in stored


@settings(max_examples=200)
@given(st.lists(st.binary(max_size=100), max_size=40))
def test_the_batch_encryptor_makes_tokens_fernet_decrypts_to_each_value(
    plaintexts: list[bytes],
) -> None:
    """Fernet itself is the oracle: any mix of lengths (empty, block-aligned, several blocks)."""
    tokens = FernetBatchEncryptor(NEW_KEY).encrypt(plaintexts)
    fernet = Fernet(NEW_KEY.encode())
    assert [fernet.decrypt(token) for token in tokens] == plaintexts
    assert len(set(tokens)) == len(tokens)  # a fresh IV for every value


def test_the_batch_encryptor_never_reuses_an_iv_for_equal_values() -> None:
    tokens = FernetBatchEncryptor(NEW_KEY).encrypt([b"ann@example.com"] * 500)
    ivs = {base64.urlsafe_b64decode(token)[9:25] for token in tokens}  # after version, time
    assert len(ivs) == 500


def test_encrypt_many_stores_what_decrypt_reads_under_the_current_key() -> None:
    cipher = PiiCipher([NEW_KEY, OLD_KEY], HMAC_KEY)
    values = ["ann@example.com", "", "Jörg 🐍 ∑", "x" * 300]
    stored = cipher.encrypt_many(values)
    assert all(s.startswith(f"{key_id(NEW_KEY)}:") for s in stored)
    assert [cipher.decrypt(s) for s in stored] == values
    assert cipher.encrypt_many([]) == []


@settings(max_examples=200)
@given(st.lists(st.binary(max_size=100), max_size=40))
def test_the_batch_decryptor_reads_what_fernet_encrypts(plaintexts: list[bytes]) -> None:
    """Fernet itself makes the tokens: any mix of lengths, decrypted in one batch."""
    fernet = Fernet(NEW_KEY.encode())
    tokens = [fernet.encrypt(p).decode() for p in plaintexts]
    assert FernetBatchDecryptor(NEW_KEY).decrypt(tokens) == plaintexts


def test_the_batch_decryptor_refuses_tampered_foreign_and_malformed_tokens() -> None:
    good = Fernet(NEW_KEY.encode()).encrypt(b"ann@example.com").decode()
    raw = bytearray(base64.urlsafe_b64decode(good))
    raw[30] ^= 1  # a ciphertext bit
    tampered = base64.urlsafe_b64encode(bytes(raw)).decode()
    foreign = Fernet(OLD_KEY.encode()).encrypt(b"bob@example.com").decode()
    found = FernetBatchDecryptor(NEW_KEY).decrypt([good, tampered, foreign, "not base64!", ""])
    assert found == [b"ann@example.com", None, None, None, None]


def test_decrypt_many_reads_values_under_every_configured_key() -> None:
    old = PiiCipher([OLD_KEY], HMAC_KEY).encrypt("old@example.com")
    cipher = PiiCipher([NEW_KEY, OLD_KEY], HMAC_KEY)
    stored = [cipher.encrypt("ann@example.com"), old, cipher.encrypt("")]
    assert cipher.decrypt_many(stored) == ["ann@example.com", "old@example.com", ""]
    tampered = stored[0][:-6] + ("A" if stored[0][-6] != "A" else "B") + stored[0][-5:]
    with pytest.raises(UnknownEncryptionKey):
        cipher.decrypt_many([tampered])


def test_the_batch_encryptor_refuses_a_key_that_is_not_a_fernet_key() -> None:
    with pytest.raises(ValueError, match="32 url-safe base64"):
        FernetBatchEncryptor("c2hvcnQ=")


def test_ciphertext_starts_with_the_id_of_the_key_that_made_it() -> None:
    cipher = PiiCipher([NEW_KEY, OLD_KEY], HMAC_KEY)
    stored = cipher.encrypt("ann@example.com")
    assert stored.startswith(f"{key_id(NEW_KEY)}:")
    assert cipher.current_key_id == key_id(NEW_KEY)
    assert key_id(NEW_KEY) != key_id(OLD_KEY)
    assert cipher.encrypt("ann@example.com") != stored  # a fresh IV every time


def test_a_cipher_with_new_and_old_keys_reads_old_values_and_rotates_them_to_the_new_key() -> None:
    old = PiiCipher([OLD_KEY], HMAC_KEY)
    both = PiiCipher([NEW_KEY, OLD_KEY], HMAC_KEY)
    stored = old.encrypt("ann@example.com")
    assert stored.startswith(f"{key_id(OLD_KEY)}:")
    assert both.decrypt(stored) == "ann@example.com"
    rotated = both.rotate(stored)
    assert rotated.startswith(f"{key_id(NEW_KEY)}:")
    assert PiiCipher([NEW_KEY], HMAC_KEY).decrypt(rotated) == "ann@example.com"
    assert both.rotate(rotated) == rotated  # already under the newest key: untouched


def test_a_value_under_an_unknown_key_raises_unknown_encryption_key() -> None:
    stored = PiiCipher([OLD_KEY], HMAC_KEY).encrypt("ann@example.com")
    new_only = PiiCipher([NEW_KEY], HMAC_KEY)
    with pytest.raises(UnknownEncryptionKey, match=key_id(OLD_KEY)):
        new_only.decrypt(stored)
    with pytest.raises(UnknownEncryptionKey, match=key_id(OLD_KEY)):
        new_only.rotate(stored)


def test_a_tampered_value_under_a_known_key_id_raises_unknown_encryption_key() -> None:
    cipher = PiiCipher([NEW_KEY], HMAC_KEY)
    kid, _, token = cipher.encrypt("ann@example.com").partition(":")
    forged = f"{kid}:{PiiCipher([OLD_KEY], HMAC_KEY).encrypt('x').partition(':')[2]}"
    with pytest.raises(UnknownEncryptionKey, match="does not decrypt"):
        cipher.decrypt(forged)
    with pytest.raises(UnknownEncryptionKey):
        cipher.decrypt(f"{kid}:{token[:-4]}AAAA")


def test_a_cipher_needs_at_least_one_key() -> None:
    with pytest.raises(ValueError, match="at least one encryption key"):
        PiiCipher([], HMAC_KEY)


# --- at rest --------------------------------------------------------------------------------


async def test_no_plaintext_address_or_phone_is_stored_in_any_column(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    people = [
        ("Zebulon.Quartz@Plaintext-Check.example", "zebulon.quartz", "+4915187654321"),
        ("xanthippe.vorlauf@example.org", "xanthippe.vorlauf", "+14155550123"),
        ("Ölaf.Nörd@Bücher.example", "ölaf.nörd", "+33612345678"),
    ]
    for email, _, phone in people:
        await add_subscriber(client, email, phone=phone, name="Plain Name", tags=["tagged"])
    subscribers = await raw_rows(session, "SELECT * FROM subscribers")
    assert len(subscribers) == 3
    every_row = list(subscribers)
    for table in all_metadata().sorted_tables:
        every_row += await raw_rows(session, f"SELECT * FROM {table.name}")
    forbidden = []
    for email, local_part, phone in people:
        parsed = parse_email(email)
        forbidden += [
            email,
            email.lower(),
            parsed.address,
            parsed.index_key,
            local_part,
            parsed.address.split("@")[0],
            phone,
            phone.lstrip("+"),
        ]
    for row in every_row:
        for column, value in row.items():
            for plain in forbidden:
                assert plain.lower() not in str(value).lower(), (column, plain)
    # and the API still shows them in clear text
    listed = (await client.get("/subscribers/")).json()["items"]
    assert [s["phone"] for s in listed] == [p for _, _, p in people]


async def test_encrypted_columns_carry_the_current_key_id(
    client: httpx.AsyncClient, session: AsyncSession, db: Runtime
) -> None:
    await add_subscriber(client, "keyed@example.com", phone="+4915112345678")
    await add_subscriber(client, "nophone@example.com")
    rows = await raw_rows(session, "SELECT email, phone, email_hash FROM subscribers ORDER BY id")
    current = db.cipher.current_key_id
    assert str(rows[0]["email"]).startswith(f"{current}:")
    assert str(rows[0]["phone"]).startswith(f"{current}:")
    assert rows[1]["phone"] is None  # NULL stays NULL, not an encrypted empty value
    assert rows[0]["email_hash"] == db.cipher.blind_index("keyed@example.com")


# --- rotation -------------------------------------------------------------------------------


class Interrupted(Exception):
    """Stands in for a crash between two batches."""


def key_ids(rows: list[dict[str, object]], column: str) -> Counter[str]:
    return Counter(str(r[column]).partition(":")[0] for r in rows if r[column] is not None)


async def test_rotation_is_resumable_and_moves_every_row_to_the_new_key(
    client: httpx.AsyncClient, session: AsyncSession, db: Runtime
) -> None:
    secrets = load_secrets(db.settings)
    old_ids = {key_id(k) for k in secrets.encryption_keys}
    people = [
        (f"Rot{i:02d}.Person@Example.org", f"+49151{i:08d}" if i % 3 else None) for i in range(25)
    ]
    created = [await add_subscriber(client, email, phone=phone) for email, phone in people]
    before = await raw_rows(session, "SELECT id, email_hash FROM subscribers ORDER BY id")

    new_key = Fernet.generate_key().decode()
    new_id = key_id(new_key)
    rotating = PiiCipher([new_key, *secrets.encryption_keys], secrets.hmac_key)
    install_cipher(rotating)

    progress: list[int] = []

    def crash_after_first_batch(rows: int) -> None:
        progress.append(rows)
        raise Interrupted

    with pytest.raises(Interrupted):
        await rotate_encryption(
            db.database.sessions,
            rotating,
            batch_size=10,
            actor="test",
            on_progress=crash_after_first_batch,
        )
    assert progress == [10]
    halfway = await raw_rows(session, "SELECT email, phone FROM subscribers")
    email_ids = key_ids(halfway, "email")
    assert email_ids[new_id] == 10
    assert sum(n for kid, n in email_ids.items() if kid in old_ids) == 15
    assert await count_stale_rows(session, rotating) == 15
    await session.rollback()

    progress.clear()
    rewritten = await rotate_encryption(
        db.database.sessions, rotating, batch_size=10, actor="test", on_progress=progress.append
    )
    assert rewritten == 15
    assert progress == [10, 5]

    after = await raw_rows(session, "SELECT id, email, phone, email_hash FROM subscribers")
    assert len(after) == 25
    assert all(str(r["email"]).startswith(f"{new_id}:") for r in after)
    assert all(r["phone"] is None or str(r["phone"]).startswith(f"{new_id}:") for r in after)
    assert sum(r["phone"] is not None for r in after) == sum(p is not None for _, p in people)
    assert await count_stale_rows(session, rotating) == 0
    await session.rollback()
    assert await rotate_encryption(db.database.sessions, rotating, actor="test") == 0
    assert sorted((r["id"], r["email_hash"]) for r in after) == sorted(
        (r["id"], r["email_hash"]) for r in before
    )

    install_cipher(PiiCipher([new_key], secrets.hmac_key))  # the old key is gone for good
    listed = (await client.get("/subscribers/", params={"limit": 100})).json()["items"]
    # re-encrypting is not an edit: updated_at (shown to API users) must not move
    assert [s["updated_at"] for s in listed] == [c["updated_at"] for c in created]
    assert listed == created
    for (email, phone), body in zip(people, created, strict=True):
        found = await client.get(f"/subscribers/{email.upper()}")
        assert found.status_code == 200, found.text
        assert found.json()["id"] == body["id"] and found.json()["phone"] == phone
    by_filter = await client.get("/subscribers/", params={"email": "rot07.person@example.org"})
    assert [s["id"] for s in by_filter.json()["items"]] == [created[7]["id"]]

    audits = (
        await session.scalars(select(AuditEntry).where(AuditEntry.action == "encryption.rotate"))
    ).all()
    assert [(a.actor, a.target_id, a.detail) for a in audits] == [("test", new_id, {"rows": 15})]


async def test_rotation_without_the_old_key_refuses_and_changes_nothing(
    client: httpx.AsyncClient, session: AsyncSession, db: Runtime
) -> None:
    secrets = load_secrets(db.settings)
    for i in range(3):
        await add_subscriber(client, f"kept{i}@example.com")
    before = await raw_rows(session, "SELECT id, email FROM subscribers ORDER BY id")
    new_only = PiiCipher([Fernet.generate_key().decode()], secrets.hmac_key)
    with pytest.raises(UnknownEncryptionKey):
        await rotate_encryption(db.database.sessions, new_only, actor="test")
    assert await raw_rows(session, "SELECT id, email FROM subscribers ORDER BY id") == before


# --- CLI ------------------------------------------------------------------------------------


@pytest.fixture
def cli(cli_env: Runtime, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    """The CLI pointed at the test database, with a terminal wide enough for its output."""
    monkeypatch.setenv("COLUMNS", "200")
    yield cli_env
    install_cipher(cli_env.cipher)


async def _seed(settings: Settings, people: list[tuple[str, str | None]]) -> None:
    database = create_database(settings)
    try:
        async with database.sessions() as session:
            for email, phone in people:
                await create_subscriber(session, SubscriberCreate(email=email, phone=phone), "test")
    finally:
        await database.dispose()


async def _read_back(settings: Settings) -> tuple[list[dict[str, object]], list[tuple[str, str]]]:
    """Raw rows, and (email, phone) decrypted with whatever cipher is installed now."""
    database = create_database(settings)
    try:
        async with database.sessions() as session:
            raw = [
                dict(r)
                for r in (await session.execute(text("SELECT email, phone FROM subscribers")))
                .mappings()
                .all()
            ]
            subscribers = (await session.scalars(select(Subscriber).order_by(Subscriber.id))).all()
            decrypted = [(s.email, s.phone or "") for s in subscribers]
            found = await find_subscriber(session, "CLI3@example.com")
            assert found.email == "cli3@example.com"
            return raw, decrypted
    finally:
        await database.dispose()


def test_cli_rotate_encryption_reencrypts_every_row_and_reports_the_count(
    cli: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = load_secrets(cli.settings)
    people = [(f"cli{i}@example.com", f"+4915100000{i:03d}" if i % 2 else None) for i in range(7)]
    asyncio.run(_seed(cli.settings, people))

    new_key = Fernet.generate_key().decode()
    monkeypatch.setenv("TIDINGS_ENCRYPTION_KEYS", ",".join([new_key, *secrets.encryption_keys]))
    result = runner.invoke(app, ["keys", "rotate-encryption", "--batch-size", "3"])
    assert result.exit_code == 0, result.output
    assert "re-encrypted 7 rows" in result.output

    again = runner.invoke(app, ["keys", "rotate-encryption"])
    assert again.exit_code == 0, again.output
    assert "re-encrypted 0 rows" in again.output

    install_cipher(PiiCipher([new_key], secrets.hmac_key))
    raw, decrypted = asyncio.run(_read_back(cli.settings))
    assert all(str(r["email"]).startswith(f"{key_id(new_key)}:") for r in raw)
    assert all(r["phone"] is None or str(r["phone"]).startswith(key_id(new_key)) for r in raw)
    assert decrypted == [(email, phone or "") for email, phone in people]


def test_cli_rotate_encryption_rejects_a_batch_size_below_one(cli: Runtime) -> None:
    result = runner.invoke(app, ["keys", "rotate-encryption", "--batch-size", "0"])
    assert result.exit_code == 2
    assert "--batch-size" in result.output
