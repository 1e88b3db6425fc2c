"""/providers on both databases: each kind's settings and secrets checked, secrets stored
encrypted and only ever shown masked, admin scope only."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from tests.factories import post_created
from tidings.providers.models import Provider
from tidings.providers.service import secrets_of
from tidings.runtime import Runtime
from tidings.security.models import Scope

SENDGRID_KEY = "SG.abcdefghijklmnop.qrstuvwxyz0123456789"


async def add_sendgrid(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    body = {
        "name": "sendgrid-main",
        "kind": "sendgrid",
        "credentials": {"api_key": SENDGRID_KEY},
        "domains": ["News.Example.com"],
        "priority": 1,
        "weight": 3,
        "per_second": 50,
        "per_day": 100_000,
        "timezone": "Europe/Berlin",
        **fields,
    }
    return await post_created(client, "/providers", body)


async def test_a_provider_is_created_with_its_secrets_encrypted_and_masked(
    client: httpx.AsyncClient, session: AsyncSession, db: Runtime
) -> None:
    created = await add_sendgrid(client)
    assert created["credentials"] == {"api_key": "****6789"}
    assert created["domains"] == ["news.example.com"]
    assert (created["per_second"], created["per_day"], created["weight"]) == (50, 100_000, 3)
    assert SENDGRID_KEY not in (await client.get(f"/providers/{created['id']}")).text
    assert SENDGRID_KEY not in (await client.get("/providers")).text
    audit = (await client.get("/audit-log", params={"action": "provider.create"})).text
    assert "sendgrid-main" in audit and SENDGRID_KEY not in audit
    raw = await session.scalar(text("SELECT credentials FROM providers"))
    assert SENDGRID_KEY not in str(raw) and str(raw).startswith(db.cipher.current_key_id + ":")
    stored = await session.get_one(Provider, created["id"])
    assert secrets_of(stored) == {"api_key": SENDGRID_KEY}
    await session.rollback()


async def test_each_kind_names_what_is_missing_or_unknown(client: httpx.AsyncClient) -> None:
    cases = [
        ({"kind": "sendgrid"}, "needs the credential 'api_key'"),
        ({"kind": "mailgun", "credentials": {"api_key": "k" * 20}}, "needs the setting 'domain'"),
        (
            {"kind": "ses", "settings": {"region": "eu-1"}, "credentials": {"access_key_id": "A"}},
            "'secret_access_key'",
        ),
        (
            {"kind": "postmark", "credentials": {"server_token": "t", "api_key": "x"}},
            "no credential 'api_key'",
        ),
        ({"kind": "smtp", "settings": {"host": "mx", "colour": "red"}}, "no setting 'colour'"),
        ({"kind": "smtp", "settings": {"host": "mx", "security": "maybe"}}, "one of starttls"),
        ({"kind": "smtp", "settings": {"host": "mx", "port": 70000}}, "from 1 to 65535"),
        ({"kind": "pigeon"}, "kind"),
        ({"kind": "console", "timezone": "Mars/Olympus"}, "unknown timezone"),
        ({"kind": "console", "per_second": 0}, "per_second"),
        ({"kind": "console", "name": "has space"}, "name"),
        (
            {"kind": "ses", "settings": {"region": "mars"},
             "credentials": {"access_key_id": "A", "secret_access_key": "s"}},
            "region",
        ),
        (
            {"kind": "azure", "settings": {"endpoint": "ftp://x"},
             "credentials": {"access_key": "a2V5"}},
            "endpoint",
        ),
        (
            {"kind": "http", "settings": {"url": "https://api.example.com/send",
                                          "body_template": '{"to": "$recipient"}'}},
            "$recipient",
        ),
        (
            {"kind": "mailgun", "settings": {"domain": "mg.example.com", "region": "mars"},
             "credentials": {"api_key": "k" * 20}},
            "one of us, eu",
        ),
    ]  # fmt: skip
    for fields, message in cases:
        response = await client.post("/providers", json={"name": "p", **fields})
        assert response.status_code == 422, (fields, response.text)
        assert message in response.text, (fields, response.text)
    assert (await client.get("/providers")).json()["total"] == 0


async def test_updates_replace_or_remove_named_secrets_and_keep_the_others(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    created = await post_created(
        client,
        "/providers",
        {
            "name": "relay",
            "kind": "smtp",
            "settings": {"host": "smtp.example.com", "port": 587},
            "credentials": {"username": "mailer", "password": "old-password-1"},
        },
    )
    changed = await client.patch(
        "/providers/relay",
        json={"credentials": {"password": "new-password-2"}, "enabled": False, "per_minute": 600},
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert body["credentials"] == {"username": "****", "password": "****rd-2"}
    assert (body["enabled"], body["per_minute"], body["settings"]["port"]) == (False, 600, 587)
    stored = await session.get_one(Provider, created["id"])
    assert secrets_of(stored) == {"username": "mailer", "password": "new-password-2"}
    await session.rollback()
    removed = await client.patch("/providers/relay", json={"credentials": {"username": None}})
    assert removed.json()["credentials"] == {"password": "****rd-2"}
    wrong = await client.patch("/providers/relay", json={"settings": {"port": 25}})
    assert wrong.status_code == 422 and "needs the setting 'host'" in wrong.text


async def test_names_are_unique_lookups_404_and_delete_works(client: httpx.AsyncClient) -> None:
    created = await add_sendgrid(client)
    again = await client.post("/providers", json={"name": "sendgrid-main", "kind": "console"})
    assert again.status_code == 409 and again.json()["code"] == "duplicate_provider"
    assert (await client.get("/providers/nope")).status_code == 404
    assert (await client.get("/providers/99999999999999999999")).status_code == 404
    assert (await client.delete(f"/providers/{created['id']}")).status_code == 204
    assert (await client.get("/providers/sendgrid-main")).status_code == 404


async def test_only_admin_keys_see_or_change_providers(
    anon_client: httpx.AsyncClient, api_keys: dict[Scope, str]
) -> None:
    for scope in (Scope.read, Scope.write):
        headers = {"Authorization": f"Bearer {api_keys[scope]}"}
        assert (await anon_client.get("/providers", headers=headers)).status_code == 403
        created = await anon_client.post(
            "/providers", json={"name": "x", "kind": "console"}, headers=headers
        )
        assert created.status_code == 403
    assert (await anon_client.get("/providers")).status_code == 401
