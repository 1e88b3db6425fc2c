"""DKIM signatures of our own canonicalization, verified by dkimpy (the oracle)."""

from __future__ import annotations

from datetime import UTC, datetime

import dkim
import pytest
from dkim.canonicalization import Relaxed
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.delivery.dkim import DkimSigner, canonical_body, dns_record, generate_key
from tidings.delivery.mime import MessageHeaders, build_message, message_id

RSA_KEY = generate_key("rsa")
ED_KEY = generate_key("ed25519")


def message(subject: str = "Hello  there", html: str = "<p>Hi Ann</p>  \n\n") -> bytes:
    headers = MessageHeaders(
        from_address="news@example.com",
        to_address="ann@example.org",
        subject=subject,
        message_id=message_id(7, "example.com"),
        date=datetime(2026, 11, 25, 12, 0, tzinfo=UTC),
        from_name="Example News",
        list_unsubscribe_url="https://example.com/u/7",
    )
    return build_message(headers, "Hi Ann \t\n\n\n", html)


def verify(signed: bytes, record: str) -> bool:
    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"s1._domainkey.example.com."
        return record.encode()

    return bool(dkim.verify(signed, dnsfunc=dns))


@pytest.mark.parametrize("key", [RSA_KEY, ED_KEY], ids=["rsa-2048", "ed25519"])
def test_a_signed_message_verifies_and_a_tampered_one_does_not(key: object) -> None:
    signer = DkimSigner("example.com", "s1", key)  # type: ignore[arg-type]
    signed = signer.sign(message())
    assert verify(signed, dns_record(signer.key))
    assert b"h=from:to:subject:date:message-id:list-unsubscribe:list-unsubscribe-post;" in signed
    assert not verify(signed.replace(b"Hello  there", b"Hello  thera"), dns_record(signer.key))
    assert not verify(signed.replace(b"Hi Ann", b"Hi Bob"), dns_record(signer.key))


def test_the_dns_record_names_the_key_type() -> None:
    assert dns_record(RSA_KEY).startswith("v=DKIM1; k=rsa; p=MII")
    assert dns_record(ED_KEY).startswith("v=DKIM1; k=ed25519; p=")


@pytest.mark.parametrize(
    ("body", "canonical"),
    [
        (b"", b""),
        (b"\r\n\r\n", b""),
        (b"a  b \t\r\n\r\n", b"a b\r\n"),
        (b" x\r\n\r\ny ", b" x\r\n\r\ny\r\n"),
    ],
)
def test_relaxed_body_canonicalization(body: bytes, canonical: bytes) -> None:
    assert canonical_body(body) == canonical


@settings(max_examples=60, deadline=None)
@given(subject=st.text(max_size=120), html=st.text(max_size=2000))
def test_any_message_we_build_verifies(subject: str, html: str) -> None:
    signer = DkimSigner("example.com", "s1", RSA_KEY)
    assert verify(signer.sign(message(subject, html)), dns_record(RSA_KEY))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([b" ", b"\t", b"\r\n", b"a", b"b", b"  "])))
def test_body_canonicalization_matches_dkimpys(pieces: list[bytes]) -> None:
    body = b"".join(pieces) + b"\r\n"  # SMTP carries only whole lines
    assert canonical_body(body) == Relaxed.canonicalize_body(body)
