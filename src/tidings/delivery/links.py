"""Links in campaign mail carry compact signed tokens.

- Unsubscribe, preferences, view in browser: ``base64url(delivery id, 8 bytes + HMAC, 12 bytes)``.
- Tracking (``/t/o/`` open pixel, ``/t/c/`` click): ``base64url(delivery id, 8 bytes + link id,
  4 bytes + HMAC, 12 bytes)``; link 0 is the open pixel.

No expiry: an unsubscribe link must work years after the message was sent. Each kind has its own
key derived from the instance's HMAC secret, so a token is worthless anywhere else.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

_ID_BYTES = 8
_LINK_BYTES = 4
_MAC_BYTES = 12  # 96 bits: forging one takes 2**96 tries on average
TOKEN_LENGTH = 27  # characters of base64url for 20 bytes, unpadded
TRACKING_TOKEN_LENGTH = 32  # 24 bytes
OPEN_LINK = 0  # the link id of the open pixel


class MailLinks:
    def __init__(self, secret: bytes, base_url: str) -> None:
        self._key = hmac.new(secret, b"tidings token: mail link", hashlib.sha256).digest()
        self._tracking_key = hmac.new(secret, b"tidings token: tracking", hashlib.sha256).digest()
        self._base = base_url.rstrip("/")

    def token(self, delivery_id: int) -> str:
        return _sign(self._key, delivery_id.to_bytes(_ID_BYTES, "big"))

    def delivery_id(self, token: str) -> int | None:
        """The delivery a token names, or None for anything not made by ``token``."""
        raw = _verify(self._key, token, TOKEN_LENGTH)
        return None if raw is None else int.from_bytes(raw, "big")

    def tracking_token(self, delivery_id: int, link_id: int) -> str:
        raw = delivery_id.to_bytes(_ID_BYTES, "big") + link_id.to_bytes(_LINK_BYTES, "big")
        return _sign(self._tracking_key, raw)

    def tracked(self, token: str) -> tuple[int, int] | None:
        """The (delivery id, link id) a tracking token names, or None if it is not ours."""
        raw = _verify(self._tracking_key, token, TRACKING_TOKEN_LENGTH)
        if raw is None:
            return None
        return int.from_bytes(raw[:_ID_BYTES], "big"), int.from_bytes(raw[_ID_BYTES:], "big")

    def open_url(self, delivery_id: int) -> str:
        return f"{self._base}/t/o/{self.tracking_token(delivery_id, OPEN_LINK)}"

    def click_url(self, delivery_id: int, link_id: int) -> str:
        return f"{self._base}/t/c/{self.tracking_token(delivery_id, link_id)}"

    def return_path(self, bounce_address: str, delivery_id: int) -> str:
        """The VERP envelope sender of a delivery: ``bounces+TOKEN@domain``. A report sent back
        to it names its delivery by a token no one else can make."""
        local, _, domain = bounce_address.rpartition("@")
        return f"{local}+{self.token(delivery_id)}@{domain}"

    def delivery_of_return_path(self, address: str) -> int | None:
        """The delivery whose return path ``address`` is, or None."""
        local = address.rpartition("@")[0]
        _, plus, token = local.rpartition("+")
        return self.delivery_id(token) if plus else None

    def is_ours(self, url: str) -> bool:
        """Whether ``url`` points at this instance (its unsubscribe and view links are not
        counted as clicks)."""
        return url.startswith(self._base + "/")

    def unsubscribe_url(self, token: str) -> str:
        return f"{self._base}/u/{token}"

    def preferences_url(self, token: str) -> str:
        return f"{self._base}/u/{token}/preferences"

    def view_url(self, token: str) -> str:
        return f"{self._base}/v/{token}"


def _sign(key: bytes, raw: bytes) -> str:
    mac = hmac.digest(key, raw, "sha256")[:_MAC_BYTES]
    return base64.urlsafe_b64encode(raw + mac).decode().rstrip("=")


def _verify(key: bytes, token: str, length: int) -> bytes | None:
    """The signed bytes of ``token``, or None unless it is exactly what ``_sign`` made."""
    if len(token) != length:
        return None
    try:
        data = base64.urlsafe_b64decode(token + "=" * (-length % 4))
    except (binascii.Error, ValueError):
        return None
    raw, mac = data[:-_MAC_BYTES], data[-_MAC_BYTES:]
    expected = hmac.digest(key, raw, "sha256")[:_MAC_BYTES]
    if not hmac.compare_digest(mac, expected):
        return None
    if base64.urlsafe_b64encode(data).decode().rstrip("=") != token:
        return None  # another spelling of the same bytes (unused low bits set): not ours
    return raw
