"""API keys: authentication, scopes, keys never in URLs, shown once, stored hashed; audit; CLI."""

from __future__ import annotations

import asyncio
import hashlib
import re

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession
from typer.testing import CliRunner

from tidings.cli import app
from tidings.db.engine import create_database
from tidings.runtime import Runtime
from tidings.security.apikeys import KEY_PREFIX, PREFIX_LENGTH, authenticate
from tidings.security.models import AuditEntry, Scope

runner = CliRunner()


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def admin_label(api_keys: dict[Scope, str]) -> str:
    return f"test admin ({api_keys[Scope.admin][:PREFIX_LENGTH]})"


async def raw_rows(session: AsyncSession, sql: str) -> list[dict[str, object]]:
    rows = [dict(row) for row in (await session.execute(text(sql))).mappings().all()]
    await session.rollback()  # hand the connection back: SQLite has only one
    return rows


async def issue(client: httpx.AsyncClient, name: str, scope: str) -> dict[str, object]:
    response = await client.post("/keys", json={"name": name, "scope": scope})
    assert response.status_code == 201, response.text
    body: dict[str, object] = response.json()
    return body


# --- authentication -------------------------------------------------------------------------


def assert_unauthorized(response: httpx.Response) -> None:
    assert response.status_code == 401
    body = response.json()
    assert set(body) == {"detail", "code"}
    assert body["code"] == "unauthorized"
    assert body["detail"]
    assert response.headers["WWW-Authenticate"] == "Bearer"


async def test_a_request_without_authorization_is_a_401_with_a_bearer_challenge(
    anon_client: httpx.AsyncClient, api_keys: dict[Scope, str]
) -> None:
    response = await anon_client.get("/subscribers/")
    assert_unauthorized(response)
    assert "Authorization: Bearer" in response.json()["detail"]


@pytest.mark.parametrize(
    "secret",
    [
        "tdg_" + "A" * 43,
        "not-even-a-tidings-key",
        "tdg_",
        "tdg_" + "x" * 500,
    ],
)
async def test_a_wrong_key_is_a_401(
    anon_client: httpx.AsyncClient, api_keys: dict[Scope, str], secret: str
) -> None:
    assert_unauthorized(await anon_client.get("/subscribers/", headers=bearer(secret)))


async def test_a_key_with_one_character_changed_is_a_401(
    anon_client: httpx.AsyncClient, api_keys: dict[Scope, str]
) -> None:
    good = api_keys[Scope.admin]
    bad = good[:-1] + ("A" if good[-1] != "A" else "B")
    assert_unauthorized(await anon_client.get("/subscribers/", headers=bearer(bad)))
    assert (await anon_client.get("/subscribers/", headers=bearer(good))).status_code == 200


@pytest.mark.parametrize("scheme", ["Basic", "Token", "Digest"])
async def test_a_non_bearer_scheme_is_a_401(
    anon_client: httpx.AsyncClient, api_keys: dict[Scope, str], scheme: str
) -> None:
    headers = {"Authorization": f"{scheme} {api_keys[Scope.admin]}"}
    assert_unauthorized(await anon_client.get("/subscribers/", headers=headers))


async def test_the_bearer_scheme_is_case_insensitive(
    anon_client: httpx.AsyncClient, api_keys: dict[Scope, str]
) -> None:
    headers = {"Authorization": f"bearer {api_keys[Scope.read]}"}
    assert (await anon_client.get("/subscribers/", headers=headers)).status_code == 200


async def test_a_revoked_key_is_a_401(
    client: httpx.AsyncClient, anon_client: httpx.AsyncClient
) -> None:
    issued = await issue(client, "doomed", "write")
    secret = str(issued["key"])
    assert (await anon_client.get("/subscribers/", headers=bearer(secret))).status_code == 200
    assert (await client.delete(f"/keys/{issued['id']}")).status_code == 200
    assert_unauthorized(await anon_client.get("/subscribers/", headers=bearer(secret)))
    response = await anon_client.post(
        "/subscribers/", json={"email": "x@example.com"}, headers=bearer(secret)
    )
    assert_unauthorized(response)


# --- scopes ---------------------------------------------------------------------------------


async def test_a_read_key_can_list_subscribers_but_not_create_one(
    anon_client: httpx.AsyncClient, api_keys: dict[Scope, str]
) -> None:
    headers = bearer(api_keys[Scope.read])
    assert (await anon_client.get("/subscribers/", headers=headers)).status_code == 200
    response = await anon_client.post(
        "/subscribers/", json={"email": "ro@example.com"}, headers=headers
    )
    assert response.status_code == 403
    body = response.json()
    assert body["code"] == "forbidden"
    assert "'read'" in body["detail"] and "'write'" in body["detail"]
    admin = bearer(api_keys[Scope.admin])
    assert (await anon_client.get("/subscribers/", headers=admin)).json()["total"] == 0


async def test_a_write_key_can_create_subscribers_but_not_manage_keys(
    anon_client: httpx.AsyncClient, api_keys: dict[Scope, str]
) -> None:
    headers = bearer(api_keys[Scope.write])
    response = await anon_client.post(
        "/subscribers/", json={"email": "rw@example.com"}, headers=headers
    )
    assert response.status_code == 201
    assert (await anon_client.get("/subscribers/", headers=headers)).status_code == 200
    for method, path in [("GET", "/keys"), ("GET", "/audit-log"), ("POST", "/keys")]:
        denied = await anon_client.request(
            method, path, headers=headers, json={"name": "x"} if method == "POST" else None
        )
        assert denied.status_code == 403, (method, path)
        assert denied.json()["code"] == "forbidden"
        assert "'write'" in denied.json()["detail"] and "'admin'" in denied.json()["detail"]
    assert (await anon_client.delete("/keys/1", headers=headers)).status_code == 403


async def test_an_admin_key_can_do_everything(client: httpx.AsyncClient) -> None:
    assert (await client.post("/subscribers/", json={"email": "a@example.com"})).status_code == 201
    assert (await client.get("/subscribers/")).status_code == 200
    assert (await client.get("/keys")).status_code == 200
    assert (await client.get("/audit-log")).status_code == 200
    created = await issue(client, "extra", "read")
    assert (await client.delete(f"/keys/{created['id']}")).status_code == 200


# --- no credentials in URLs -----------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {"api_key": "{secret}"},
        {"token": "{secret}"},
        {"access_token": "{secret}"},
        {"API_KEY": "anything"},
        {"tag": "{secret}"},
        {"q": "tdg_guessed"},
    ],
)
async def test_a_key_in_the_query_string_is_refused_even_with_a_valid_header(
    client: httpx.AsyncClient, api_keys: dict[Scope, str], params: dict[str, str]
) -> None:
    filled = {k: v.format(secret=api_keys[Scope.admin]) for k, v in params.items()}
    response = await client.get("/subscribers/", params=filled)
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "credentials_in_query"
    assert "Authorization header" in body["detail"]
    assert api_keys[Scope.admin] not in response.text


async def test_a_key_in_the_query_string_is_refused_without_a_header_too(
    anon_client: httpx.AsyncClient, api_keys: dict[Scope, str]
) -> None:
    response = await anon_client.get("/subscribers/", params={"api_key": api_keys[Scope.admin]})
    assert response.status_code == 400
    assert response.json()["code"] == "credentials_in_query"


async def test_a_key_in_the_query_string_of_a_write_is_refused_and_nothing_is_written(
    client: httpx.AsyncClient, api_keys: dict[Scope, str]
) -> None:
    response = await client.post(
        "/subscribers/",
        params={"token": api_keys[Scope.admin]},
        json={"email": "leak@example.com"},
    )
    assert response.status_code == 400
    assert (await client.get("/subscribers/")).json()["total"] == 0


# --- issuing, listing, storing --------------------------------------------------------------


async def test_creating_a_key_returns_the_full_key_once_with_128_bits_or_more(
    client: httpx.AsyncClient, anon_client: httpx.AsyncClient
) -> None:
    body = await issue(client, "  deploy bot ", "write")
    secret = str(body["key"])
    assert secret.startswith(KEY_PREFIX)
    random_part = secret.removeprefix(KEY_PREFIX)
    assert len(random_part) >= 43  # 43 url-safe base64 characters carry 256 bits
    assert re.fullmatch(r"[A-Za-z0-9_-]+", random_part)
    assert body["name"] == "deploy bot"
    assert body["scope"] == "write"
    assert body["prefix"] == secret[:PREFIX_LENGTH]
    assert body["revoked_at"] is None and body["last_used_at"] is None
    assert (await anon_client.get("/subscribers/", headers=bearer(secret))).status_code == 200
    other = await issue(client, "deploy bot", "write")
    assert other["key"] != secret and other["prefix"] != body["prefix"]


async def test_listing_keys_never_shows_a_full_key_or_its_hash(
    client: httpx.AsyncClient, api_keys: dict[Scope, str]
) -> None:
    body = await issue(client, "listed", "read")
    secret = str(body["key"])
    response = await client.get("/keys")
    assert response.status_code == 200
    listed = response.json()
    assert [k["name"] for k in listed] == ["test read", "test write", "test admin", "listed"]
    for item in listed:
        assert set(item) == {
            "id",
            "name",
            "prefix",
            "scope",
            "created_at",
            "last_used_at",
            "revoked_at",
        }
    for full in [secret, *api_keys.values()]:
        assert full not in response.text
        assert full[PREFIX_LENGTH:] not in response.text
        assert hashlib.sha256(full.encode()).hexdigest() not in response.text
    assert listed[-1]["prefix"] == secret[:PREFIX_LENGTH]


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"name": ""}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": "ok", "scope": "root"}, "scope"),
        ({"name": "ok", "key": "tdg_mine"}, "Extra inputs"),
    ],
)
async def test_bad_key_requests_are_422_naming_the_field(
    client: httpx.AsyncClient, payload: dict[str, object], fragment: str
) -> None:
    response = await client.post("/keys", json=payload)
    assert response.status_code == 422
    assert fragment in response.json()["detail"]


async def test_a_whitespace_only_key_name_is_a_422(client: httpx.AsyncClient) -> None:
    response = await client.post("/keys", json={"name": "   "})
    assert response.status_code == 422
    assert "name" in response.json()["detail"]


async def test_the_api_keys_table_holds_only_the_sha256_hash_and_the_prefix(
    client: httpx.AsyncClient, session: AsyncSession, api_keys: dict[Scope, str]
) -> None:
    body = await issue(client, "stored", "admin")
    secret = str(body["key"])
    rows = await raw_rows(session, "SELECT * FROM api_keys")
    assert set(rows[0]) == {
        "id",
        "name",
        "prefix",
        "key_hash",
        "scope",
        "created_at",
        "last_used_at",
        "revoked_at",
    }
    secrets = [secret, *api_keys.values()]
    for row in rows:
        for value in row.values():
            for full in secrets:
                assert full not in str(value)
                assert full[PREFIX_LENGTH:] not in str(value)
                # not even a recognisable piece of the part that is not displayed
                assert full[PREFIX_LENGTH : PREFIX_LENGTH + 12] not in str(value)
    stored = next(r for r in rows if r["name"] == "stored")
    assert stored["key_hash"] == hashlib.sha256(secret.encode()).hexdigest()
    assert stored["prefix"] == secret[:PREFIX_LENGTH] == body["prefix"]
    assert stored["scope"] == "admin"


async def test_using_a_key_records_when_it_was_last_used(
    client: httpx.AsyncClient, anon_client: httpx.AsyncClient
) -> None:
    body = await issue(client, "used", "read")
    assert (await anon_client.get("/subscribers/", headers=bearer(str(body["key"])))).is_success
    listed = {k["id"]: k for k in (await client.get("/keys")).json()}
    assert listed[body["id"]]["last_used_at"] is not None


# --- revoking and the audit log -------------------------------------------------------------


@pytest.mark.parametrize("by", ["id", "prefix"])
async def test_deleting_a_key_by_id_or_prefix_revokes_it(
    client: httpx.AsyncClient, by: str
) -> None:
    body = await issue(client, "short-lived", "read")
    response = await client.delete(f"/keys/{body[by]}")
    assert response.status_code == 200
    revoked = response.json()
    assert revoked["id"] == body["id"]
    assert revoked["revoked_at"] is not None
    assert "key" not in revoked
    listed = {k["id"]: k for k in (await client.get("/keys")).json()}
    assert listed[body["id"]]["revoked_at"] == revoked["revoked_at"]
    again = await client.delete(f"/keys/{body['id']}")
    assert again.status_code == 200 and again.json()["revoked_at"] == revoked["revoked_at"]


@pytest.mark.parametrize("ref", ["999999", "tdg_nothere1", "99999999999999999999999"])
async def test_deleting_an_unknown_key_is_a_404(client: httpx.AsyncClient, ref: str) -> None:
    response = await client.delete(f"/keys/{ref}")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


async def test_a_key_can_revoke_itself_and_is_locked_out(
    anon_client: httpx.AsyncClient, api_keys: dict[Scope, str]
) -> None:
    secret = api_keys[Scope.admin]
    headers = bearer(secret)
    assert (await anon_client.delete(f"/keys/{secret[:PREFIX_LENGTH]}", headers=headers)).is_success
    assert_unauthorized(await anon_client.get("/keys", headers=headers))


async def test_creating_and_revoking_keys_is_audited_with_the_admin_as_actor(
    client: httpx.AsyncClient, session: AsyncSession, admin_label: str
) -> None:
    body = await issue(client, "audited", "write")
    await client.delete(f"/keys/{body['prefix']}")
    await client.delete(f"/keys/{body['id']}")  # a second revoke changes nothing
    entries = (
        await session.scalars(
            select(AuditEntry)
            .where(AuditEntry.target_id == str(body["id"]))
            .order_by(AuditEntry.id)
        )
    ).all()
    assert [(e.action, e.target_type, e.actor) for e in entries] == [
        ("api_key.create", "api_key", admin_label),
        ("api_key.revoke", "api_key", admin_label),
    ]
    assert entries[0].detail == {"name": "audited", "scope": "write"}
    for entry in entries:
        assert str(body["key"]) not in str(entry.detail)


async def test_the_audit_log_lists_entries_newest_first(
    client: httpx.AsyncClient, admin_label: str
) -> None:
    first = await issue(client, "one", "read")
    second = await issue(client, "two", "read")
    await client.delete(f"/keys/{first['id']}")
    response = await client.get("/audit-log")
    assert response.status_code == 200
    entries = response.json()
    ids = [e["id"] for e in entries]
    assert ids == sorted(ids, reverse=True)
    times = [e["at"] for e in entries]
    assert times == sorted(times, reverse=True)
    mine = [(e["action"], e["target_id"]) for e in entries if e["actor"] == admin_label]
    assert mine == [
        ("api_key.revoke", str(first["id"])),
        ("api_key.create", str(second["id"])),
        ("api_key.create", str(first["id"])),
    ]
    revokes = (await client.get("/audit-log", params={"action": "api_key.revoke"})).json()
    assert [e["target_id"] for e in revokes] == [str(first["id"])]
    page = (await client.get("/audit-log", params={"limit": 2, "offset": 1})).json()
    assert [e["id"] for e in page] == ids[1:3]


async def test_the_audit_log_needs_an_admin_key(
    anon_client: httpx.AsyncClient, api_keys: dict[Scope, str]
) -> None:
    assert_unauthorized(await anon_client.get("/audit-log"))
    read = await anon_client.get("/audit-log", headers=bearer(api_keys[Scope.read]))
    assert read.status_code == 403


# --- CLI ------------------------------------------------------------------------------------


@pytest.fixture
def cli(cli_env: Runtime, monkeypatch: pytest.MonkeyPatch) -> Runtime:
    """The CLI pointed at the test database, with a terminal wide enough for its tables."""
    monkeypatch.setenv("COLUMNS", "200")
    return cli_env


def key_rows(output: str) -> dict[str, list[str]]:
    """Rows of the `keys list` table, by prefix."""
    rows = {}
    for line in output.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃|]", line)]
        cells = [c for c in cells if c]
        prefixes = [c for c in cells if c.startswith(KEY_PREFIX)]
        if prefixes:
            rows[prefixes[0]] = cells
    return rows


def authenticates(runtime: Runtime, secret: str) -> str | None:
    """The scope of the live key `secret`, checked with a fresh engine (the test loop is idle)."""

    async def check() -> str | None:
        database = create_database(runtime.settings)
        try:
            async with database.sessions() as session:
                key = await authenticate(session, secret)
                return None if key is None else key.scope
        finally:
            await database.dispose()

    return asyncio.run(check())


def test_cli_keys_create_prints_the_key_once_and_list_and_revoke_show_it(
    cli: Runtime,
) -> None:
    created = runner.invoke(app, ["keys", "create", "--name", "ci", "--scope", "write"])
    assert created.exit_code == 0, created.output
    printed = [w for w in created.output.split() if w.startswith(KEY_PREFIX)]
    assert len(printed) == 1
    secret = printed[0]
    assert len(secret) - len(KEY_PREFIX) >= 43
    assert "shown only now" in created.output
    assert authenticates(cli, secret) == "write"

    listed = runner.invoke(app, ["keys", "list"])
    assert listed.exit_code == 0, listed.output
    assert secret not in listed.output
    prefix = secret[:PREFIX_LENGTH]
    row = key_rows(listed.output)[prefix]
    assert "ci" in row and "write" in row
    assert row[-1] == "-"  # not revoked

    revoked = runner.invoke(app, ["keys", "revoke", prefix])
    assert revoked.exit_code == 0, revoked.output
    assert prefix in revoked.output

    listed = runner.invoke(app, ["keys", "list"])
    row = key_rows(listed.output)[prefix]
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}", row[-1]), row
    assert authenticates(cli, secret) is None


def test_cli_keys_are_audited_with_the_cli_as_actor(cli: Runtime) -> None:
    created = runner.invoke(app, ["keys", "create", "--name", "audited-cli", "--scope", "read"])
    assert created.exit_code == 0, created.output
    secret = next(w for w in created.output.split() if w.startswith(KEY_PREFIX))
    assert runner.invoke(app, ["keys", "revoke", secret[:PREFIX_LENGTH]]).exit_code == 0

    async def audit() -> list[tuple[str, str]]:
        database = create_database(cli.settings)
        try:
            async with database.sessions() as session:
                entries = await session.scalars(
                    select(AuditEntry)
                    .where(AuditEntry.target_type == "api_key")
                    .order_by(AuditEntry.id)
                )
                return [(e.action, e.actor) for e in entries]
        finally:
            await database.dispose()

    assert asyncio.run(audit()) == [("api_key.create", "cli"), ("api_key.revoke", "cli")]


def test_cli_keys_create_with_an_unknown_scope_fails_clearly(cli: Runtime) -> None:
    result = runner.invoke(app, ["keys", "create", "--name", "ci", "--scope", "bogus"])
    assert result.exit_code == 2  # a usage error, before anything touches the database
    assert "bogus" in result.output
    assert "--scope" in result.output
    for scope in ("read", "write", "admin"):
        assert scope in result.output
    assert KEY_PREFIX not in result.output


def test_cli_keys_create_with_a_blank_name_fails_clearly(cli: Runtime) -> None:
    result = runner.invoke(app, ["keys", "create", "--name", "   "])
    assert result.exit_code == 1
    assert "key name must be 1 to 100 characters" in result.output
    assert KEY_PREFIX not in result.output


def test_cli_revoking_an_unknown_key_fails_clearly(cli: Runtime) -> None:
    result = runner.invoke(app, ["keys", "revoke", "tdg_nothere1"])
    assert result.exit_code == 1
    assert "no API key with id or prefix 'tdg_nothere1'" in result.output
