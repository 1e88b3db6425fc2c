"""Subscriber export (CSV) through the API and the CLI, on both databases."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from tests.factories import add_subscriber, add_topic
from tidings.app import create_app
from tidings.audience import export as export_module
from tidings.cli import app
from tidings.config import Settings
from tidings.runtime import Runtime, open_runtime
from tidings.security.models import Scope

runner = CliRunner()
ADMIN_COLUMNS = [
    "id",
    "email",
    "phone",
    "email_domain",
    "name",
    "status",
    "tags",
    "timezone",
    "attributes",
    "engagement_score",
    "created_at",
    "updated_at",
    "unsubscribed_at",
]
PSEUDONYMOUS_COLUMNS = ["id", "email_hash", *ADMIN_COLUMNS[3:]]


async def export(
    client: httpx.AsyncClient, key: str | None = None, **params: Any
) -> tuple[list[str], list[dict[str, str]], str]:
    """The export as (header, rows as dicts, raw text); with `key`, as that API key."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = await client.get("/subscribers/export", params=params, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert "subscribers.csv" in response.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(response.text, newline="")))
    header = rows[0]
    return header, [dict(zip(header, row, strict=True)) for row in rows[1:]], response.text


async def seed(client: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    ann = await add_subscriber(
        client,
        "Ann.Lee@Example.com",
        name="Ann",
        attributes={"plan": "pro", "seats": 3, "nested": {"ok": True}, "who": "Jörg"},
        tags=["vip", "news"],
        timezone="Europe/Berlin",
        phone="+49 151 1234 5678",
    )
    bob = await add_subscriber(client, "bob@example.org", name='Lee, "Bob"\nsecond line')
    cy = await add_subscriber(client, "cy@example.com", name="Cy", tags=["news"])
    assert (await client.delete("/subscribers/cy@example.com")).status_code == 200
    return {"ann": ann, "bob": bob, "cy": cy}


async def test_admin_export_has_decrypted_email_and_phone_and_every_column(
    client: httpx.AsyncClient,
) -> None:
    people = await seed(client)
    header, rows, raw = await export(client)
    assert header == ADMIN_COLUMNS
    assert [r["id"] for r in rows] == [str(p["id"]) for p in people.values()]
    ann, bob, cy = rows
    assert ann["email"] == "Ann.Lee@example.com"
    # E.164 numbers start with '+', so every phone gets the formula guard too.
    assert ann["phone"] == "'+4915112345678"
    assert ann["email_domain"] == "example.com"
    assert ann["name"] == "Ann"
    assert ann["status"] == "active"
    assert ann["tags"] == "news;vip"
    assert ann["timezone"] == "Europe/Berlin"
    assert json.loads(ann["attributes"]) == {
        "plan": "pro",
        "seats": 3,
        "nested": {"ok": True},
        "who": "Jörg",
    }
    assert "Jörg" in raw  # UTF-8, not \u escapes
    assert float(ann["engagement_score"]) == 0.0
    assert datetime.fromisoformat(ann["created_at"]).utcoffset() is not None
    assert ann["unsubscribed_at"] == ""
    assert (bob["email"], bob["phone"], bob["tags"], bob["timezone"]) == (
        "bob@example.org",
        "",
        "",
        "",
    )
    assert bob["name"] == 'Lee, "Bob"\nsecond line'
    assert json.loads(bob["attributes"]) == {}
    assert cy["status"] == "unsubscribed"
    assert datetime.fromisoformat(cy["unsubscribed_at"]).utcoffset() is not None


@pytest.mark.parametrize("scope", [Scope.read, Scope.write])
async def test_a_read_or_write_key_gets_the_email_hash_and_no_address_or_phone(
    client: httpx.AsyncClient, db: Runtime, api_keys: dict[Scope, str], scope: Scope
) -> None:
    await seed(client)
    header, rows, raw = await export(client, api_keys[scope])
    assert header == PSEUDONYMOUS_COLUMNS
    assert "email" not in header and "phone" not in header
    assert [r["email_hash"] for r in rows] == [
        db.cipher.email_hash(address)
        for address in ("ann.lee@example.com", "bob@example.org", "cy@example.com")
    ]
    for secret in ("Ann.Lee@", "ann.lee@", "bob@", "cy@", "4915112345678", "+49"):
        assert secret not in raw
    assert rows[0]["name"] == "Ann" and rows[0]["tags"] == "news;vip"


async def test_export_without_a_key_is_401(anon_client: httpx.AsyncClient) -> None:
    assert (await anon_client.get("/subscribers/export")).status_code == 401


async def test_export_filters_by_status_tag_and_topic(client: httpx.AsyncClient) -> None:
    people = await seed(client)
    weekly = await add_topic(client, "Weekly")
    confirmed = await add_topic(client, "Confirmed", optin="double")
    for who in ("Ann.Lee@example.com", "bob@example.org"):
        response = await client.post(f"/topics/{weekly['id']}/subscribers", json={"email": who})
        assert response.status_code == 201
    left = await client.delete(f"/topics/{weekly['id']}/subscribers/bob@example.org")
    assert left.status_code == 200
    pending = await client.post(
        f"/topics/{confirmed['id']}/subscribers", json={"email": "bob@example.org"}
    )
    assert pending.json()["status"] == "pending"

    async def ids(**params: Any) -> list[str]:
        return [row["id"] for row in (await export(client, **params))[1]]

    ann, bob, cy = (str(people[name]["id"]) for name in ("ann", "bob", "cy"))
    assert await ids(status="active") == [ann, bob]
    assert await ids(status="unsubscribed") == [cy]
    assert await ids(status="bounced") == []
    assert await ids(tag="news") == [ann, cy]
    assert await ids(tag="VIP") == [ann]
    assert await ids(tag="news", status="active") == [ann]
    assert await ids(topic_id=weekly["id"]) == [ann]  # active subscriptions only
    assert await ids(topic_id=confirmed["id"]) == []
    assert await ids(topic_id=4242) == []
    for bad in ({"status": "gone"}, {"topic_id": 0}, {"topic_id": "x"}, {"tag": "x" * 65}):
        response = await client.get("/subscribers/export", params=bad)
        assert response.status_code == 422, bad


@pytest.mark.parametrize(
    ("name", "exported"),
    [
        (
            '=HYPERLINK("http://evil.example","click")',
            '\'=HYPERLINK("http://evil.example","click")',
        ),
        ("-1", "'-1"),
        ("+1", "'+1"),
        ("@x", "'@x"),
        ("=1+1", "'=1+1"),
        ("Ann", "Ann"),
        ("'quoted", "'quoted"),
        ("a=b", "a=b"),
    ],
)
async def test_cells_that_a_spreadsheet_would_run_as_formulas_get_a_leading_quote(
    client: httpx.AsyncClient, name: str, exported: str
) -> None:
    await add_subscriber(client, "ann@example.com", name=name, attributes={"k": name})
    _, rows, _ = await export(client)
    assert rows[0]["name"] == exported
    assert json.loads(rows[0]["attributes"]) == {"k": name}  # JSON starts with '{'


async def test_an_address_starting_with_a_formula_character_is_quoted_too(
    client: httpx.AsyncClient,
) -> None:
    await add_subscriber(client, "=cmd@example.com")
    await add_subscriber(client, "-x@example.com")
    _, rows, _ = await export(client)
    assert [r["email"] for r in rows] == ["'=cmd@example.com", "'-x@example.com"]


async def test_an_empty_list_exports_only_the_header(client: httpx.AsyncClient) -> None:
    header, rows, raw = await export(client)
    assert (header, rows) == (ADMIN_COLUMNS, [])
    assert raw == ",".join(ADMIN_COLUMNS) + "\r\n"


@pytest.mark.parametrize("count", [6, 7])
async def test_an_export_of_several_pages_has_every_row_exactly_once_in_id_order(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, count: int
) -> None:
    monkeypatch.setattr(export_module, "PAGE", 2)
    created = [
        await add_subscriber(client, f"p{i}@example.com", tags=["even"] if i % 2 == 0 else [])
        for i in range(count)
    ]
    _, rows, _ = await export(client)
    assert [int(r["id"]) for r in rows] == [p["id"] for p in created]
    assert [r["email"] for r in rows] == [f"p{i}@example.com" for i in range(count)]
    _, evens, _ = await export(client, tag="even")
    assert [int(r["id"]) for r in evens] == [p["id"] for p in created[::2]]


# --- CLI ----------------------------------------------------------------------------------------


def api_export(settings: Settings, key: str, **params: Any) -> str:
    """The admin API's export, from an app on a runtime of its own (the test's loop is idle)."""

    async def fetch() -> str:
        runtime = await open_runtime(settings)
        try:
            transport = httpx.ASGITransport(app=create_app(runtime=runtime))
            async with httpx.AsyncClient(transport=transport, base_url="http://t.test") as c:
                response = await c.get(
                    "/subscribers/export",
                    params=params,
                    headers={"Authorization": f"Bearer {key}"},
                )
                assert response.status_code == 200, response.text
                return response.text
        finally:
            await runtime.close()

    return asyncio.run(fetch())


CLI_PEOPLE = (
    "email,name,tags,timezone,phone,attributes\n"
    'ann@example.com,Ann,news;vip,Europe/Berlin,+4915112345678,"{""who"": ""Jörg 🐍""}"\n'
    'bob@example.com,"=HYPERLINK(""http://evil.example"")",,,,\n'
    'cy@example.com,"Lee, ""Cy""\nsecond",vip,,,\n'
    "dee@example.com,-1,,,,\n"
)


def test_cli_export_to_a_file_writes_the_same_csv_as_the_admin_api(
    cli_env: Runtime, api_keys: dict[Scope, str], tmp_path: Path
) -> None:
    people = tmp_path / "people.csv"
    people.write_text(CLI_PEOPLE, encoding="utf-8")
    imported = runner.invoke(app, ["import", str(people), "--workers", "0"])
    assert imported.exit_code == 0, imported.output
    assert "4 inserted" in imported.output

    output = tmp_path / "export.csv"
    result = runner.invoke(app, ["export", "--output", str(output)])
    assert result.exit_code == 0, result.output
    assert "wrote 4 subscribers" in result.output.replace("\n", " ")
    written = output.read_bytes().decode("utf-8")
    assert written == api_export(cli_env.settings, api_keys[Scope.admin])
    rows = list(csv.DictReader(io.StringIO(written, newline="")))
    assert [r["email"] for r in rows] == [
        "ann@example.com",
        "bob@example.com",
        "cy@example.com",
        "dee@example.com",
    ]
    assert rows[0]["phone"] == "'+4915112345678"
    assert json.loads(rows[0]["attributes"]) == {"who": "Jörg 🐍"}
    assert rows[1]["name"] == '\'=HYPERLINK("http://evil.example")'
    assert rows[2]["name"] == 'Lee, "Cy"\nsecond'
    assert rows[3]["name"] == "'-1"

    vip = tmp_path / "vip.csv"
    filtered = runner.invoke(app, ["export", "--output", str(vip), "--tag", "vip"])
    assert filtered.exit_code == 0, filtered.output
    assert vip.read_bytes().decode("utf-8") == api_export(
        cli_env.settings, api_keys[Scope.admin], tag="vip"
    )
    assert "wrote 2 subscribers" in filtered.output.replace("\n", " ")


def test_cli_export_without_output_writes_the_csv_to_standard_output(
    cli_env: Runtime, api_keys: dict[Scope, str], tmp_path: Path
) -> None:
    people = tmp_path / "people.csv"
    people.write_text(CLI_PEOPLE, encoding="utf-8")
    assert runner.invoke(app, ["import", str(people), "--workers", "0"]).exit_code == 0
    result = runner.invoke(app, ["export", "--status", "active"])
    assert result.exit_code == 0, result.output
    expected = api_export(cli_env.settings, api_keys[Scope.admin], status="active")
    assert result.stdout.replace("\r\n", "\n") == expected.replace("\r\n", "\n")
