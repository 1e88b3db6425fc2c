"""Bulk import (CSV and JSON lines) through the API, the service and the CLI, on both databases."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text
from typer.testing import CliRunner

from tests.factories import add_subscriber, add_topic
from tidings.audience import importer
from tidings.audience.importer import ImportOptions
from tidings.audience.models import ImportJob, ImportRejection, Subscriber, Suppression
from tidings.cli import app
from tidings.config import Settings
from tidings.db.engine import create_database
from tidings.runtime import Runtime
from tidings.security.crypto import install_cipher, parse_email
from tidings.security.models import Scope

runner = CliRunner()
CSV = "text/csv"
JSONL = "application/x-ndjson"
Row = tuple[str, str, str, list[str], str]  # email, name, attributes (JSON), tags, status


# --- helpers ------------------------------------------------------------------------------------


async def bulk_import(
    client: httpx.AsyncClient,
    body: str | bytes,
    content_type: str = CSV,
    expected: int = 200,
    **params: Any,
) -> dict[str, Any]:
    response = await client.post(
        "/subscribers/bulk-import",
        content=body.encode() if isinstance(body, str) else body,
        headers={"Content-Type": content_type},
        params=params,
    )
    assert response.status_code == expected, response.text
    result: dict[str, Any] = response.json()
    return result


async def rejections(client: httpx.AsyncClient, import_id: object) -> list[tuple[int, str]]:
    """The import's rejected lines, read from its `line,reason` CSV report."""
    response = await client.get(f"/imports/{import_id}/rejections.csv")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0] == ["line", "reason"]
    return [(int(line), reason) for line, reason in rows[1:]]


async def subscriber(client: httpx.AsyncClient, email: str) -> dict[str, Any]:
    response = await client.get(f"/subscribers/{email}")
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


async def topic_statuses(client: httpx.AsyncClient, email: str) -> dict[str, str]:
    """The subscriber's topic subscriptions as {topic name: status}."""
    response = await client.get(f"/subscribers/{email}/topics")
    assert response.status_code == 200, response.text
    return {s["topic"]["name"]: s["status"] for s in response.json()}


def as_row(s: Subscriber) -> Row:
    return (s.email, s.name, json.dumps(s.attributes, sort_keys=True), list(s.tags), s.status)


async def table(db: Runtime) -> list[Row]:
    """Every subscriber, sorted. A short session of its own: SQLite has one pooled connection."""
    install_cipher(db.cipher)
    async with db.database.sessions() as s:
        return sorted(as_row(r) for r in (await s.scalars(select(Subscriber))).all())


async def rejection_rows(db: Runtime, import_id: int) -> list[tuple[int, str]]:
    async with db.database.sessions() as s:
        rows = await s.execute(
            select(ImportRejection.line, ImportRejection.reason)
            .where(ImportRejection.import_id == import_id)
            .order_by(ImportRejection.line)
        )
        return [(line, reason) for line, reason in rows]


async def wipe_audience(db: Runtime) -> None:
    async with db.database.engine.begin() as connection:
        for table_name in ("topic_subscriptions", "subscribers", "import_rejections", "imports"):
            await connection.execute(text(f"DELETE FROM {table_name}"))


async def import_with_service(
    db: Runtime, data: bytes, options: ImportOptions, workers: int = 0
) -> ImportJob:
    """start_import + run_import, as the CLI does: the job comes back after a crash too."""
    async with db.database.sessions() as s:
        job = await importer.start_import(
            s, "people.csv", hashlib.sha256(data).hexdigest(), options, "test"
        )
    return await importer.run_import(
        db.database, db.cipher, job, io.BytesIO(data), options, workers=workers
    )


def reasons_by_line(found: list[tuple[int, str]]) -> dict[int, str]:
    lines = [line for line, _ in found]
    assert len(lines) == len(set(lines)), f"a line is reported twice: {found}"
    return dict(found)


# --- rows accepted and rejected -----------------------------------------------------------------

CSV_WITH_BAD_ROWS = (
    "email,name,tags,timezone,phone,plan\n"  # 1
    "ann@example.com,Ann,news;vip,Europe/Berlin,+49 151 1234 5678,pro\n"  # 2
    "not-an-email,Bad,,,,\n"  # 3
    ",No Email,,,,\n"  # 4
    "bob@example.com,Bob,bad tag!,,,\n"  # 5
    "cy@example.com,Cy,,Mars/Olympus,,\n"  # 6
    "dee@example.com,Dee,,,12345,\n"  # 7
    "eve@example.com,Eve\n"  # 8
    '"fay@example.com","Fay\nMulti\nLine",a|b,,,basic\n'  # 9-11
    "\n"  # 12: blank, skipped
    'gus@example.com,Gus,"x,y",,,\n'  # 13
    "hal@example.com,Hal,,,,,extra\n"  # 14
)
CSV_ADDRESSES = ["ann@", "bob@", "cy@", "dee@", "eve@", "hal@", "not-an-email"]


async def test_csv_good_rows_are_imported_and_bad_rows_rejected_with_their_line_numbers(
    client: httpx.AsyncClient,
) -> None:
    job = await bulk_import(client, CSV_WITH_BAD_ROWS)
    assert job["status"] == "done"
    assert (job["inserted"], job["updated"], job["skipped"], job["failed"]) == (3, 0, 0, 7)
    assert job["lines_done"] == 14
    assert job["options"] == {"mode": "upsert", "dedupe": True, "topic_ids": [], "format": "csv"}
    assert job["rejections_url"] == f"/imports/{job['id']}/rejections.csv"

    found = reasons_by_line(await rejections(client, job["id"]))
    assert sorted(found) == [3, 4, 5, 6, 7, 8, 14]
    assert found[3].startswith("email is invalid")
    assert found[4] == "email is missing"
    assert "tag" in found[5] and "invalid" in found[5]
    assert "timezone" in found[6]
    assert "phone" in found[7]
    assert found[8] == "has 2 cells; the header has 6"
    assert found[14] == "has 7 cells; the header has 6"
    for reason in found.values():
        assert not any(address in reason for address in CSV_ADDRESSES), reason

    ann = await subscriber(client, "ann@example.com")
    assert ann["name"] == "Ann"
    assert ann["tags"] == ["news", "vip"]
    assert ann["timezone"] == "Europe/Berlin"
    assert ann["phone"] == "+4915112345678"
    assert ann["attributes"] == {"plan": "pro"}
    assert ann["status"] == "active"
    fay = await subscriber(client, "fay@example.com")
    assert fay["name"] == "Fay\nMulti\nLine"
    assert fay["tags"] == ["a", "b"]
    assert fay["attributes"] == {"plan": "basic"}
    gus = await subscriber(client, "gus@example.com")
    assert gus["tags"] == ["x", "y"]
    assert gus["attributes"] == {}  # an empty extra cell adds no attribute
    for missing in ("bob@example.com", "cy@example.com", "dee@example.com", "eve@example.com"):
        assert (await client.get(f"/subscribers/{missing}")).status_code == 404


async def test_get_import_shows_the_counts_and_the_json_rejections_list_matches_the_csv(
    client: httpx.AsyncClient,
) -> None:
    job = await bulk_import(client, CSV_WITH_BAD_ROWS)
    shown = (await client.get(f"/imports/{job['id']}")).json()
    assert shown == job
    assert shown["finished_at"] is not None
    listed = await client.get(f"/imports/{job['id']}/rejections")
    assert listed.status_code == 200
    assert [(r["line"], r["reason"]) for r in listed.json()] == await rejections(client, job["id"])
    assert [j["id"] for j in (await client.get("/imports")).json()] == [job["id"]]
    assert (await client.get("/imports/4242")).status_code == 404
    assert (await client.get("/imports/4242/rejections.csv")).status_code == 404


async def test_a_header_without_an_email_column_rejects_line_1_and_imports_nothing(
    client: httpx.AsyncClient,
) -> None:
    job = await bulk_import(client, "name,tags\nAnn,x\n")
    assert (job["inserted"], job["failed"]) == (0, 1)
    assert await rejections(client, job["id"]) == [(1, "the header has no 'email' column")]


async def test_crlf_line_endings_and_a_byte_order_mark_keep_the_line_numbers(
    client: httpx.AsyncClient,
) -> None:
    body = (
        '\ufeffEmail,Name\r\nann@example.com,Ann\r\nbroken,B\r\n"cy@example.com","C\r\nD"\r\nx\r\n'
    )
    job = await bulk_import(client, body)
    assert (job["inserted"], job["failed"]) == (2, 2)
    assert [line for line, _ in await rejections(client, job["id"])] == [3, 6]
    assert (await subscriber(client, "cy@example.com"))["name"] == "C\r\nD"


JSONL_WITH_BAD_ROWS = (
    '{"email": "ann@example.com", "name": "Ann", "attributes": {"plan": "pro"}, '
    '"tags": ["b", "A"]}\n'  # 1
    '{"email": "bob@example.com", "tags": ["x"]\n'  # 2: not JSON
    "[1, 2]\n"  # 3
    '{"email": "cy@example.com", "attributes": [1]}\n'  # 4
    '{"email": "dee@example.com", "score": NaN}\n'  # 5
    "\n"  # 6
    '{"email": "eve@example.com", "attributes": {"x": Infinity}}\n'  # 7
    '{"email": "fay@example.com", "plan": "basic", "seats": 3, "vip": true}\n'  # 8
    '{"name": "nobody"}\n'  # 9
    '{"email": "gus@example.com", "name": 7}\n'  # 10
    '{"email": "hal@example.com", "tags": "p|q"}'  # 11, no final newline
)


async def test_jsonl_good_lines_are_imported_and_bad_lines_rejected_with_their_numbers(
    client: httpx.AsyncClient,
) -> None:
    job = await bulk_import(client, JSONL_WITH_BAD_ROWS, JSONL)
    assert job["options"]["format"] == "jsonl"
    assert (job["inserted"], job["failed"], job["lines_done"]) == (3, 7, 11)
    found = reasons_by_line(await rejections(client, job["id"]))
    assert sorted(found) == [2, 3, 4, 5, 7, 9, 10]
    assert found[2].startswith("not valid JSON")
    assert found[3] == "each line must be a JSON object"
    assert found[4] == "attributes must be a JSON object"
    assert found[5] == "score must be a finite number"
    assert "finite" in found[7]
    assert found[9] == "email is missing"
    assert found[10] == "name must be text"
    for reason in found.values():
        assert "@example.com" not in reason

    ann = await subscriber(client, "ann@example.com")
    assert (ann["name"], ann["tags"], ann["attributes"]) == ("Ann", ["a", "b"], {"plan": "pro"})
    fay = await subscriber(client, "fay@example.com")
    assert fay["attributes"] == {"plan": "basic", "seats": 3, "vip": True}
    assert (await subscriber(client, "hal@example.com"))["tags"] == ["p", "q"]
    for missing in ("cy@example.com", "dee@example.com", "eve@example.com", "gus@example.com"):
        assert (await client.get(f"/subscribers/{missing}")).status_code == 404


@pytest.mark.parametrize(
    ("filename", "body"),
    [
        ("people.csv", "email,name\nann@example.com,Ann\nnope,X\n"),
        ("people.jsonl", '{"email": "ann@example.com", "name": "Ann"}\n{"email": "nope"}\n'),
        ("people.ndjson", '{"email": "ann@example.com", "name": "Ann"}\n{"email": "nope"}\n'),
    ],
)
async def test_a_multipart_upload_is_imported_with_the_format_taken_from_the_file_name(
    client: httpx.AsyncClient, filename: str, body: str
) -> None:
    response = await client.post(
        "/subscribers/bulk-import",
        files={"file": (filename, body.encode(), "application/octet-stream")},
    )
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["source"] == filename
    assert job["options"]["format"] == ("csv" if filename.endswith(".csv") else "jsonl")
    assert (job["inserted"], job["failed"]) == (1, 1)
    assert [line for line, _ in await rejections(client, job["id"])] == [
        3 if filename.endswith(".csv") else 2
    ]
    assert (await subscriber(client, "ann@example.com"))["name"] == "Ann"


async def test_the_format_parameter_overrides_the_content_type(client: httpx.AsyncClient) -> None:
    job = await bulk_import(client, '{"email": "ann@example.com"}\n', "text/plain", format="jsonl")
    assert (job["options"]["format"], job["inserted"]) == ("jsonl", 1)


async def test_extra_csv_columns_become_string_attributes_next_to_the_attributes_column(
    client: httpx.AsyncClient,
) -> None:
    body = (
        "email,Plan,seats,attributes,tags\n"
        'ann@example.com,pro,3,"{""nested"": {""a"": 1}, ""plan"": ""old""}",a;b|c\n'
        "bob@example.com,,,,\n"
        'cy@example.com,,,"not json",\n'
        'dee@example.com,,,"[1]",\n'
    )
    job = await bulk_import(client, body)
    assert (job["inserted"], job["failed"]) == (2, 2)
    assert await rejections(client, job["id"]) == [
        (4, "attributes is not valid JSON"),
        (5, "attributes must be a JSON object"),
    ]
    ann = await subscriber(client, "ann@example.com")
    # Column names are lower-cased; a column beats the same key in the attributes cell.
    assert ann["attributes"] == {"nested": {"a": 1}, "plan": "pro", "seats": "3"}
    assert ann["tags"] == ["a", "b", "c"]
    assert (await subscriber(client, "bob@example.com"))["attributes"] == {}


@pytest.mark.parametrize("separated", ["x,y,z", "x;y;z", "x|y|z", " Z ; y|x,,"])
async def test_csv_tags_may_be_separated_by_comma_semicolon_or_pipe(
    client: httpx.AsyncClient, separated: str
) -> None:
    await bulk_import(client, f'email,tags\nann@example.com,"{separated}"\n')
    assert (await subscriber(client, "ann@example.com"))["tags"] == ["x", "y", "z"]


# --- modes --------------------------------------------------------------------------------------


async def test_insert_mode_leaves_existing_subscribers_unchanged_and_counts_them_skipped(
    client: httpx.AsyncClient,
) -> None:
    before = await add_subscriber(
        client, "ann@example.com", name="Old", attributes={"plan": "free"}, tags=["x"]
    )
    body = "email,name,tags,plan\nANN@example.com,New,y,pro\nbob@example.com,Bob,y,pro\n"
    job = await bulk_import(client, body, mode="insert")
    assert (job["inserted"], job["updated"], job["skipped"], job["failed"]) == (1, 0, 1, 0)
    assert await rejections(client, job["id"]) == []
    assert await subscriber(client, "ann@example.com") == before
    bob = await subscriber(client, "bob@example.com")
    assert (bob["name"], bob["tags"], bob["attributes"]) == ("Bob", ["y"], {"plan": "pro"})


OLD_ATTRIBUTES: dict[str, Any] = {
    "keep": "old",
    "plan": "free",
    "nested": {"a": 1, "b": [1, 2]},
    "flag": True,
    "gone": "x",
    "kept_float": 0.30000000000000004,
    "kept_big": 2**70,
    "kept_null": None,
    'a "quoted" key': "kept",
}
FILE_ATTRIBUTES: dict[str, Any] = {
    "plan": "pro",
    "nested": {"c": {"d": False}},
    "flag": False,
    "gone": None,
    "float": 0.1 + 0.7,
    "tiny": 1.5e-7,
    "big": 2**70 + 1,
    "neg": -7,
    "half": -0.5,
    "unicode": "Jörg 🐍",
    "quoted": 'say "hi"',
    "list": [1, "two", None, {"three": 3.25}],
    'file "quoted" key': {"x": None},
}


@pytest.mark.parametrize("file_format", ["csv", "jsonl"])
async def test_upsert_updates_name_merges_attributes_key_by_key_and_adds_tags(
    client: httpx.AsyncClient, file_format: str
) -> None:
    await add_subscriber(
        client,
        "ann@example.com",
        name="Ann",
        attributes=OLD_ATTRIBUTES,
        tags=["zeta", "alpha"],
        timezone="Europe/Berlin",
        phone="+4915100000001",
    )
    await add_subscriber(client, "bob@example.com", name="Bob", attributes={"a": 1}, tags=["t"])
    if file_format == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["email", "name", "tags", "attributes"])
        writer.writerow(["Ann@Example.com", "Ann Lee", "beta;alpha", json.dumps(FILE_ATTRIBUTES)])
        writer.writerow(["bob@example.com", "", "", ""])
        job = await bulk_import(client, buffer.getvalue())
    else:
        rows = [
            {"email": "Ann@Example.com", "name": "Ann Lee", "tags": ["beta", "alpha"]}
            | {"attributes": FILE_ATTRIBUTES},
            {"email": "bob@example.com", "name": ""},
        ]
        job = await bulk_import(client, "\n".join(json.dumps(r) for r in rows), JSONL)
    assert (job["inserted"], job["updated"], job["skipped"], job["failed"]) == (0, 2, 0, 0)

    ann = await subscriber(client, "ann@example.com")
    assert ann["name"] == "Ann Lee"
    expected = {
        "keep": "old",
        "kept_float": 0.30000000000000004,
        "kept_big": 2**70,
        "kept_null": None,
        'a "quoted" key': "kept",
        **FILE_ATTRIBUTES,
    }
    # Compared as sorted JSON text too: the same types and the same digits on both databases.
    assert ann["attributes"] == expected
    assert json.dumps(ann["attributes"], sort_keys=True) == json.dumps(expected, sort_keys=True)
    assert ann["tags"] == ["alpha", "beta", "zeta"]
    assert (ann["timezone"], ann["phone"]) == ("Europe/Berlin", "+4915100000001")

    bob = await subscriber(client, "bob@example.com")  # nothing given: nothing changes
    assert (bob["name"], bob["attributes"], bob["tags"]) == ("Bob", {"a": 1}, ["t"])


async def test_upsert_adds_tags_in_code_point_order_as_the_api_stores_them(
    client: httpx.AsyncClient,
) -> None:
    await add_subscriber(client, "ann@example.com", tags=["a_b", "ab", "9"])
    await bulk_import(client, 'email,tags\nann@example.com,"a:b,a.b,a-b,a0,ab,A_B"\n')
    tags = (await subscriber(client, "ann@example.com"))["tags"]
    assert tags == sorted({"a_b", "ab", "9", "a:b", "a.b", "a-b", "a0"})
    assert tags == ["9", "a-b", "a.b", "a0", "a:b", "a_b", "ab"]


async def test_an_import_never_changes_a_subscribers_status(client: httpx.AsyncClient) -> None:
    await add_subscriber(client, "ann@example.com", name="Ann")
    assert (await client.delete("/subscribers/ann@example.com")).status_code == 200
    before = await subscriber(client, "ann@example.com")
    assert before["status"] == "unsubscribed"
    for mode in ("upsert", "insert"):
        await bulk_import(client, "email,name,status\nann@example.com,Ann Lee,active\n", mode=mode)
    after = await subscriber(client, "ann@example.com")
    assert after["status"] == "unsubscribed"
    assert after["unsubscribed_at"] == before["unsubscribed_at"]
    assert after["name"] == "Ann Lee"
    # A column called status is just an attribute.
    assert after["attributes"] == {"status": "active"}


# --- repeated addresses -------------------------------------------------------------------------

REPEATS = (
    "email,name,tags\n"
    "a@example.com,A1,t1\n"  # 2
    "b@example.com,B1,t1\n"  # 3
    "a@example.com,A2,t2\n"  # 4: same batch of 3
    "c@example.com,C1,t1\n"  # 5
    "d@example.com,D1,t1\n"  # 6
    "A@Example.COM,A3,t3\n"  # 7: a later batch, another casing
    "e@example.com,E1,t1\n"  # 8
    "b@example.com,B2,t2\n"  # 9
    "old@example.com,Old2,t2\n"  # 10: already on the list before the import
)


@pytest.mark.parametrize("batch_size", [3, importer.BATCH_SIZE])
async def test_dedupe_rejects_a_repeated_address_as_appearing_earlier_even_across_batches(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, batch_size: int
) -> None:
    monkeypatch.setattr(importer, "BATCH_SIZE", batch_size)
    await add_subscriber(client, "old@example.com", name="Old", tags=["t0"])
    job = await bulk_import(client, REPEATS)
    assert (job["inserted"], job["updated"], job["failed"]) == (5, 1, 3)
    assert await rejections(client, job["id"]) == [
        (4, importer.REPEATED),
        (7, importer.REPEATED),
        (9, importer.REPEATED),
    ]
    assert importer.REPEATED == "the address appears earlier in this file"
    for email, name in [("a", "A1"), ("b", "B1"), ("c", "C1"), ("old", "Old2")]:
        assert (await subscriber(client, f"{email}@example.com"))["name"] == name
    assert (await subscriber(client, "a@example.com"))["tags"] == ["t1"]
    assert (await subscriber(client, "old@example.com"))["tags"] == ["t0", "t2"]


@pytest.mark.parametrize("batch_size", [3, importer.BATCH_SIZE])
async def test_without_dedupe_the_later_row_wins_in_upsert_mode(
    client: httpx.AsyncClient, db: Runtime, monkeypatch: pytest.MonkeyPatch, batch_size: int
) -> None:
    monkeypatch.setattr(importer, "BATCH_SIZE", batch_size)
    await add_subscriber(client, "old@example.com", name="Old", tags=["t0"])
    job = await bulk_import(client, REPEATS, dedupe="false")
    assert job["options"]["dedupe"] is False
    assert (job["inserted"], job["failed"]) == (5, 0)
    assert await rejections(client, job["id"]) == []
    names = {email: name for email, name, *_ in await table(db)}
    assert names == {
        "a@example.com": "A3",
        "b@example.com": "B2",
        "c@example.com": "C1",
        "d@example.com": "D1",
        "e@example.com": "E1",
        "old@example.com": "Old2",
    }


PARTIAL_REPEATS = (
    "email,name,tags,timezone,city\n"
    "a@example.com,A1,t1,Europe/Berlin,Berlin\n"  # 2
    "b@example.com,B1,t1,,\n"  # 3
    "A@EXAMPLE.com,,t2,,\n"  # 4: no name, another tag, no city
    "c@example.com,C1,,,\n"  # 5
    "b@example.com,B2,,Europe/Paris,Paris\n"  # 6
)


async def timezones(db: Runtime) -> dict[str, str | None]:
    async with db.database.sessions() as s:
        return {r.email: r.timezone for r in (await s.scalars(select(Subscriber))).all()}


@pytest.mark.parametrize("mode", ["upsert", "insert"])
async def test_with_dedupe_a_repeat_of_a_known_address_counts_alike_in_any_batch(
    client: httpx.AsyncClient, db: Runtime, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """The first row of an address already on the list updates it (upsert) or is skipped
    (insert); its repeat is rejected, whether or not a batch boundary falls between them."""
    body = "email,name\nold@example.com,Old2\nnew@example.com,New\nOLD@example.com,Old3\n"
    outcomes = []
    for batch_size in (1, importer.BATCH_SIZE):
        monkeypatch.setattr(importer, "BATCH_SIZE", batch_size)
        await add_subscriber(client, "old@example.com", name="Old")
        job = await bulk_import(client, body, mode=mode)
        counts = {k: job[k] for k in ("inserted", "updated", "skipped", "failed")}
        outcomes.append((counts, await rejections(client, job["id"]), await table(db)))
        await wipe_audience(db)
    assert outcomes[0] == outcomes[1]
    counts, rejected, rows = outcomes[0]
    expected = {"inserted": 1, "updated": 1, "skipped": 0, "failed": 1}
    if mode == "insert":
        expected |= {"updated": 0, "skipped": 1}
    assert counts == expected
    assert rejected == [(4, importer.REPEATED)]
    assert [(r[0], r[1]) for r in rows] == [
        ("new@example.com", "New"),
        ("old@example.com", "Old2" if mode == "upsert" else "Old"),
    ]


async def test_names_and_attributes_with_tabs_backslashes_and_line_breaks_arrive_unchanged(
    client: httpx.AsyncClient,
) -> None:
    """PostgreSQL gets the rows as COPY text, where these characters are escapes."""
    name = 'Tab\there \\N back\\slash\r\nnew "line"'
    row = {"email": "odd@example.com", "name": name, "attributes": {"path": "C:\\x\\N\t\\"}}
    job = await bulk_import(client, json.dumps(row), JSONL)
    assert (job["inserted"], job["failed"]) == (1, 0)
    found = await subscriber(client, "odd@example.com")
    assert (found["name"], found["attributes"]) == (name, row["attributes"])


@pytest.mark.parametrize("mode", ["upsert", "insert"])
async def test_without_dedupe_a_repeat_in_the_same_batch_ends_as_a_repeat_in_a_later_batch(
    client: httpx.AsyncClient, db: Runtime, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """Rows of one address are applied in file order whether or not a batch boundary falls
    between them: upserting, a later partial row adds to the earlier one; insert-only, the first
    row stays."""
    results = []
    for batch_size in (2, importer.BATCH_SIZE):
        monkeypatch.setattr(importer, "BATCH_SIZE", batch_size)
        job = await bulk_import(client, PARTIAL_REPEATS, dedupe="false", mode=mode)
        assert (job["inserted"], job["failed"]) == (3, 0)
        results.append((await table(db), await timezones(db)))
        await wipe_audience(db)
    assert results[0] == results[1]
    rows, zones = results[0]
    if mode == "upsert":
        assert [r[:4] for r in rows] == [
            ("a@example.com", "A1", '{"city": "Berlin"}', ["t1", "t2"]),
            ("b@example.com", "B2", '{"city": "Paris"}', ["t1"]),
            ("c@example.com", "C1", "{}", []),
        ]
        assert zones["b@example.com"] == "Europe/Paris"
    else:
        assert [r[:4] for r in rows] == [
            ("a@example.com", "A1", '{"city": "Berlin"}', ["t1"]),
            ("b@example.com", "B1", "{}", ["t1"]),
            ("c@example.com", "C1", "{}", []),
        ]
        assert zones["b@example.com"] is None
    assert zones["a@example.com"] == "Europe/Berlin"


# --- suppressions -------------------------------------------------------------------------------


async def test_suppressed_addresses_are_not_imported_and_are_reported_as_suppressed(
    client: httpx.AsyncClient, db: Runtime
) -> None:
    await add_subscriber(client, "gone@example.com", name="Gone")
    async with db.database.sessions() as s:
        for address, reason in [("sup@example.com", "bounced"), ("gone@example.com", "erased")]:
            email_hash = db.cipher.blind_index(parse_email(address).index_key)
            s.add(Suppression(email_hash=email_hash, reason=reason))
        await s.commit()
    body = "email,name\nann@example.com,Ann\nSUP@example.com,Sup\ngone@example.com,Back\n"
    job = await bulk_import(client, body)
    assert (job["inserted"], job["updated"], job["failed"]) == (1, 0, 2)
    assert await rejections(client, job["id"]) == [
        (3, importer.SUPPRESSED),
        (4, importer.SUPPRESSED),
    ]
    assert "suppressed" in importer.SUPPRESSED
    assert (await client.get("/subscribers/sup@example.com")).status_code == 404
    assert (await subscriber(client, "gone@example.com"))["name"] == "Gone"


# --- topics -------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["upsert", "insert"])
async def test_topic_ids_subscribe_everyone_imported_and_a_double_optin_topic_gives_pending(
    client: httpx.AsyncClient, mode: str
) -> None:
    weekly = await add_topic(client, "Weekly")
    confirmed = await add_topic(client, "Confirmed", optin="double")
    await add_subscriber(client, "old@example.com")
    await add_subscriber(client, "left@example.com", topic_ids=[weekly["id"]])
    left = await client.delete(f"/topics/{weekly['id']}/subscribers/left@example.com")
    assert left.status_code == 200
    await add_subscriber(client, "gone@example.com")
    assert (await client.delete("/subscribers/gone@example.com")).status_code == 200
    await add_subscriber(client, "bystander@example.com")

    body = "email\nnew@example.com\nold@example.com\nleft@example.com\ngone@example.com\nbad\n"
    job = await bulk_import(client, body, mode=mode, topic_ids=[weekly["id"], confirmed["id"]])
    assert job["options"]["topic_ids"] == [weekly["id"], confirmed["id"]]
    assert (job["inserted"], job["failed"]) == (1, 1)

    both = {"Weekly": "active", "Confirmed": "pending"}
    assert await topic_statuses(client, "new@example.com") == both
    assert await topic_statuses(client, "old@example.com") == both
    # An unsubscribed topic subscription is not reactivated...
    assert await topic_statuses(client, "left@example.com") == {
        "Weekly": "unsubscribed",
        "Confirmed": "pending",
    }
    # ...and an unsubscribed subscriber gets no new subscriptions.
    assert await topic_statuses(client, "gone@example.com") == {}
    assert await topic_statuses(client, "bystander@example.com") == {}
    sources = (await client.get(f"/topics/{weekly['id']}/subscribers")).json()["items"]
    assert {m["source"] for m in sources if m["status"] == "active"} == {"import"}


async def test_an_unknown_topic_id_is_422_and_nothing_is_imported(
    client: httpx.AsyncClient, db: Runtime
) -> None:
    weekly = await add_topic(client, "Weekly")
    response = await client.post(
        "/subscribers/bulk-import",
        content=b"email\nann@example.com\n",
        headers={"Content-Type": CSV},
        params={"topic_ids": [weekly["id"], 4242]},
    )
    assert response.status_code == 422, response.text
    assert "4242" in response.json()["detail"]
    assert await table(db) == []
    assert (await client.get("/imports")).json() == []
    for bad in ("0", "-1", "99999999999999999999", "x"):
        bad_id = await client.post(
            "/subscribers/bulk-import",
            content=b"email\nann@example.com\n",
            headers={"Content-Type": CSV},
            params={"topic_ids": bad},
        )
        assert bad_id.status_code == 422, bad
    assert await table(db) == []


# --- resuming -----------------------------------------------------------------------------------


def resumable_file() -> bytes:
    lines = ["email,name,tags,plan"]
    for i in range(1, 15):
        lines.append(f"p{i}@example.com,Person {i},t{i % 3},plan{i}")
        if i == 4:
            lines.append("broken,row,,")
        if i == 6:
            lines.append("P2@example.com,Again,,")  # a repeat of an earlier batch
        if i == 9:
            lines.append('p99@example.com,"Two\nLines",,')
        if i == 11:
            lines.append("only,three")
    lines.append("old@example.com,Old New,t9,changed")
    return ("\n".join(lines) + "\n").encode()


class Crash(Exception):
    pass


def crash_on_second_batch(
    monkeypatch: pytest.MonkeyPatch, point: str
) -> Callable[..., Awaitable[None]]:
    """Make importer._apply_batch fail while applying its second batch, at `point`:
    before it runs, inside its transaction just before the commit, or right after the commit."""
    real = importer._apply_batch
    calls = 0

    class ExplodingProgress(importer.Progress):
        def __setattr__(self, name: str, value: object) -> None:
            if name == "lines" and getattr(self, "armed", False):
                raise Crash("killed inside the transaction")
            super().__setattr__(name, value)

    async def wrapper(
        connection: Any, dialect: str, job_id: int, batch: Any, options: Any, progress: Any
    ) -> None:
        nonlocal calls
        calls += 1
        if calls != 2:
            return await real(connection, dialect, job_id, batch, options, progress)
        if point == "before":
            raise Crash("killed before the batch")
        if point == "inside":
            exploding = ExplodingProgress(
                lines=progress.lines,
                inserted=progress.inserted,
                updated=progress.updated,
                skipped=progress.skipped,
                failed=progress.failed,
            )
            object.__setattr__(exploding, "armed", True)
            await real(connection, dialect, job_id, batch, options, exploding)
        await real(connection, dialect, job_id, batch, options, progress)
        raise Crash("killed after the batch committed")

    monkeypatch.setattr(importer, "_apply_batch", wrapper)
    return real


@pytest.mark.parametrize("point", ["before", "inside", "after"])
async def test_a_crashed_import_resumes_as_the_same_job_and_ends_like_a_clean_import(
    client: httpx.AsyncClient, db: Runtime, monkeypatch: pytest.MonkeyPatch, point: str
) -> None:
    monkeypatch.setattr(importer, "BATCH_SIZE", 3)
    data = resumable_file()
    options = ImportOptions(mode="upsert", dedupe=True)

    async def seed() -> None:
        await add_subscriber(client, "old@example.com", name="Old", tags=["t0"])

    await seed()
    clean = await import_with_service(db, data, options)
    expected_table = await table(db)
    expected_rejections = await rejection_rows(db, clean.id)
    assert clean.failed == len(expected_rejections) == 3
    assert clean.inserted == 15 and clean.updated == 1
    await wipe_audience(db)

    await seed()
    real = crash_on_second_batch(monkeypatch, point)
    with pytest.raises(Crash):
        await import_with_service(db, data, options)
    monkeypatch.setattr(importer, "_apply_batch", real)
    # Batch 1 is lines 2-4 (p1-p3), batch 2 lines 5-7 (p4, a bad row, p5): a batch counts whole
    # or not at all, and the job's progress commits with it.
    assert len(await table(db)) == {"before": 4, "inside": 4, "after": 6}[point]

    async with db.database.sessions() as s:
        first = (await s.scalars(select(ImportJob))).one()
        resumed = await importer.start_import(
            s, "people.csv", hashlib.sha256(data).hexdigest(), options, "test"
        )
    assert resumed.id == first.id
    assert resumed.lines_done == first.lines_done == (7 if point == "after" else 4)
    assert resumed.status == "running"
    # The same file with other options starts a job of its own.
    async with db.database.sessions() as s:
        other = await importer.start_import(
            s, "people.csv", hashlib.sha256(data).hexdigest(), ImportOptions(mode="insert"), "t"
        )
        assert other.id != first.id
        await s.delete(other)
        await s.commit()

    finished = await importer.run_import(db.database, db.cipher, resumed, io.BytesIO(data), options)
    assert finished.id == first.id and finished.status == "done"
    assert await table(db) == expected_table
    emails = [row[0] for row in await table(db)]
    assert len(emails) == len(set(emails))
    assert await rejection_rows(db, finished.id) == expected_rejections
    counts = ("lines_done", "inserted", "updated", "skipped", "failed")
    assert {c: getattr(finished, c) for c in counts} == {c: getattr(clean, c) for c in counts}

    # Once done, the same file is a new import, which now only updates.
    again = await import_with_service(db, data, options)
    assert again.id != finished.id
    assert (again.inserted, again.updated) == (0, 16)


async def test_resuming_finds_the_unfinished_job_with_the_same_options_among_several(
    db: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importer, "BATCH_SIZE", 3)
    data = resumable_file()
    upsert, insert = ImportOptions(mode="upsert"), ImportOptions(mode="insert")
    real = crash_on_second_batch(monkeypatch, "before")
    with pytest.raises(Crash):
        await import_with_service(db, data, upsert)
    crash_on_second_batch(monkeypatch, "before")
    with pytest.raises(Crash):
        await import_with_service(db, data, insert)
    monkeypatch.setattr(importer, "_apply_batch", real)
    async with db.database.sessions() as s:
        jobs = (await s.scalars(select(ImportJob).order_by(ImportJob.id))).all()
        assert [j.options["mode"] for j in jobs] == ["upsert", "insert"]
        checksum = hashlib.sha256(data).hexdigest()
        assert (await importer.start_import(s, "f", checksum, upsert, "t")).id == jobs[0].id
        assert (await importer.start_import(s, "f", checksum, insert, "t")).id == jobs[1].id
        dedupe_off = ImportOptions(mode="upsert", dedupe=False)
        assert (await importer.start_import(s, "f", checksum, dedupe_off, "t")).id not in {
            jobs[0].id,
            jobs[1].id,
        }


async def test_a_finished_import_is_not_resumed_the_same_file_again_is_a_new_import(
    client: httpx.AsyncClient,
) -> None:
    first = await bulk_import(client, "email\nann@example.com\n")
    second = await bulk_import(client, "email\nann@example.com\n")
    assert second["id"] != first["id"]
    assert (second["inserted"], second["updated"]) == (0, 1)


# --- errors -------------------------------------------------------------------------------------


async def test_an_unsupported_content_type_is_415(client: httpx.AsyncClient, db: Runtime) -> None:
    for content_type in ("application/xml", "application/json", ""):
        response = await client.post(
            "/subscribers/bulk-import",
            content=b"email\nann@example.com\n",
            headers={"Content-Type": content_type},
        )
        assert response.status_code == 415, content_type
    assert await table(db) == []


async def test_an_upload_above_import_max_bytes_is_413_and_nothing_is_imported(
    client: httpx.AsyncClient, db: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db.settings, "import_max_bytes", 64)
    body = "email\n" + "".join(f"person{i}@example.com\n" for i in range(10))
    response = await client.post(
        "/subscribers/bulk-import", content=body.encode(), headers={"Content-Type": CSV}
    )
    assert response.status_code == 413, response.text
    as_form = await client.post(
        "/subscribers/bulk-import", files={"file": ("people.csv", body.encode(), CSV)}
    )
    assert as_form.status_code == 413, as_form.text
    assert await table(db) == []
    assert (await client.get("/imports")).json() == []
    small = await bulk_import(client, "email\nann@example.com\n")
    assert small["inserted"] == 1


async def test_a_multipart_form_without_a_file_field_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/subscribers/bulk-import", files={"upload": ("people.csv", b"email\n", CSV)}
    )
    assert response.status_code == 422


async def test_a_read_key_may_not_import_but_a_write_key_may(
    anon_client: httpx.AsyncClient, api_keys: dict[Scope, str]
) -> None:
    body, headers = b"email\nann@example.com\n", {"Content-Type": CSV}
    read = await anon_client.post(
        "/subscribers/bulk-import",
        content=body,
        headers={**headers, "Authorization": f"Bearer {api_keys[Scope.read]}"},
    )
    assert read.status_code == 403
    nobody = await anon_client.post("/subscribers/bulk-import", content=body, headers=headers)
    assert nobody.status_code == 401
    write = await anon_client.post(
        "/subscribers/bulk-import",
        content=body,
        headers={**headers, "Authorization": f"Bearer {api_keys[Scope.write]}"},
    )
    assert write.status_code == 200 and write.json()["inserted"] == 1
    job_id = write.json()["id"]
    as_reader = await anon_client.get(
        f"/imports/{job_id}", headers={"Authorization": f"Bearer {api_keys[Scope.read]}"}
    )
    assert as_reader.status_code == 200


@pytest.mark.parametrize(("body", "content_type"), [("", CSV), ("", JSONL), ("\n\n", JSONL)])
async def test_an_empty_body_is_a_finished_import_with_zero_counts(
    client: httpx.AsyncClient, body: str, content_type: str
) -> None:
    job = await bulk_import(client, body, content_type)
    assert job["status"] == "done"
    assert (job["inserted"], job["updated"], job["skipped"]) == (0, 0, 0)
    assert job["lines_done"] == body.count("\n")
    assert job["failed"] == 0
    assert await rejections(client, job["id"]) == []


async def test_a_header_only_csv_imports_nothing(client: httpx.AsyncClient) -> None:
    job = await bulk_import(client, "email,name\n")
    assert (job["status"], job["inserted"], job["failed"]) == ("done", 0, 0)


# --- CLI ----------------------------------------------------------------------------------------


@pytest.fixture
def cli(cli_env: Runtime, monkeypatch: pytest.MonkeyPatch) -> Runtime:
    monkeypatch.setenv("COLUMNS", "200")
    return cli_env


def read_table(settings: Settings, runtime: Runtime) -> list[Row]:
    """The subscribers table through an engine of its own (the test's event loop is idle)."""

    async def read() -> list[Row]:
        install_cipher(runtime.cipher)
        database = create_database(settings)
        try:
            async with database.sessions() as s:
                return sorted(as_row(r) for r in (await s.scalars(select(Subscriber))).all())
        finally:
            await database.dispose()

    return asyncio.run(read())


def wipe(settings: Settings) -> None:
    async def run() -> None:
        database = create_database(settings)
        try:
            async with database.engine.begin() as connection:
                for name in ("topic_subscriptions", "subscribers", "import_rejections", "imports"):
                    await connection.execute(text(f"DELETE FROM {name}"))
        finally:
            await database.dispose()

    asyncio.run(run())


def summary(output: str) -> tuple[str, str]:
    """(import id, counts) from the CLI's closing line `import 7: 2 inserted, ...`."""
    match = re.search(r"^import (\d+): (.+)$", output, re.MULTILINE)
    assert match, output
    return match[1], match[2]


CLI_FILE = (
    "email,name,tags,city\n"
    "ann@example.com,Ann,a;b,Berlin\n"
    "bad-address,X,,\n"
    "bob@example.com,Bob,,\n"
    "ann@example.com,Ann again,,\n"
    "cy@example.com,Cy,Not A Tag!,\n"
)


def test_cli_import_imports_a_csv_and_prints_the_counts(cli: Runtime, tmp_path: Path) -> None:
    path = tmp_path / "people.csv"
    path.write_text(CLI_FILE)
    result = runner.invoke(app, ["import", str(path), "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert "2 inserted, 0 updated, 0 skipped, 3 rejected" in result.output
    assert "tidings import-report" in result.output
    rows = read_table(cli.settings, cli)
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        ("ann@example.com", "Ann", '{"city": "Berlin"}', ["a", "b"]),
        ("bob@example.com", "Bob", "{}", []),
    ]

    again = runner.invoke(app, ["import", str(path), "--mode", "upsert", "--workers", "0"])
    assert again.exit_code == 0, again.output
    assert "0 inserted, 2 updated, 0 skipped, 3 rejected" in again.output
    assert read_table(cli.settings, cli) == rows

    insert_only = runner.invoke(app, ["import", str(path), "--mode", "insert", "--workers", "0"])
    assert insert_only.exit_code == 0, insert_only.output
    assert "0 inserted, 0 updated, 2 skipped, 3 rejected" in insert_only.output


def test_cli_upsert_on_a_second_run_updates_instead_of_inserting(
    cli: Runtime, tmp_path: Path
) -> None:
    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    first.write_text("email,name,tags\nann@example.com,Ann,a\n")
    second.write_text("email,name,tags\nann@example.com,Ann Lee,b\nbob@example.com,Bob,\n")
    assert runner.invoke(app, ["import", str(first), "--workers", "0"]).exit_code == 0
    result = runner.invoke(app, ["import", str(second), "--mode", "upsert", "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert "1 inserted, 1 updated, 0 skipped, 0 rejected" in result.output
    assert "import-report" not in result.output
    assert [(r[0], r[1], r[3]) for r in read_table(cli.settings, cli)] == [
        ("ann@example.com", "Ann Lee", ["a", "b"]),
        ("bob@example.com", "Bob", []),
    ]


def test_cli_import_report_prints_the_rejected_lines(cli: Runtime, tmp_path: Path) -> None:
    path = tmp_path / "people.csv"
    path.write_text(CLI_FILE)
    imported = runner.invoke(app, ["import", str(path), "--workers", "0"])
    assert imported.exit_code == 0, imported.output
    import_id, _ = summary(imported.output)
    report = runner.invoke(app, ["import-report", import_id])
    assert report.exit_code == 0, report.output
    rows = list(csv.reader(io.StringIO(report.stdout)))
    assert rows[0] == ["line", "reason"]
    assert [int(r[0]) for r in rows[1:]] == [3, 5, 6]
    assert rows[2][1] == importer.REPEATED
    assert "tag" in rows[3][1]
    missing = runner.invoke(app, ["import-report", "4242"])
    assert missing.exit_code == 1
    assert "no import with id 4242" in missing.output


def test_cli_import_with_a_worker_process_gives_the_same_result_as_inline(
    cli: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importer, "BATCH_SIZE", 4)
    lines = ["email,name,tags,timezone,phone,score"]
    for i in range(30):
        lines.append(
            f"user{i}@example.com,User {i},t{i % 4};all,Europe/Berlin,+4915100000{i:03d},{i}"
        )
        if i % 7 == 3:
            lines.append(f"user{i - 1}@example.com,Repeat,,,,")
        if i % 9 == 5:
            lines.append("broken,,,,,")
    path = tmp_path / "people.csv"
    path.write_text("\n".join(lines) + "\n")

    outputs, tables, reports = [], [], []
    for workers in ("0", "1"):
        result = runner.invoke(app, ["import", str(path), "--workers", workers])
        assert result.exit_code == 0, result.output
        import_id, counts = summary(result.output)
        outputs.append(counts)
        reports.append(runner.invoke(app, ["import-report", import_id]).stdout)
        tables.append(read_table(cli.settings, cli))
        wipe(cli.settings)
    assert outputs[0] == outputs[1]
    assert "30 inserted" in outputs[0]
    assert reports[0] == reports[1]
    assert tables[0] == tables[1]
    assert len(tables[0]) == 30


def test_cli_import_of_an_unknown_topic_fails_cleanly(cli: Runtime, tmp_path: Path) -> None:
    path = tmp_path / "people.csv"
    path.write_text("email\nann@example.com\n")
    result = runner.invoke(app, ["import", str(path), "--topic", "4242", "--workers", "0"])
    assert result.exit_code == 1
    assert "no topic with id 4242" in result.output
    assert read_table(cli.settings, cli) == []


async def test_two_runs_of_the_same_import_job_cannot_overlap_on_postgresql(db: Runtime) -> None:
    if db.database.dialect != "postgresql":
        pytest.skip("SQLite runs in one process")
    from tidings.audience.importer import ImportAlreadyRunning, _only_runner

    async with _only_runner(db.database, 424242):
        with pytest.raises(ImportAlreadyRunning):
            async with _only_runner(db.database, 424242):
                pass
    async with _only_runner(db.database, 424242):  # released: free again
        pass
