"""Reading import files and preparing their rows: the per-row work of a bulk import.

The importing process only cuts the file into chunks of whole lines (byte operations, no
parsing). Parsing and preparing a chunk's rows (validate, normalize, blind-index, encrypt) is
pure CPU work with no database, done in worker processes, which hand back either the rows or,
for PostgreSQL, the finished text of a ``COPY`` into the staging table. Everything here must
stay picklable and free of global state but the cipher.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import IO, Any, Literal, NamedTuple

from tidings.audience.fields import (
    MAX_ATTRIBUTES_BYTES,
    check_timezone,
    normalize_phone,
    normalize_tag,
)
from tidings.security.crypto import InvalidEmail, PiiCipher, parse_email
from tidings.storable import check_storable

FileFormat = Literal["csv", "jsonl"]
KNOWN_COLUMNS = frozenset(("email", "name", "tags", "timezone", "phone", "attributes"))
TAG_SEPARATORS = str.maketrans({";": ",", "|": ","})
MAX_FIELD_CHARS = 100_000
READ_BYTES = 1 << 20
# A quoted CSV field may span lines; a chunk grows to the end of such a record, but by at most
# this much (a stray quote must not pull the rest of the file into memory).
MAX_RECORD_BYTES = 4 * MAX_FIELD_CHARS
BOM = b"\xef\xbb\xbf"
_encode_json = json.JSONEncoder(ensure_ascii=False, allow_nan=False).encode


class Chunk(NamedTuple):
    """Whole lines of the file, ``first_line`` to ``last_line``."""

    first_line: int
    last_line: int
    data: bytes


@dataclass(frozen=True)
class ChunkPlan:
    """How a worker treats every chunk of one import."""

    file_format: FileFormat
    header: tuple[str, ...]  # CSV column names, normalized; empty for JSON lines
    dedupe: bool
    upsert: bool
    skip_through: int = 0  # lines imported before a crash: resuming skips them
    for_copy: bool = False  # hand back PostgreSQL COPY text instead of rows


class PreparedRow(NamedTuple):
    """Column values ready for the staging table (e-mail and phone encrypted once the whole
    chunk is prepared: see ``_encrypted``)."""

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
    rows: list[PreparedRow] = field(default_factory=list)  # empty when copy_data holds them
    copy_data: bytes = b""
    staged: int = 0  # rows to stage, in rows or in copy_data
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (line, reason)
    collapsed: int = 0  # repeats of an address within this batch that dedupe=False folded away
    last_line: int = 0


class RowError(ValueError):
    """Why one row cannot be imported (never quoting the address itself)."""


class HeaderError(ValueError):
    """The file's first line is not a usable CSV header."""


def count_lines(path: Path) -> int:
    """Newlines in a file, for a progress bar's total (fast: no decoding, no parsing)."""
    with path.open("rb") as handle:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(READ_BYTES), b""))


# --- cutting the file into chunks (in the importing process) -------------------------------------


def read_chunks(
    stream: IO[bytes], file_format: FileFormat, sizes: Iterable[int]
) -> tuple[tuple[str, ...], Iterator[Chunk]]:
    """The CSV header (empty for JSON lines) and the chunks after it, of as many lines each as
    ``sizes`` says. Raises HeaderError when a CSV file has no usable header."""
    if file_format == "jsonl":
        return (), _chunks(stream, iter(sizes), quoted=False)
    # The header is a chunk of its own: one line, or more when a quoted name spans lines.
    chunks = _chunks(stream, chain([1], sizes), quoted=True)
    first = next(chunks, None)
    return (_header(first) if first else ()), chunks


def _header(chunk: Chunk) -> tuple[str, ...]:
    text = chunk.data.decode("utf-8", errors="replace")
    try:
        cells = next(csv.reader(io.StringIO(text, newline="\n")), [])
    except csv.Error as exc:
        raise HeaderError(f"unreadable header: {exc}") from None
    header = tuple(name.strip().lower() for name in cells)
    if "email" not in header:
        raise HeaderError("the header has no 'email' column")
    return header


def _line_end(data: bytes, lines: int) -> int:
    """The offset just after the ``lines``-th newline (or the end of the data)."""
    end = 0
    for _ in range(lines):
        found = data.find(b"\n", end)
        if found < 0:
            return len(data)
        end = found + 1
    return end


def _chunks(stream: IO[bytes], sizes: Iterator[int], quoted: bool) -> Iterator[Chunk]:
    """Chunks of whole lines, as many lines as ``sizes`` says, each extended to the end of
    a record when a quoted CSV field spans lines."""
    buffer = b""
    newlines = 0
    eof = False
    first_line = 1
    for lines_per_chunk in sizes:
        while newlines < lines_per_chunk and not eof:
            block = stream.read(READ_BYTES)
            if first_line == 1 and not buffer and block.startswith(BOM):
                block = block[len(BOM) :]
            eof = not block
            buffer += block
            newlines += block.count(b"\n")
        if not buffer:
            return
        end = _line_end(buffer, lines_per_chunk)
        if quoted and buffer.count(b'"', 0, end) % 2:
            buffer, end, eof = _extend_to_record_end(stream, buffer, end, eof)
        data, buffer = buffer[:end], buffer[end:]
        newlines = buffer.count(b"\n")
        lines = data.count(b"\n")
        if not data.endswith(b"\n"):
            lines += 1  # the file's last line has no newline
        yield Chunk(first_line, first_line + lines - 1, data)
        first_line += lines


def _extend_to_record_end(
    stream: IO[bytes], buffer: bytes, end: int, eof: bool
) -> tuple[bytes, int, bool]:
    """Move ``end`` past the line that closes an open quote (reading more if need be)."""
    limit = end + MAX_RECORD_BYTES
    open_quotes = 1
    while open_quotes % 2 and end < limit:
        found = buffer.find(b"\n", end)
        if found < 0:
            if eof:
                return buffer, len(buffer), eof
            block = stream.read(READ_BYTES)
            eof = not block
            buffer += block
            continue
        open_quotes += buffer.count(b'"', end, found)
        end = found + 1
    return buffer, end, eof


# --- preparing (in worker processes) -------------------------------------------------------------

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


def prepare_chunk_in_worker(chunk: Chunk, plan: ChunkPlan) -> PreparedBatch:
    assert _worker_cipher is not None, "install_worker_cipher was not run"
    return prepare_chunk(chunk, plan, _worker_cipher)


def prepare_chunk(chunk: Chunk, plan: ChunkPlan, cipher: PiiCipher) -> PreparedBatch:
    """Parse, validate and encrypt a chunk's rows. A repeated address keeps its first row
    (dedupe=True, the others are rejected), or (dedupe=False) is folded into one row exactly as
    if the rows were applied one after the other, as they are when the repeat falls into a later
    batch: upserting, a later row updates the earlier one; insert-only, the first row stays."""
    batch = PreparedBatch(last_line=chunk.last_line)
    by_hash: dict[str, PreparedRow] = {}
    text = chunk.data.decode("utf-8", errors="replace")
    if plan.file_format == "csv":
        parsed = _csv_rows(text, chunk.first_line, plan.header)
    else:
        parsed = _json_rows(text, chunk.first_line)
    for line, values in parsed:
        if line <= plan.skip_through:
            continue
        if isinstance(values, str):
            batch.rejected.append((line, values))
            continue
        try:
            row = prepare_row(line, values, cipher)
        except RowError as exc:
            batch.rejected.append((line, str(exc)))
            continue
        if row.email_hash in by_hash:
            if plan.dedupe:
                batch.rejected.append((line, "the address appears earlier in this file"))
                continue
            batch.collapsed += 1
            if not plan.upsert:
                continue
            # keep file order: the merged row goes to the end
            row = _updated(by_hash.pop(row.email_hash), row)
        by_hash[row.email_hash] = row
    rows = _encrypted(list(by_hash.values()), cipher)
    batch.staged = len(rows)
    if plan.for_copy:
        batch.copy_data = copy_text(rows)
    else:
        batch.rows = rows
    return batch


def _encrypted(rows: list[PreparedRow], cipher: PiiCipher) -> list[PreparedRow]:
    """The rows with their addresses and phone numbers encrypted, all in one batch."""
    emails = cipher.encrypt_many([row.email for row in rows])
    phones = iter(cipher.encrypt_many([row.phone for row in rows if row.phone]))
    return [
        row._replace(email=email, phone=next(phones) if row.phone else None)
        for row, email in zip(rows, emails, strict=True)
    ]


def _csv_rows(
    text: str, first_line: int, header: tuple[str, ...]
) -> Iterator[tuple[int, dict[str, str] | str]]:
    """(line, values) per row, or (line, reason) for a row that does not parse."""
    csv.field_size_limit(MAX_FIELD_CHARS)
    reader = csv.reader(io.StringIO(text, newline="\n"))
    while True:
        line = first_line + reader.line_num
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield line, f"unreadable CSV: {exc}"
            continue
        if not "".join(cells).strip():
            continue  # a blank line
        if len(cells) != len(header):
            yield line, f"has {len(cells)} cells; the header has {len(header)}"
            continue
        yield line, dict(zip(header, cells, strict=True))


def _json_rows(text: str, first_line: int) -> Iterator[tuple[int, dict[str, Any] | str]]:
    for line, raw in enumerate(text.split("\n"), start=first_line):
        if not raw.strip():
            continue
        try:
            values = json.loads(raw)
        except ValueError as exc:
            yield line, f"not valid JSON: {exc.args[0] if exc.args else exc}"
            continue
        if not isinstance(values, dict):
            yield line, "each line must be a JSON object"
            continue
        yield line, {str(k).strip().lower(): v for k, v in values.items()}


def _updated(earlier: PreparedRow, later: PreparedRow) -> PreparedRow:
    """The earlier row as the upsert statement updates it with the later one: the address stays,
    a given name, timezone or phone replaces, attributes merge key by key, tags are added."""
    attributes = {**json.loads(earlier.attributes), **json.loads(later.attributes)}
    return later._replace(
        email=earlier.email,
        email_domain=earlier.email_domain,
        name=later.name or earlier.name,
        attributes=_encode_json(attributes),
        tags=tuple(sorted({*earlier.tags, *later.tags})),
        timezone=later.timezone or earlier.timezone,
        phone=later.phone or earlier.phone,
    )


def prepare_row(line: int, values: dict[str, Any], cipher: PiiCipher) -> PreparedRow:
    """One row's columns (with lower-case keys), e-mail and phone still in clear."""
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
        if attributes:
            check_storable(attributes, "attributes")
    except ValueError as exc:
        raise RowError(str(exc)) from None
    encoded_attributes = _encode_json(attributes) if attributes else "{}"
    if len(encoded_attributes) > MAX_ATTRIBUTES_BYTES:
        raise RowError(f"attributes must serialize to at most {MAX_ATTRIBUTES_BYTES} bytes")
    return PreparedRow(
        line,
        cipher.blind_index(parsed.index_key),
        parsed.address,
        parsed.address.rsplit("@", 1)[1].lower(),
        name,
        encoded_attributes,
        tags,
        timezone,
        phone,
    )


def _text(value: Any, name: str, limit: int) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise RowError(f"{name} must be text")
    if len(value) > limit:
        raise RowError(f"{name} is longer than {limit} characters")
    return value.strip() or None


def _tags(value: Any) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    items = value.translate(TAG_SEPARATORS).split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(t, str) for t in items):
        raise RowError("tags must be a list of strings, or text separated by , ; or |")
    tags = tuple(sorted({normalize_tag(t) for t in items if t.strip()}))
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


# --- PostgreSQL COPY text ------------------------------------------------------------------------

_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"})


def copy_text(rows: list[PreparedRow]) -> bytes:
    """Rows in COPY's text format, in the staging table's column order (STAGING_COLUMNS).

    Only the name and the attributes' JSON can hold a backslash, tab or line break; the other
    columns are hex, base64, validated domains and zone names, or encrypted."""
    lines = []
    for row in rows:
        tags = "{" + ",".join(f'"{tag}"' for tag in row.tags) + "}"  # tags need no escaping
        fields = (
            str(row.line),
            row.email_hash,
            row.email,
            row.email_domain,
            _copy_escaped(row.name),
            _copy_escaped(row.attributes),
            tags,
            row.timezone or "\\N",
            row.phone or "\\N",
        )
        lines.append("\t".join(fields))
    lines.append("")
    return "\n".join(lines).encode()


def _copy_escaped(value: str) -> str:
    if "\\" in value or "\n" in value or "\r" in value or "\t" in value:
        return value.translate(_COPY_ESCAPES)
    return value
