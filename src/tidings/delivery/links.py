"""Links in campaign mail (unsubscribe, preferences, view in browser) carry a compact token that
names the delivery: ``base64url(delivery id, 8 bytes) + base64url(HMAC-SHA256, 12 bytes)``.

No expiry: an unsubscribe link must work years after the message was sent. The key is derived
from the instance's HMAC secret for this purpose alone, so the token is worthless elsewhere.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

_ID_BYTES = 8
_MAC_BYTES = 12  # 96 bits: forging one takes 2**96 tries on average
TOKEN_LENGTH = 27  # characters of base64url for 20 bytes, unpadded


class MailLinks:
    def __init__(self, secret: bytes, base_url: str) -> None:
        self._key = hmac.new(secret, b"tidings token: mail link", hashlib.sha256).digest()
        self._base = base_url.rstrip("/")

    def token(self, delivery_id: int) -> str:
        raw = delivery_id.to_bytes(_ID_BYTES, "big")
        mac = hmac.new(self._key, raw, hashlib.sha256).digest()[:_MAC_BYTES]
        return base64.urlsafe_b64encode(raw + mac).decode().rstrip("=")

    def delivery_id(self, token: str) -> int | None:
        """The delivery a token names, or None for anything not made by ``token``."""
        if len(token) != TOKEN_LENGTH:
            return None
        try:
            data = base64.urlsafe_b64decode(token + "=")
        except (binascii.Error, ValueError):
            return None
        raw, mac = data[:_ID_BYTES], data[_ID_BYTES:]
        expected = hmac.new(self._key, raw, hashlib.sha256).digest()[:_MAC_BYTES]
        if not hmac.compare_digest(mac, expected):
            return None
        return int.from_bytes(raw, "big")

    def unsubscribe_url(self, token: str) -> str:
        return f"{self._base}/u/{token}"

    def preferences_url(self, token: str) -> str:
        return f"{self._base}/u/{token}/preferences"

    def view_url(self, token: str) -> str:
        return f"{self._base}/v/{token}"
