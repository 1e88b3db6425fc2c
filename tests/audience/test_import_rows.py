"""Cutting import files into chunks of whole records, without parsing them in the importing
process: whatever the chunk sizes, the records and their line numbers are those of one parse."""

from __future__ import annotations

import csv
import io
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.audience import import_rows
from tidings.audience.import_rows import Chunk, HeaderError, read_chunks

HEADER = ("email", "name")
cells = st.text(alphabet=st.sampled_from('ab,"\n\r x'), max_size=8)


def csv_file(rows: list[tuple[str, str]]) -> bytes:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)  # CRLF: fields with a CR or LF get quoted
    writer.writerow(HEADER)
    writer.writerows(rows)
    return buffer.getvalue().encode()


def records_with_lines(data: bytes, first_line: int) -> list[tuple[int, list[str]]]:
    reader = csv.reader(io.StringIO(data.decode(), newline="\n"))
    found = []
    while True:
        line = first_line + reader.line_num
        try:
            found.append((line, next(reader)))
        except StopIteration:
            return found


@settings(max_examples=300)
@given(st.lists(st.tuples(cells, cells), max_size=25), st.integers(1, 6))
def test_chunks_hold_whole_records_with_the_line_numbers_of_one_parse(
    rows: list[tuple[str, str]], size: int
) -> None:
    data = csv_file(rows)
    header, chunks = read_chunks(io.BytesIO(data), "csv", iter([size] * 1000))
    assert header == HEADER
    pieces = list(chunks)
    assert b"".join(c.data for c in pieces) == data.split(b"\n", 1)[1]  # after the header
    chunked = [record for c in pieces for record in records_with_lines(c.data, c.first_line)]
    assert chunked == records_with_lines(data, 1)[1:]
    for before, after in pairwise(pieces):
        assert after.first_line == before.last_line + 1


def test_a_byte_order_mark_and_a_missing_final_newline_change_nothing() -> None:
    data = "\ufeffEmail , NAME\nann@example.com,Ann\nbob@example.com,Bob".encode()
    header, chunks = read_chunks(io.BytesIO(data), "csv", iter([1, 1, 1]))
    assert header == ("email", "name")
    assert list(chunks) == [
        Chunk(2, 2, b"ann@example.com,Ann\n"),
        Chunk(3, 3, b"bob@example.com,Bob"),
    ]


def test_json_lines_have_no_header_and_are_cut_by_lines_only() -> None:
    data = b'{"email": "a@x.org"}\n\n{"email": "b\\"@x.org"}\n'
    header, chunks = read_chunks(io.BytesIO(data), "jsonl", iter([2, 2]))
    assert header == ()
    assert [(c.first_line, c.last_line) for c in chunks] == [(1, 2), (3, 3)]


def test_a_stray_quote_does_not_pull_the_rest_of_the_file_into_one_chunk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(import_rows, "MAX_RECORD_BYTES", 100)
    lines = ["email,name\n", 'ann@example.com,5" screen\n']
    lines += [f"user{i}@example.com,User {i}\n" for i in range(200)]
    _, chunks = read_chunks(io.BytesIO("".join(lines).encode()), "csv", iter([1] * 1000))
    sizes = [len(c.data) for c in chunks]
    assert sum(sizes) == len("".join(lines[1:]))
    assert max(sizes) <= 100 + 40  # the limit plus the line that crosses it


@pytest.mark.parametrize(
    ("data", "reason"),
    [(b"name,tags\nAnn,x\n", "no 'email' column"), (b"\n", "no 'email' column")],
)
def test_a_header_without_an_email_column_is_a_header_error(data: bytes, reason: str) -> None:
    with pytest.raises(HeaderError, match=reason):
        read_chunks(io.BytesIO(data), "csv", iter([5]))


def test_an_empty_file_has_no_header_and_no_chunks() -> None:
    header, chunks = read_chunks(io.BytesIO(b""), "csv", iter([5]))
    assert (header, list(chunks)) == ((), [])
