"""PII protection: Fernet encryption at rest (MultiFernet, newest key first) and a blind index.

Each ciphertext is stored as ``<key id>:<fernet token>``. The key id is a short fingerprint of the
key that encrypted it, so rotation can find the rows still under an older key with a plain query
and resume after a crash without re-encrypting what it already did.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email


class InvalidEmail(ValueError):
    """The text is not a usable e-mail address; the message says why."""


class UnknownEncryptionKey(RuntimeError):
    """A ciphertext was made with a key that is no longer configured."""


@dataclass(frozen=True)
class ParsedEmail:
    address: str  # what we store and send to: trimmed, domain lowercased, IDN domain in ASCII
    index_key: str  # what the blind index hashes: the address with its local part case-folded


# The plain ASCII addresses that make up nearly every list, recognised ~20x faster than by
# email-validator. Anything else (quoted or non-ASCII local parts, IDN or reserved domains) goes
# to email-validator, which stays the authority: a property test checks that whatever the fast
# path accepts, email-validator accepts identically.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PLAIN_ADDRESS = re.compile(rf"({_ATOM}(?:\.{_ATOM})*)@((?:{_LABEL}\.)+[A-Za-z]{{2,63}})")
_RESERVED_SUFFIXES = tuple(f".{name}" for name in SPECIAL_USE_DOMAIN_NAMES)


def _parse_plain_address(text: str) -> ParsedEmail | None:
    match = _PLAIN_ADDRESS.fullmatch(text)
    if match is None or len(match[1]) > 64 or len(text) > 254:
        return None
    domain = match[2].lower()
    if "--" in domain or f".{domain}".endswith(_RESERVED_SUFFIXES):
        return None
    address = f"{match[1]}@{domain}"
    return ParsedEmail(address=address, index_key=address.lower())


def parse_email(raw: str) -> ParsedEmail:
    """Validate an address (syntax only, no DNS) and return its stored and indexed forms.

    The blind index folds the local part's case too: nearly every mailbox provider ignores it,
    and two rows for Ann@x.org and ann@x.org would mail one person twice.
    """
    text = raw.strip()
    plain = _parse_plain_address(text)
    if plain is not None:
        return plain
    try:
        result = validate_email(text, check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidEmail(str(exc)) from exc
    address = f"{result.local_part}@{result.ascii_domain}"
    return ParsedEmail(address=address, index_key=address.lower())


def key_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:8]


class PiiCipher:
    """Encrypts with the newest key, decrypts with any configured key."""

    def __init__(self, keys: Sequence[str], hmac_key: bytes) -> None:
        if not keys:
            raise ValueError("at least one encryption key is required")
        self._fernets = {key_id(k): Fernet(k.encode()) for k in keys}
        self._multi = MultiFernet([Fernet(k.encode()) for k in keys])
        self.current_key_id = key_id(keys[0])
        self._batch = FernetBatchEncryptor(keys[0])
        self._current_decryptor = FernetBatchDecryptor(keys[0])
        self._keys = tuple(keys)
        self._hmac_key = hmac_key

    def worker_args(self) -> tuple[tuple[str, ...], bytes]:
        """What a worker process needs to build the same cipher (see import_rows)."""
        return self._keys, self._hmac_key

    def encrypt(self, plaintext: str) -> str:
        token = self._multi.encrypt(plaintext.encode()).decode()
        return f"{self.current_key_id}:{token}"

    def encrypt_many(self, plaintexts: Sequence[str]) -> list[str]:
        """``encrypt`` for many values at once, several times faster (bulk import)."""
        prefix = f"{self.current_key_id}:"
        tokens = self._batch.encrypt([p.encode() for p in plaintexts])
        return [prefix + token.decode() for token in tokens]

    def decrypt(self, stored: str) -> str:
        kid, _, token = stored.partition(":")
        fernet = self._fernets.get(kid)
        if fernet is None:
            raise UnknownEncryptionKey(f"value encrypted with key {kid}, which is not configured")
        try:
            return fernet.decrypt(token.encode()).decode()
        except InvalidToken as exc:
            raise UnknownEncryptionKey(f"value under key {kid} does not decrypt") from exc

    def decrypt_many(self, stored: Sequence[str]) -> list[str]:
        """``decrypt`` for many values at once (the delivery workers' batches); values under an
        older key go one by one."""
        prefix = f"{self.current_key_id}:"
        current = [i for i, value in enumerate(stored) if value.startswith(prefix)]
        plain = self._current_decryptor.decrypt([stored[i][len(prefix) :] for i in current])
        result = [""] * len(stored)
        for i, decrypted in zip(current, plain, strict=True):
            if decrypted is None:
                raise UnknownEncryptionKey(
                    f"value under key {self.current_key_id} does not decrypt"
                )
            result[i] = decrypted.decode()
        done = set(current)
        for i, value in enumerate(stored):
            if i not in done:
                result[i] = self.decrypt(value)
        return result

    def knows(self, stored: str) -> bool:
        """Whether a stored value was encrypted with one of the configured keys."""
        return stored.partition(":")[0] in self._fernets

    def rotate(self, stored: str) -> str:
        """Re-encrypt a stored value under the newest key (no-op when it already is)."""
        kid, _, token = stored.partition(":")
        if kid == self.current_key_id:
            return stored
        if kid not in self._fernets:
            raise UnknownEncryptionKey(f"value encrypted with key {kid}, which is not configured")
        return f"{self.current_key_id}:{self._multi.rotate(token.encode()).decode()}"

    def blind_index(self, index_key: str) -> str:
        return hmac.new(self._hmac_key, index_key.encode(), hashlib.sha256).hexdigest()

    def email_hash(self, raw_email: str) -> str:
        return self.blind_index(parse_email(raw_email).index_key)


class FernetBatchEncryptor:
    """Fernet tokens for many plaintexts at once, byte for byte what ``Fernet.encrypt`` makes
    (version 0x80, timestamp, random IV, AES-128-CBC with PKCS7 padding, HMAC-SHA256).

    ``Fernet.encrypt`` builds a cipher, a padder and an HMAC object per value, which costs more
    than the encryption itself. Here one AES block encryptor serves the whole batch: CBC is run as
    its definition, C[i] = AES(P[i] xor C[i-1]) with C[-1] the IV, one AES call per block position
    for all values together. ``Fernet.decrypt`` is the oracle of its tests.
    """

    def __init__(self, key: str) -> None:
        raw = base64.urlsafe_b64decode(key)
        if len(raw) != 32:
            raise ValueError("a Fernet key is 32 url-safe base64-encoded bytes")
        self._signing_key, self._aes = raw[:16], algorithms.AES(raw[16:])

    def encrypt(self, plaintexts: Sequence[bytes]) -> list[bytes]:
        padded = [p + bytes((16 - len(p) % 16,)) * (16 - len(p) % 16) for p in plaintexts]
        # Longest first: the values that still have a block at any position are then a prefix.
        order = sorted(range(len(padded)), key=lambda i: -len(padded[i]))
        ivs = os.urandom(16 * len(padded))  # in `order`
        block_cipher = Cipher(self._aes, modes.ECB()).encryptor()
        columns = []  # columns[k]: the k-th ciphertext block of each value that has one, in order
        previous = ivs
        for offset in range(0, len(padded[order[0]]) if order else 0, 16):
            todo = order[: sum(1 for i in order if len(padded[i]) > offset)]
            plain = b"".join(padded[i][offset : offset + 16] for i in todo)
            size = len(plain)
            mixed = int.from_bytes(plain, "big") ^ int.from_bytes(previous[:size], "big")
            previous = block_cipher.update(mixed.to_bytes(size, "big"))
            columns.append(previous)
        header = b"\x80" + int(time.time()).to_bytes(8, "big")
        tokens: list[bytes] = [b""] * len(padded)
        for rank, i in enumerate(order):
            at = 16 * rank
            blocks = b"".join(column[at : at + 16] for column in columns[: len(padded[i]) // 16])
            body = header + ivs[at : at + 16] + blocks
            mac = hmac.digest(self._signing_key, body, "sha256")
            tokens[i] = base64.urlsafe_b64encode(body + mac)
        return tokens


class FernetBatchDecryptor:
    """``Fernet.decrypt`` for many tokens at once (no expiry, as stored PII never expires).

    CBC decryption needs no chaining: P[i] = AES-1(C[i]) xor C[i-1], so every block of every token
    is decrypted by one AES call and xored with the ciphertext shifted by one block. Each token's
    HMAC is checked first, in constant time. Answers None for a token that is not valid.
    """

    def __init__(self, key: str) -> None:
        raw = base64.urlsafe_b64decode(key)
        if len(raw) != 32:
            raise ValueError("a Fernet key is 32 url-safe base64-encoded bytes")
        self._signing_key, self._aes = raw[:16], algorithms.AES(raw[16:])

    def decrypt(self, tokens: Sequence[str]) -> list[bytes | None]:
        bodies = [self._verified(t) for t in tokens]
        valid = [b for b in bodies if b is not None]
        # Per token: IV (16) + ciphertext; "previous" is IV + ciphertext minus its last block.
        ciphertext = b"".join(b[25:] for b in valid)
        previous = b"".join(b[9:-16] for b in valid)
        decrypted = Cipher(self._aes, modes.ECB()).decryptor().update(ciphertext)
        size = len(ciphertext)
        plain = (int.from_bytes(decrypted, "big") ^ int.from_bytes(previous, "big")).to_bytes(
            size, "big"
        )
        results: list[bytes | None] = []
        at = 0
        for body in bodies:
            if body is None:
                results.append(None)
                continue
            length = len(body) - 25
            results.append(_unpadded(plain[at : at + length]))
            at += length
        return results

    def _verified(self, token: str) -> bytes | None:
        """The token's version, time, IV and ciphertext when its HMAC is right, else None."""
        try:
            raw = base64.urlsafe_b64decode(token)
        except (ValueError, binascii.Error):
            return None
        if len(raw) < 73 or raw[0] != 0x80 or (len(raw) - 57) % 16:  # one block at least
            return None
        body, mac = raw[:-32], raw[-32:]
        if not hmac.compare_digest(hmac.digest(self._signing_key, body, "sha256"), mac):
            return None
        return body


def _unpadded(block: bytes) -> bytes | None:
    pad = block[-1] if block else 0
    if not 1 <= pad <= 16 or block[-pad:] != bytes((pad,)) * pad:
        return None
    return block[:-pad]


_active: PiiCipher | None = None


def install_cipher(cipher: PiiCipher) -> None:
    """Make ``cipher`` the one the EncryptedText column type uses in this process."""
    global _active
    _active = cipher


def active_cipher() -> PiiCipher:
    if _active is None:
        raise RuntimeError("no PII cipher installed; build the runtime first")
    return _active
