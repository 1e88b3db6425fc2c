"""Signed, expiring tokens for links in mail (confirm a subscription, unsubscribe, ...).

``base64url(payload JSON) . base64url(HMAC-SHA256)``, with a key derived per purpose from the
HMAC secret, so a token made for one purpose is worthless for any other.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from typing import Any

from tidings.errors import RuleViolation


class InvalidToken(RuleViolation):
    code = "invalid_token"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _key(self, purpose: str) -> bytes:
        return hmac.new(self._secret, f"tidings token: {purpose}".encode(), hashlib.sha256).digest()

    def sign(self, purpose: str, payload: dict[str, Any], ttl_seconds: int) -> str:
        body = _b64(
            json.dumps(
                {**payload, "exp": int(time.time()) + ttl_seconds}, separators=(",", ":")
            ).encode()
        )
        mac = hmac.new(self._key(purpose), body.encode(), hashlib.sha256).digest()
        return f"{body}.{_b64(mac)}"

    def verify(self, purpose: str, token: str) -> dict[str, Any]:
        """The payload of a valid, unexpired token for ``purpose``; InvalidToken otherwise."""
        body, _, mac = token.partition(".")
        try:
            expected = hmac.new(self._key(purpose), body.encode(), hashlib.sha256).digest()
            if not hmac.compare_digest(expected, _unb64(mac)):
                raise InvalidToken("this link is not valid")
            payload: dict[str, Any] = json.loads(_unb64(body))
        except (binascii.Error, ValueError, UnicodeError):
            raise InvalidToken("this link is not valid") from None
        if not isinstance(payload.get("exp"), int) or payload["exp"] < time.time():
            raise InvalidToken("this link has expired; please subscribe again")
        return payload
