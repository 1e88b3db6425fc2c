"""Reading a provider's JSON, which we do not control: each accessor returns the typed value or
raises ``WebhookMalformed`` naming the path that was wrong ("event-data.timestamp: expected a
number"), so a normalizer never leaks a KeyError or a TypeError."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from tidings.tracking.webhooks.base import WebhookMalformed

_PREVIEW = 40  # characters of a bad value quoted in an error: enough to recognize it, no more


def parse_json(body: bytes, what: str) -> Any:
    """The JSON document in ``body`` (``what`` names it in the error)."""
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise WebhookMalformed(f"the {what} is not JSON ({error.__class__.__name__})") from None


def _preview(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _PREVIEW else text[: _PREVIEW - 3] + "..."


class Fields:
    """A JSON object at ``path`` in a payload, with typed, checked access to its members."""

    def __init__(self, value: object, path: str) -> None:
        if not isinstance(value, Mapping):
            raise WebhookMalformed(
                f"{path or 'the payload'}: expected an object, got {_preview(value)}"
            )
        self.data: dict[str, Any] = dict(value)
        self.path = path

    def _at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def _fail(self, key: str, expected: str) -> WebhookMalformed:
        return WebhookMalformed(
            f"{self._at(key)}: expected {expected}, got {_preview(self.data[key])}"
        )

    def text(self, key: str) -> str | None:
        """A string member; absent or null is None, a number is read as its text."""
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise self._fail(key, "a string")
        return str(value)

    def required_text(self, key: str) -> str:
        value = self.text(key)
        if not value:
            raise WebhookMalformed(f"{self._at(key)}: required, missing or empty")
        return value

    def flag(self, key: str) -> bool:
        """A boolean member (absent is False); "true"/"false" strings are read too, as some
        providers send them."""
        value = self.data.get(key)
        if value is None:
            return False
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise self._fail(key, "a boolean")

    def number(self, key: str) -> float | None:
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, bool):
            raise self._fail(key, "a number")
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise self._fail(key, "a number")

    def child(self, key: str) -> Fields:
        """A nested object; absent or null reads as an empty one."""
        value = self.data.get(key)
        return Fields({} if value is None else value, self._at(key))

    def children(self, key: str) -> list[Fields]:
        """A list of objects; absent or null reads as an empty list."""
        return [Fields(item, f"{self._at(key)}[{i}]") for i, item in enumerate(self.items(key))]

    def items(self, key: str) -> list[Any]:
        """A list member; absent or null reads as an empty list."""
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self._fail(key, "a list")
        return value

    def iso_time(self, key: str) -> datetime | None:
        """An ISO 8601 member as an aware UTC datetime (a naive one is read as UTC)."""
        value = self.text(key)
        if value is None:
            return None
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise self._fail(key, "an ISO 8601 date and time") from None
        return as_utc(moment)

    def unix_time(self, key: str) -> datetime | None:
        """A Unix timestamp member (seconds, possibly fractional) as an aware UTC datetime."""
        seconds = self.number(key)
        if seconds is None:
            return None
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            raise self._fail(key, "a Unix time") from None


def as_utc(moment: datetime) -> datetime:
    """Aware UTC; naive values are taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def objects_of(document: object, what: str) -> Iterator[Fields]:
    """The events of a document that is one event object or a list of them."""
    if isinstance(document, list):
        for i, item in enumerate(document):
            yield Fields(item, f"[{i}]")
    elif isinstance(document, Mapping):
        yield Fields(document, "")
    else:
        raise WebhookMalformed(
            f"the {what} is neither an object nor a list, got {_preview(document)}"
        )


def delivery_id_of(value: object) -> int | None:
    """Our delivery id from a provider's metadata: a positive integer, possibly as text. Anything
    else was not set by us (another application on the same account), so it names no delivery."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 18:
        number = int(value)
        return number if number > 0 else None
    return None
