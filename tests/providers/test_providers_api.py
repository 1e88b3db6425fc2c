"""/providers on both databases: each kind's settings and secrets checked, secrets stored
encrypted and only ever shown masked, admin scope only."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from tests.factories import post_created
from tidings.db.types import utcnow
from tidings.delivery import quota
from tidings.delivery.quota import Limits
from tidings.delivery.warming import WarmingPlan, pause
from tidings.providers.models import Provider, ProviderState
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


async def test_a_warming_plan_is_typed_stored_in_full_and_an_empty_one_is_the_default(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    created = await post_created(
        client, "/providers", {"name": "fresh-ip", "kind": "console", "warming_plan": {}}
    )
    plan = created["warming_plan"]
    assert (plan["start_volume"], plan["target_volume"], plan["days"]) == (50, 3000, 30)
    assert "steps" not in plan
    stored = await session.get_one(Provider, created["id"])
    assert stored.warming_plan == plan
    await session.rollback()
    stepped = await client.patch("/providers/fresh-ip", json={"warming_plan": {"steps": [5, 9]}})
    assert stepped.status_code == 200, stepped.text
    assert stepped.json()["warming_plan"]["steps"] == [5, 9]
    removed = await client.patch("/providers/fresh-ip", json={"warming_plan": None})
    assert removed.json()["warming_plan"] is None
    kept = await client.patch("/providers/fresh-ip", json={"weight": 2})
    assert (kept.json()["weight"], kept.json()["warming_plan"]) == (2, None)


async def test_a_bad_warming_plan_is_a_422_naming_the_field(client: httpx.AsyncClient) -> None:
    cases = [
        ({"start_volume": 0}, "warming_plan.start_volume"),
        ({"start_volume": 100, "target_volume": 10}, "target_volume must be at least"),
        ({"steps": []}, "warming_plan.steps"),
        ({"steps": [10, 0]}, "every step is a volume of at least 1"),
        ({"curve": "cubic"}, "warming_plan.curve"),
        ({"days": 400}, "warming_plan.days"),
        ({"complaint_pause": 2}, "warming_plan.complaint_pause"),
        ({"speed": "fast"}, "warming_plan.speed"),
        ("fast", "warming_plan"),
    ]
    for plan, message in cases:
        body = {"name": "p", "kind": "console", "warming_plan": plan}
        response = await client.post("/providers", json=body)
        assert response.status_code == 422, (plan, response.text)
        assert message in response.json()["detail"], (plan, response.text)
    await post_created(client, "/providers", {"name": "p", "kind": "console"})
    patched = await client.patch("/providers/p", json={"warming_plan": {"days": 0}})
    assert patched.status_code == 422 and "warming_plan.days" in patched.text


async def test_null_for_a_required_field_is_a_422_not_a_broken_row(
    client: httpx.AsyncClient,
) -> None:
    await post_created(client, "/providers", {"name": "p", "kind": "console"})
    for field in ("name", "enabled", "priority", "timezone"):
        response = await client.patch("/providers/p", json={field: None})
        assert response.status_code == 422, (field, response.text)
        assert f"{field} cannot be null" in response.json()["detail"]


async def test_resuming_a_provider_that_is_not_paused_is_a_409(client: httpx.AsyncClient) -> None:
    await post_created(client, "/providers", {"name": "p", "kind": "console"})
    fresh = await client.post("/providers/p/resume")  # no shared state row yet
    assert fresh.status_code == 409 and fresh.json()["code"] == "not_paused"
    assert "'p' is not paused" in fresh.json()["detail"]
    assert (await client.post("/providers/nope/resume")).status_code == 404


async def granted(db: Runtime, limits: Limits) -> int:
    """What a worker would be granted now (a fresh session per grant, as workers do)."""
    async with db.database.sessions() as session:
        return (await quota.acquire(session, limits, 10, utcnow())).granted


async def test_a_paused_provider_is_shown_paused_and_resumes(
    client: httpx.AsyncClient, db: Runtime
) -> None:
    created = await post_created(
        client, "/providers", {"name": "warm", "kind": "console", "warming_plan": {}}
    )
    limits = Limits(created["id"], warming=WarmingPlan())
    assert await granted(db, limits) == 10
    async with db.database.sessions() as session:
        state = await session.get_one(ProviderState, created["id"])
        pause(session, state, "complaint rate 0.5%", utcnow())
        await session.commit()
    shown = (await client.get("/providers/warm")).json()
    assert shown["paused_reason"] == "complaint rate 0.5%" and shown["paused_at"] is not None
    assert await granted(db, limits) == 0
    resumed = await client.post("/providers/warm/resume")
    assert resumed.status_code == 200, resumed.text
    assert (resumed.json()["paused_reason"], resumed.json()["paused_at"]) == (None, None)
    assert (await client.post("/providers/warm/resume")).json()["code"] == "not_paused"
    assert await granted(db, limits) == 10
    audit = (await client.get("/audit-log", params={"action": "provider.resume"})).json()
    assert [entry["detail"]["paused_reason"] for entry in audit] == ["complaint rate 0.5%"]
    listed = (await client.get("/providers")).json()["items"]
    assert [p["paused_reason"] for p in listed] == [None]
