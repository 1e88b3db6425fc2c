"""Reading import files and preparing their rows: the per-row work of a bulk import.

Preparing a row (validate, normalize, blind-index, encrypt) is pure CPU work with no database,
so batches of rows are prepared in worker processes, while the parent streams them to the
database. Everything here must stay picklable and free of global state but the cipher.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, Literal

from tidings.audience.schemas import (
    MAX_ATTRIBUTES_BYTES,
    check_timezone,
    normalize_phone,
    normalize_tag,
)
from tidings.schemas import check_storable
from tidings.security.crypto import InvalidEmail, PiiCipher, parse_email

FileFormat = Literal["csv", "jsonl"]
KNOWN_COLUMNS = ("email", "name", "tags", "timezone", "phone", "attributes")
TAG_SEPARATORS = str.maketrans({";": ",", "|": ","})
MAX_FIELD_CHARS = 100_000


@dataclass(frozen=True)
class RawRow:
    line: int
    values: dict[str, Any]


@dataclass(frozen=True)
class PreparedRow:
    """Column values ready for the staging table; e-mail and phone already encrypted."""

    line: int
    email_hash: str
    email: str
    email_domain: str
    name: str
    attributes: str  # JSON
    tags: tuple[str, ...]
    timezone: str | None
    phone: str | None


@dataclass
class PreparedBatch:
    rows: list[PreparedRow] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (line, reason)
    collapsed: int = 0  # repeats of an address within this batch that dedupe=False folded away
    last_line: int = 0


class RowError(ValueError):
    """Why one row cannot be imported (never quoting the address itself)."""


def count_lines(path: Path) -> int:
    """Newlines in a file, for a progress bar's total (fast: no decoding, no parsing)."""
    with path.open("rb") as handle:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))


# --- reading -------------------------------------------------------------------------------------


def read_rows(stream: IO[bytes], file_format: FileFormat) -> Iterator[RawRow | tuple[int, str]]:
    """Yield rows with their first line number, or (line, reason) for lines that do not parse."""
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="replace", newline="")
    return _read_csv(text) if file_format == "csv" else _read_jsonl(text)


def _read_csv(text: IO[str]) -> Iterator[RawRow | tuple[int, str]]:
    csv.field_size_limit(MAX_FIELD_CHARS)
    reader = csv.reader(text)
    try:
        header = [name.strip().lower() for name in next(reader)]
    except StopIteration:
        return
    except csv.Error as exc:
        yield (1, f"unreadable header: {exc}")
        return
    if "email" not in header:
        yield (1, "the header has no 'email' column")
        return
    while True:
        line = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield (line, f"unreadable CSV: {exc}")
            continue
        if not any(cell.strip() for cell in cells):
            continue  # blank line
        if len(cells) != len(header):
            yield (line, f"has {len(cells)} cells; the header has {len(header)}")
            continue
        yield RawRow(line, dict(zip(header, cells, strict=True)))


def _read_jsonl(text: IO[str]) -> Iterator[RawRow | tuple[int, str]]:
    for number, raw in enumerate(text, start=1):
        if not raw.strip():
            continue
        try:
            values = json.loads(raw)
        except ValueError as exc:
            yield (number, f"not valid JSON: {exc.args[0] if exc.args else exc}")
            continue
        if not isinstance(values, dict):
            yield (number, "each line must be a JSON object")
            continue
        yield RawRow(number, values)


# --- preparing -----------------------------------------------------------------------------------

_worker_cipher: PiiCipher | None = None


def install_worker_cipher(keys: tuple[str, ...], hmac_key: bytes) -> None:
    """Process-pool initializer: each worker builds its own cipher once, and exits by itself
    if the importing process dies (a SIGKILL gives the pool no chance to stop its workers)."""
    global _worker_cipher
    _worker_cipher = PiiCipher(keys, hmac_key)
    parent = os.getppid()
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(1)


def prepare_batch_in_worker(rows: list[RawRow], dedupe: bool, upsert: bool = True) -> PreparedBatch:
    assert _worker_cipher is not None, "install_worker_cipher was not run"
    return prepare_batch(rows, _worker_cipher, dedupe, upsert)


def prepare_batch(
    rows: list[RawRow], cipher: PiiCipher, dedupe: bool, upsert: bool = True
) -> PreparedBatch:
    """Validate and encrypt rows. A repeated address keeps its first row (dedupe=True, the
    others are rejected), or (dedupe=False) is folded into one row exactly as if the rows were
    applied one after the other, as they are when the repeat falls into a later batch: upserting,
    a later row updates the earlier one; insert-only, the first row stays."""
    batch = PreparedBatch(last_line=rows[-1].line if rows else 0)
    by_hash: dict[str, PreparedRow] = {}
    for raw in rows:
        try:
            row = prepare_row(raw, cipher)
        except RowError as exc:
            batch.rejected.append((raw.line, str(exc)))
            continue
        if row.email_hash in by_hash:
            if dedupe:
                batch.rejected.append((raw.line, "the address appears earlier in this file"))
                continue
            batch.collapsed += 1
            if not upsert:
                continue
            # keep file order: the merged row goes to the end
            row = _updated(by_hash.pop(row.email_hash), row)
        by_hash[row.email_hash] = row
    batch.rows = list(by_hash.values())
    return batch


def _updated(earlier: PreparedRow, later: PreparedRow) -> PreparedRow:
    """The earlier row as the upsert statement updates it with the later one: the address stays,
    a given name, timezone or phone replaces, attributes merge key by key, tags are added."""
    attributes = {**json.loads(earlier.attributes), **json.loads(later.attributes)}
    return replace(
        later,
        email=earlier.email,
        email_domain=earlier.email_domain,
        name=later.name or earlier.name,
        attributes=json.dumps(attributes, ensure_ascii=False, allow_nan=False),
        tags=tuple(sorted({*earlier.tags, *later.tags})),
        timezone=later.timezone or earlier.timezone,
        phone=later.phone or earlier.phone,
    )


def prepare_row(raw: RawRow, cipher: PiiCipher) -> PreparedRow:
    values = {str(k).strip().lower(): v for k, v in raw.values.items()}
    email = values.get("email")
    if not isinstance(email, str) or not email.strip():
        raise RowError("email is missing")
    try:
        parsed = parse_email(email)
    except InvalidEmail as exc:
        raise RowError(f"email is invalid: {exc}") from None
    attributes = _attributes(values)
    name = _text(values.get("name"), "name", 200) or ""
    timezone = _text(values.get("timezone"), "timezone", 64)
    phone = _text(values.get("phone"), "phone", 32)
    try:
        tags = _tags(values.get("tags"))
        timezone = check_timezone(timezone) if timezone else None
        phone = normalize_phone(phone) if phone else None
        check_storable(name, "name")
        check_storable(attributes, "attributes")
    except ValueError as exc:
        raise RowError(str(exc)) from None
    encoded_attributes = json.dumps(attributes, ensure_ascii=False, allow_nan=False)
    if len(encoded_attributes) > MAX_ATTRIBUTES_BYTES:
        raise RowError(f"attributes must serialize to at most {MAX_ATTRIBUTES_BYTES} bytes")
    return PreparedRow(
        line=raw.line,
        email_hash=cipher.blind_index(parsed.index_key),
        email=cipher.encrypt(parsed.address),
        email_domain=parsed.address.rsplit("@", 1)[1].lower(),
        name=name.strip(),
        attributes=encoded_attributes,
        tags=tuple(tags),
        timezone=timezone,
        phone=cipher.encrypt(phone) if phone else None,
    )


def _text(value: Any, name: str, limit: int) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise RowError(f"{name} must be text")
    if len(value) > limit:
        raise RowError(f"{name} is longer than {limit} characters")
    return value.strip() or None


def _tags(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    items = value.translate(TAG_SEPARATORS).split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(t, str) for t in items):
        raise RowError("tags must be a list of strings, or text separated by , ; or |")
    tags = sorted({normalize_tag(t) for t in items if t.strip()})
    if len(tags) > 50:
        raise RowError("at most 50 tags per subscriber")
    return tags


def _attributes(values: dict[str, Any]) -> dict[str, Any]:
    """The 'attributes' object (a JSON object, or JSON text in CSV), plus every unknown column."""
    attributes: dict[str, Any] = {}
    given = values.get("attributes")
    if isinstance(given, str) and given.strip():
        try:
            given = json.loads(given)
        except ValueError:
            raise RowError("attributes is not valid JSON") from None
    if given not in (None, ""):
        if not isinstance(given, dict):
            raise RowError("attributes must be a JSON object")
        attributes.update(given)
    for key, value in values.items():
        if key not in KNOWN_COLUMNS and value not in (None, ""):
            if isinstance(value, float) and not math.isfinite(value):
                raise RowError(f"{key} must be a finite number")
            attributes[key] = value
    return attributes
