"""DKIM keys per sending domain on both databases: stored encrypted, loaded as signers whose
signatures dkimpy verifies against the stored DNS record, validated, rotated, and the CLI."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from datetime import UTC, datetime

import dkim  # type: ignore[import-untyped]  # dkimpy ships no type information
import pytest
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession
from typer.testing import CliRunner

from tidings.cli import app
from tidings.config import Settings
from tidings.db.engine import create_database
from tidings.delivery.dkim import dns_record
from tidings.delivery.dkim_keys import (
    DkimKeyExists,
    DkimKeyNotFound,
    create_dkim_key,
    delete_dkim_key,
    dns_name,
    list_dkim_keys,
    load_signers,
    set_dkim_key_active,
    zone_file_value,
)
from tidings.delivery.mime import MessageHeaders, build_message, message_id
from tidings.errors import Conflict, NotFound, RuleViolation
from tidings.runtime import Runtime
from tidings.security.crypto import PiiCipher, active_cipher, install_cipher, key_id
from tidings.security.models import AuditEntry
from tidings.security.rotation import encrypted_tables, rotate_encryption

runner = CliRunner()


async def raw_keys(session: AsyncSession) -> list[dict[str, object]]:
    """The dkim_keys rows as the database holds them, bypassing the model."""
    sql = "SELECT domain, selector, algorithm, private_key, dns_record, active FROM dkim_keys"
    rows = [dict(row) for row in (await session.execute(text(sql))).mappings().all()]
    await session.commit()  # end the read (SQLite has one connection); loaded keys stay loaded
    return rows


def message(domain: str) -> bytes:
    headers = MessageHeaders(
        from_address=f"news@{domain}",
        to_address="ann@example.org",
        subject="Hello  there",
        message_id=message_id(7, domain),
        date=datetime(2026, 11, 25, 12, 0, tzinfo=UTC),
        list_unsubscribe_url=f"https://{domain}/u/7",
    )
    return build_message(headers, "Hi Ann \t\n\n", "<p>Hi Ann</p>")


def verifies(signed: bytes, published: dict[str, str]) -> bool:
    """dkimpy's verdict, with DNS answered from ``published`` (name -> TXT value)."""

    def dns(name: bytes, timeout: int = 5) -> bytes:
        return published[name.decode().removesuffix(".")].encode()

    return bool(dkim.verify(signed, dnsfunc=dns))


# --- create and load ------------------------------------------------------------------------------


async def test_a_new_key_is_stored_encrypted_and_decrypts_to_the_published_key(
    session: AsyncSession,
) -> None:
    key = await create_dkim_key(session, "example.com", "s1", actor="test")
    assert (key.domain, key.selector, key.algorithm, key.active) == (
        "example.com",
        "s1",
        "rsa-sha256",
        True,
    )
    [row] = await raw_keys(session)
    stored = str(row["private_key"])
    assert "PRIVATE KEY" not in stored and "MII" not in stored
    assert stored.startswith(f"{active_cipher().current_key_id}:")
    pem = active_cipher().decrypt(stored)
    assert pem.startswith("-----BEGIN PRIVATE KEY-----")  # PKCS8, no password
    private = serialization.load_pem_private_key(pem.encode(), password=None)
    assert isinstance(private, rsa.RSAPrivateKey) and private.key_size == 2048
    assert row["dns_record"] == dns_record(private) == key.dns_record
    assert dns_name(key) == "s1._domainkey.example.com"


@pytest.mark.parametrize(
    ("kind", "algorithm", "key_type"),
    [
        ("rsa", "rsa-sha256", rsa.RSAPrivateKey),
        ("ed25519", "ed25519-sha256", ed25519.Ed25519PrivateKey),
    ],
)
async def test_a_loaded_signer_signs_what_dkimpy_verifies_against_the_stored_record(
    session: AsyncSession, kind: str, algorithm: str, key_type: type
) -> None:
    key = await create_dkim_key(session, "news.example.com", "mail-2026", kind, actor="test")
    assert key.algorithm == algorithm
    signers = await load_signers(session)
    signer = signers["news.example.com"]
    assert isinstance(signer.key, key_type) and signer.algorithm == algorithm
    [row] = await raw_keys(session)
    published = {dns_name(key): str(row["dns_record"])}
    signed = signer.sign(message("news.example.com"))
    assert f"a={algorithm}; c=relaxed/relaxed; d=news.example.com; s=mail-2026;".encode() in signed
    assert verifies(signed, published)
    assert not verifies(signed.replace(b"Hi Ann", b"Hi Bob"), published)


async def test_each_domain_signs_with_its_newest_active_key(session: AsyncSession) -> None:
    await create_dkim_key(session, "example.com", "old", "ed25519", actor="test")
    await create_dkim_key(session, "example.com", "new", "ed25519", actor="test")
    await create_dkim_key(session, "example.org", "s1", "ed25519", actor="test")
    await create_dkim_key(session, "off.example", "s1", "ed25519", actor="test")
    await set_dkim_key_active(session, "off.example", "s1", False, "test")

    signers = await load_signers(session)
    assert {d: s.selector for d, s in signers.items()} == {
        "example.com": "new",
        "example.org": "s1",
    }

    await set_dkim_key_active(session, "example.com", "new", False, "test")
    assert (await load_signers(session))["example.com"].selector == "old"


async def test_loading_signers_logs_no_key_material(
    session: AsyncSession, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    await create_dkim_key(session, "example.com", "s1", "ed25519", actor="test")
    [row] = await raw_keys(session)
    with caplog.at_level(logging.DEBUG):
        signers = await load_signers(session)
    pem = signers["example.com"].key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    body = pem.decode().splitlines()[1]
    logged = caplog.text + "".join(capsys.readouterr())
    assert "dkim.signers_loaded" in logged and "example.com" in logged
    assert "PRIVATE KEY" not in logged and body not in logged
    assert str(row["private_key"]).partition(":")[2][:40] not in logged


async def test_no_active_key_means_no_signers(session: AsyncSession) -> None:
    assert await load_signers(session) == {}


# --- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "domain",
    [
        "",
        "localhost",
        "exa mple.com",
        "example..com",
        "-example.com",
        "example-.com",
        "under_score.example",
        f"{'a' * 64}.example",
        ".".join(["abcdefghij"] * 24) + ".com",  # 267 characters
        "news@example.com",
    ],
)
async def test_a_bad_domain_is_refused_saying_what_a_domain_looks_like(
    session: AsyncSession, domain: str
) -> None:
    with pytest.raises(RuleViolation, match=r"not a valid domain name|longer than 253") as caught:
        await create_dkim_key(session, domain, "s1", actor="test")
    assert repr(domain) in caught.value.detail
    assert await raw_keys(session) == []


async def test_an_ip_address_is_not_a_domain(session: AsyncSession) -> None:
    with pytest.raises(RuleViolation, match="is an IP address"):
        await create_dkim_key(session, "192.0.2.1", "s1", actor="test")


@pytest.mark.parametrize("selector", ["", "s 1", "s_1", "s1.", ".s1", "a..b", "ü1", "x" * 64])
async def test_a_bad_selector_is_refused_saying_what_a_selector_looks_like(
    session: AsyncSession, selector: str
) -> None:
    with pytest.raises(RuleViolation, match=r"selector .* (is not valid|is longer than 63)"):
        await create_dkim_key(session, "example.com", selector, actor="test")


async def test_an_unknown_algorithm_is_refused_listing_the_supported_ones(
    session: AsyncSession,
) -> None:
    with pytest.raises(RuleViolation, match="'dsa' is not supported; use one of: rsa, ed25519"):
        await create_dkim_key(session, "example.com", "s1", "dsa", actor="test")


async def test_a_dns_name_over_253_characters_is_refused(session: AsyncSession) -> None:
    domain = ".".join(["abcdefghi"] * 20) + ".com"  # 203 characters: a valid domain
    with pytest.raises(RuleViolation, match="too long for DNS; use a shorter selector"):
        await create_dkim_key(session, domain, "s" * 40, actor="test")


async def test_domain_and_selector_are_lowercased_and_a_multi_label_selector_is_kept(
    session: AsyncSession,
) -> None:
    key = await create_dkim_key(session, " News.Example.COM. ", "S1.Mail", "ed25519", actor="test")
    assert (key.domain, key.selector) == ("news.example.com", "s1.mail")
    assert dns_name(key) == "s1.mail._domainkey.news.example.com"


async def test_a_second_key_with_the_same_domain_and_selector_is_a_conflict(
    session: AsyncSession,
) -> None:
    await create_dkim_key(session, "example.com", "s1", "ed25519", actor="test")
    with pytest.raises(
        DkimKeyExists, match=r"example\.com already has a DKIM key with selector s1"
    ):
        await create_dkim_key(session, "EXAMPLE.com", "S1", "ed25519", actor="test")
    assert issubclass(DkimKeyExists, Conflict)
    assert len(await raw_keys(session)) == 1
    other = await create_dkim_key(session, "example.com", "s2", "ed25519", actor="test")
    assert other.selector == "s2"


async def test_an_idn_domain_is_stored_as_punycode_and_found_by_either_form(
    session: AsyncSession,
) -> None:
    key = await create_dkim_key(session, "Bücher.Example", "s1", "ed25519", actor="test")
    assert key.domain == "xn--bcher-kva.example"
    assert dns_name(key) == "s1._domainkey.xn--bcher-kva.example"
    assert "xn--bcher-kva.example" in await load_signers(session)
    disabled = await set_dkim_key_active(session, "bücher.example", "s1", False, "test")
    assert disabled.id == key.id and not disabled.active


# --- disable, delete, audit -----------------------------------------------------------------------


async def test_keys_are_disabled_enabled_and_deleted_with_an_audit_trail(
    session: AsyncSession,
) -> None:
    key = await create_dkim_key(session, "example.com", "s1", "ed25519", actor="ann")
    assert not (await set_dkim_key_active(session, "example.com", "s1", False, "ann")).active
    assert not (await set_dkim_key_active(session, "example.com", "s1", False, "ann")).active
    assert (await set_dkim_key_active(session, "example.com", "s1", True, "ann")).active
    deleted = await delete_dkim_key(session, "example.com", "s1", "ann")
    assert deleted.id == key.id
    assert await list_dkim_keys(session) == []

    audits = (await session.scalars(select(AuditEntry).order_by(AuditEntry.id))).all()
    assert [(a.actor, a.action, a.target_id) for a in audits] == [
        ("ann", "dkim_key.create", str(key.id)),
        ("ann", "dkim_key.disable", str(key.id)),  # disabling twice is recorded once
        ("ann", "dkim_key.enable", str(key.id)),
        ("ann", "dkim_key.delete", str(key.id)),
    ]
    assert audits[0].detail == {
        "domain": "example.com",
        "selector": "s1",
        "algorithm": "ed25519-sha256",
    }


async def test_a_missing_key_is_not_found(session: AsyncSession) -> None:
    with pytest.raises(DkimKeyNotFound, match=r"no DKIM key for example\.com with selector s9"):
        await delete_dkim_key(session, "example.com", "s9", "test")
    with pytest.raises(NotFound):
        await set_dkim_key_active(session, "example.com", "s9", False, "test")


async def test_keys_are_listed_by_domain_then_age(session: AsyncSession) -> None:
    for domain, selector in [("b.example", "s1"), ("a.example", "s2"), ("a.example", "s1")]:
        await create_dkim_key(session, domain, selector, "ed25519", actor="test")
    listed = [(k.domain, k.selector) for k in await list_dkim_keys(session)]
    assert listed == [("a.example", "s2"), ("a.example", "s1"), ("b.example", "s1")]


# --- zone file form -------------------------------------------------------------------------------


def test_an_rsa_record_is_split_into_quoted_strings_of_at_most_255_characters() -> None:
    record = "v=DKIM1; k=rsa; p=" + "A" * 392
    value = zone_file_value(record)
    assert [len(s) for s in value[1:-1].split('" "')] == [255, 155]
    assert value == f'"{record[:255]}" "{record[255:]}"'  # receivers join them back


def test_a_short_record_is_one_quoted_string_and_quotes_are_escaped() -> None:
    assert zone_file_value("v=DKIM1; k=ed25519; p=abc") == '"v=DKIM1; k=ed25519; p=abc"'
    assert zone_file_value('a"b\\c') == '"a\\"b\\\\c"'


# --- key rotation ---------------------------------------------------------------------------------


def test_rotation_covers_the_dkim_private_keys() -> None:
    columns = {spec.table.name: spec.columns for spec in encrypted_tables()}
    assert columns["dkim_keys"] == ("private_key",)


async def test_rotate_encryption_reencrypts_dkim_keys_which_still_sign_under_the_new_key(
    session: AsyncSession, db: Runtime
) -> None:
    await create_dkim_key(session, "example.com", "s1", "ed25519", actor="test")
    old_keys, hmac_key = db.cipher.worker_args()
    new_key = Fernet.generate_key().decode()
    rotating = PiiCipher([new_key, *old_keys], hmac_key)
    install_cipher(rotating)
    assert await rotate_encryption(db.database.sessions, rotating, actor="test") == 1
    [row] = await raw_keys(session)
    assert str(row["private_key"]).startswith(f"{key_id(new_key)}:")

    install_cipher(PiiCipher([new_key], hmac_key))  # the old key is gone for good
    signer = (await load_signers(session))["example.com"]
    published = {"s1._domainkey.example.com": str(row["dns_record"])}
    assert verifies(signer.sign(message("example.com")), published)


# --- CLI ------------------------------------------------------------------------------------------


@pytest.fixture
def cli(cli_env: Runtime, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    """The CLI pointed at the test database, with a terminal wide enough for its tables."""
    monkeypatch.setenv("COLUMNS", "250")
    yield cli_env
    install_cipher(cli_env.cipher)


async def _stored_private_keys(settings: Settings) -> list[str]:
    database = create_database(settings)
    try:
        async with database.sessions() as session:
            return [str(row["private_key"]) for row in await raw_keys(session)]
    finally:
        await database.dispose()


def test_cli_create_prints_the_dns_name_and_the_record_to_publish(cli: Runtime) -> None:
    result = runner.invoke(app, ["dkim", "create", "example.com", "--selector", "s1"])
    assert result.exit_code == 0, result.output
    assert "created DKIM key s1 for example.com (rsa-sha256)" in result.output
    assert "s1._domainkey.example.com" in result.output
    assert "  v=DKIM1; k=rsa; p=MII" in result.output
    assert 's1._domainkey.example.com. IN TXT "v=DKIM1; k=rsa; p=MII' in result.output
    assert '" "' in result.output  # RSA-2048 needs two strings in a zone file
    assert "Publish this record before sending" in result.output
    assert "PRIVATE KEY" not in result.output


def test_cli_create_ed25519(cli: Runtime) -> None:
    args = ["dkim", "create", "example.com", "--selector", "ed1", "--algorithm", "ed25519"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "(ed25519-sha256)" in result.output and "v=DKIM1; k=ed25519; p=" in result.output


def test_cli_list_shows_the_keys_and_never_a_private_key(cli: Runtime) -> None:
    runner.invoke(app, ["dkim", "create", "example.com", "--selector", "s1"])
    listed = runner.invoke(app, ["dkim", "list"])
    assert listed.exit_code == 0, listed.output
    assert "example.com" in listed.output and "s1._domainkey.example.com" in listed.output
    assert "rsa-sha256" in listed.output and "yes" in listed.output
    assert "1 DKIM keys" in listed.output
    assert "PRIVATE KEY" not in listed.output
    [stored] = asyncio.run(_stored_private_keys(cli.settings))
    assert stored.partition(":")[2][:20] not in listed.output


def test_cli_duplicate_create_is_one_red_line_and_exit_status_1(cli: Runtime) -> None:
    first = runner.invoke(app, ["dkim", "create", "example.com", "--selector", "s1"])
    assert first.exit_code == 0, first.output
    again = runner.invoke(app, ["dkim", "create", "Example.com", "--selector", "S1"])
    assert again.exit_code == 1
    assert "error: example.com already has a DKIM key with selector s1" in again.output
    assert "Traceback" not in again.output


def test_cli_bad_input_is_refused_without_a_traceback(cli: Runtime) -> None:
    bad_domain = runner.invoke(app, ["dkim", "create", "exa mple.com", "--selector", "s1"])
    assert bad_domain.exit_code == 1 and "not a valid domain name" in bad_domain.output
    bad_algorithm = runner.invoke(
        app, ["dkim", "create", "example.com", "--selector", "s1", "--algorithm", "dsa"]
    )
    assert bad_algorithm.exit_code == 2 and "--algorithm" in bad_algorithm.output
    missing = runner.invoke(app, ["dkim", "delete", "example.com", "--selector", "s1"])
    assert missing.exit_code == 1 and "no DKIM key for example.com with selector s1" in (
        missing.output
    )
    for result in (bad_domain, bad_algorithm, missing):
        assert "Traceback" not in result.output


def test_cli_disable_enable_and_delete(cli: Runtime) -> None:
    created = runner.invoke(
        app, ["dkim", "create", "example.com", "--selector", "s1", "--algorithm", "ed25519"]
    )
    assert created.exit_code == 0, created.output
    disabled = runner.invoke(app, ["dkim", "disable", "example.com", "--selector", "s1"])
    assert disabled.exit_code == 0 and "no longer signs" in disabled.output
    assert " no " in runner.invoke(app, ["dkim", "list"]).output
    enabled = runner.invoke(app, ["dkim", "enable", "example.com", "--selector", "s1"])
    assert enabled.exit_code == 0 and "signs from the next run on" in enabled.output
    deleted = runner.invoke(app, ["dkim", "delete", "example.com", "--selector", "s1"])
    assert deleted.exit_code == 0 and "deleted DKIM key s1 of example.com" in deleted.output
    assert "0 DKIM keys" in runner.invoke(app, ["dkim", "list"]).output
