"""DKIM signing keys per sending domain: create, list, enable/disable, delete, and the signers the
delivery workers sign with. The CLI (and later the API) call these; nothing here knows HTTP.

The private key is stored as PKCS8 PEM encrypted with the PII cipher and decrypted only in
``load_signers``: listing keys never holds a usable private key, and ``tidings keys
rotate-encryption`` re-encrypts the column (see ``security.rotation``).
"""

from __future__ import annotations

import asyncio
import re
from typing import Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tidings.db.errors import flush_unique
from tidings.delivery.dkim import DkimSigner, PrivateKey, dns_record, generate_key
from tidings.delivery.models import DkimKey
from tidings.errors import Conflict, NotFound, RuleViolation
from tidings.logs import get_logger
from tidings.security.audit import record_audit
from tidings.security.crypto import active_cipher

log = get_logger("tidings.delivery")

KeyKind = Literal["rsa", "ed25519"]
ALGORITHMS: dict[str, str] = {"rsa": "rsa-sha256", "ed25519": "ed25519-sha256"}
MAX_DOMAIN = 253  # RFC 1035, without the trailing dot
MAX_SELECTOR = 63  # the column's width (a selector of several labels shares it)
MAX_TXT_STRING = 255  # RFC 1035: one character-string of a TXT record
DOMAINKEY = "_domainkey"
_HOST_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_SELECTOR_LABEL = re.compile(r"[a-z0-9-]{1,63}")


class DkimKeyExists(Conflict):
    code = "dkim_key_exists"


class DkimKeyNotFound(NotFound):
    pass


def normalize_domain(raw: str) -> str:
    """The sending domain as it appears in ``d=`` and in DNS: IDN labels in their ASCII (punycode)
    form, lowercased, without a trailing dot."""
    try:
        ascii_form = raw.strip().removesuffix(".").encode("idna").decode("ascii").lower()
    except UnicodeError:  # an empty label, one over 63 characters, or a prohibited character
        raise _invalid_domain(raw) from None
    labels = ascii_form.split(".")
    if len(ascii_form) > MAX_DOMAIN:
        raise RuleViolation(f"domain {raw!r} is longer than {MAX_DOMAIN} characters")
    if len(labels) < 2 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise _invalid_domain(raw)
    if labels[-1].isdigit():
        raise RuleViolation(f"{raw!r} is an IP address; a DKIM key belongs to a domain name")
    return ascii_form


def _invalid_domain(raw: str) -> RuleViolation:
    return RuleViolation(
        f"domain {raw!r} is not a valid domain name: use two or more dot-separated labels of "
        "1 to 63 letters, digits or inner hyphens, e.g. news.example.com"
    )


def normalize_selector(raw: str) -> str:
    """The selector, lowercased: one or more DNS labels (``s1``, ``2026-11.mail``)."""
    selector = raw.strip().lower()
    if len(selector) > MAX_SELECTOR:
        raise RuleViolation(f"selector {raw!r} is longer than {MAX_SELECTOR} characters")
    if not all(_SELECTOR_LABEL.fullmatch(label) for label in selector.split(".")):
        raise RuleViolation(
            f"selector {raw!r} is not valid: use letters, digits and hyphens, with dots only "
            "between labels, e.g. s1 or mail-2026"
        )
    return selector


def dns_name(key: DkimKey) -> str:
    """Where the key's TXT record is published (RFC 6376 section 3.6.2.1)."""
    return f"{key.selector}.{DOMAINKEY}.{key.domain}"


def zone_file_value(record: str) -> str:
    """The TXT value as quoted strings of at most 255 characters each: one string in a TXT record
    cannot be longer, and an RSA-2048 record is about 410 characters. Receivers join them."""
    chunks = [record[i : i + MAX_TXT_STRING] for i in range(0, len(record), MAX_TXT_STRING)]
    return " ".join(f'"{_escape_txt(chunk)}"' for chunk in chunks or [""])


def _escape_txt(chunk: str) -> str:
    # Our records hold no quote or backslash; escaped after splitting, so the 255 limit counts
    # the characters DNS stores, not the escapes.
    return chunk.replace("\\", "\\\\").replace('"', '\\"')


def _algorithm_of(kind: str) -> str:
    """The ``a=`` algorithm a key of this kind signs with."""
    if kind not in ALGORITHMS:
        raise RuleViolation(
            f"algorithm {kind!r} is not supported; use one of: {', '.join(ALGORITHMS)}"
        )
    return ALGORITHMS[kind]


def _check_dns_name_length(selector: str, domain: str) -> None:
    name = f"{selector}.{DOMAINKEY}.{domain}"
    if len(name) > MAX_DOMAIN:
        raise RuleViolation(
            f"{name} is longer than {MAX_DOMAIN} characters, too long for DNS; use a shorter "
            "selector"
        )


def _private_pem(key: PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


async def create_dkim_key(
    session: AsyncSession,
    domain: str,
    selector: str,
    algorithm: str = "rsa",
    *,
    actor: str,
) -> DkimKey:
    """A new active key for ``domain``; the caller publishes ``dns_record`` at ``dns_name``.

    Raises RuleViolation for a bad domain, selector or algorithm and DkimKeyExists when the
    domain already has a key with this selector.
    """
    domain, selector = normalize_domain(domain), normalize_selector(selector)
    signing_algorithm = _algorithm_of(algorithm)
    _check_dns_name_length(selector, domain)
    # RSA key generation takes a noticeable fraction of a second: keep it off the event loop.
    private = await asyncio.to_thread(generate_key, algorithm)
    key = DkimKey(
        domain=domain,
        selector=selector,
        algorithm=signing_algorithm,
        private_key=active_cipher().encrypt(_private_pem(private)),
        dns_record=dns_record(private),
        active=True,
    )
    session.add(key)
    duplicate = DkimKeyExists(
        f"{domain} already has a DKIM key with selector {selector}; choose another selector "
        "(or delete the old key first)"
    )
    await flush_unique(session, duplicate, "dkim_keys", "domain", "selector")
    detail = {"domain": domain, "selector": selector, "algorithm": key.algorithm}
    record_audit(session, actor, "dkim_key.create", "dkim_key", key.id, detail)
    await session.commit()
    return key


async def list_dkim_keys(session: AsyncSession) -> list[DkimKey]:
    query = select(DkimKey).order_by(DkimKey.domain, DkimKey.created_at, DkimKey.id)
    return list((await session.scalars(query)).all())


async def get_dkim_key(session: AsyncSession, domain: str, selector: str) -> DkimKey:
    domain, selector = normalize_domain(domain), normalize_selector(selector)
    key = await session.scalar(
        select(DkimKey).where(DkimKey.domain == domain, DkimKey.selector == selector)
    )
    if key is None:
        raise DkimKeyNotFound(f"no DKIM key for {domain} with selector {selector}")
    return key


async def delete_dkim_key(session: AsyncSession, domain: str, selector: str, actor: str) -> DkimKey:
    """Delete for good; returns the deleted key. Unpublish the DNS record only after messages
    signed with the key have been delivered, or receivers can no longer verify them."""
    key = await get_dkim_key(session, domain, selector)
    detail = {"domain": key.domain, "selector": key.selector}
    record_audit(session, actor, "dkim_key.delete", "dkim_key", key.id, detail)
    await session.delete(key)
    await session.commit()
    return key


async def set_dkim_key_active(
    session: AsyncSession, domain: str, selector: str, active: bool, actor: str
) -> DkimKey:
    """Enable or disable signing with a key (from the next run on); doing it twice is harmless."""
    key = await get_dkim_key(session, domain, selector)
    if key.active != active:
        key.active = active
        action = "dkim_key.enable" if active else "dkim_key.disable"
        detail = {"domain": key.domain, "selector": key.selector}
        record_audit(session, actor, action, "dkim_key", key.id, detail)
        await session.commit()
    return key


def _load_private_key(stored: str) -> PrivateKey:
    pem = active_cipher().decrypt(stored).encode("ascii")
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise TypeError(f"a DKIM key must be RSA or Ed25519, not {type(key).__name__}")
    return key


async def load_signers(session: AsyncSession) -> dict[str, DkimSigner]:
    """One signer per sending domain, from its newest active key.

    Raises UnknownEncryptionKey when a key was encrypted with a key no longer configured.
    """
    query = (
        select(DkimKey)
        .where(DkimKey.active.is_(True))
        .order_by(DkimKey.created_at.desc(), DkimKey.id.desc())
    )
    signers: dict[str, DkimSigner] = {}
    for key in (await session.scalars(query)).all():
        if key.domain not in signers:  # newest first: older keys of a domain are not decrypted
            signers[key.domain] = DkimSigner(
                key.domain, key.selector, _load_private_key(key.private_key)
            )
    # Names only: the key material stays out of every log line.
    log.info("dkim.signers_loaded", domains=sorted(signers))
    return signers
