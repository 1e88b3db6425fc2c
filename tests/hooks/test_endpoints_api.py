"""/webhook-endpoints on both databases: registration checked with messages that say what is
allowed, the secret shown at creation and rotation only and stored encrypted, admin keys only."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from tests.factories import post_created
from tests.hooks.conftest import HookReceiver, register
from tidings.hooks.models import WebhookDelivery
from tidings.runtime import Runtime
from tidings.security.models import Scope

URL = "https://hooks.example.com/tidings"


async def test_an_endpoint_is_created_and_its_secret_is_shown_once_and_stored_encrypted(
    client: httpx.AsyncClient, session: AsyncSession, db: Runtime, private_ok: Runtime
) -> None:
    created = await post_created(
        client,
        "/webhook-endpoints",
        {"name": "crm", "url": URL, "event_types": ["clicked", "bounced", "bounced"]},
    )
    secret = created["secret"]
    assert secret.startswith("whsec_")
    assert created["event_types"] == ["bounced", "clicked"]  # each once, in EventType order
    assert (created["enabled"], created["consecutive_failures"]) == (True, 0)
    for path in (f"/webhook-endpoints/{created['id']}", "/webhook-endpoints"):
        answer = await client.get(path)
        assert answer.status_code == 200 and secret not in answer.text
        assert "secret" not in answer.text
    listed = (await client.get("/webhook-endpoints")).json()
    assert (listed["total"], listed["limit"], listed["offset"]) == (1, 100, 0)
    assert listed["items"][0]["url"] == URL
    audit = (await client.get("/audit-log", params={"action": "webhook_endpoint.create"})).text
    assert "crm" in audit and secret not in audit
    raw = await session.scalar(text("SELECT secret FROM webhook_endpoints"))
    assert secret not in str(raw) and str(raw).startswith(db.cipher.current_key_id + ":")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"event_types": []}, "needs at least one of: queued, sent, delivered"),
        ({"event_types": ["bounced", "exploded"]}, "unknown event type 'exploded'; allowed: "),
        ({"url": "ftp://hooks.example.com/x"}, "must start with http:// or https://"),
        ({"url": "https:///no-host"}, "has no host"),
        ({"url": "hooks.example.com/x"}, "must start with http://"),
        ({"url": "https://hooks.example.com:99999/x"}, "is not a valid URL"),
        ({"name": "has space"}, "name"),
        ({"secret": "whsec_mine"}, "secret"),
    ],
)
async def test_invalid_endpoints_are_422_with_what_is_allowed(
    client: httpx.AsyncClient, private_ok: Runtime, fields: dict[str, object], message: str
) -> None:
    body = {"name": "crm", "url": URL, "event_types": ["bounced"], **fields}
    answer = await client.post("/webhook-endpoints", json=body)
    assert answer.status_code == 422, answer.text
    assert message in answer.json()["detail"]
    if "event_types" in fields:
        assert "unsubscribed, rejected, failed" in answer.json()["detail"]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://app.localhost/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://169.254.169.254/latest/meta-data",  # cloud metadata
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/hook",
    ],
)
async def test_private_and_loopback_targets_are_refused_unless_allowed(
    client: httpx.AsyncClient, url: str
) -> None:
    answer = await client.post(
        "/webhook-endpoints", json={"name": "inside", "url": url, "event_types": ["sent"]}
    )
    assert answer.status_code == 422, answer.text
    assert "TIDINGS_WEBHOOK_ALLOW_PRIVATE" in answer.json()["detail"]


async def test_private_targets_are_accepted_when_the_setting_allows_them(
    client: httpx.AsyncClient, private_ok: Runtime
) -> None:
    body = {"name": "inside", "url": "http://127.0.0.1:8080/hook", "event_types": ["sent"]}
    await post_created(client, "/webhook-endpoints", body)


async def test_names_are_unique(client: httpx.AsyncClient, private_ok: Runtime) -> None:
    body = {"name": "crm", "url": URL, "event_types": ["sent"]}
    await post_created(client, "/webhook-endpoints", body)
    again = await client.post("/webhook-endpoints", json=body)
    assert again.status_code == 409
    assert again.json()["code"] == "duplicate_webhook_endpoint"


async def test_patch_changes_url_types_and_name_and_checks_them(
    client: httpx.AsyncClient, private_ok: Runtime
) -> None:
    created = await post_created(
        client, "/webhook-endpoints", {"name": "crm", "url": URL, "event_types": ["sent"]}
    )
    path = f"/webhook-endpoints/{created['id']}"
    changed = await client.patch(
        path,
        json={"name": "crm-2", "url": URL + "/v2", "event_types": ["opened", "delivered"]},
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["name"] == "crm-2" and changed.json()["url"] == URL + "/v2"
    assert changed.json()["event_types"] == ["delivered", "opened"]
    assert "secret" not in changed.text
    for body, message in [
        ({"event_types": ["nope"]}, "unknown event type 'nope'"),
        ({"url": "gopher://x"}, "http://"),
        ({"enabled": None}, "enabled cannot be null"),
        ({"url": None}, "url cannot be null"),
    ]:
        answer = await client.patch(path, json=body)
        assert answer.status_code == 422 and message in answer.json()["detail"], answer.text
    assert (await client.get(path)).json()["event_types"] == ["delivered", "opened"]


async def test_disabling_and_enabling_through_patch_says_why(
    client: httpx.AsyncClient, private_ok: Runtime
) -> None:
    created = await post_created(
        client, "/webhook-endpoints", {"name": "crm", "url": URL, "event_types": ["sent"]}
    )
    path = f"/webhook-endpoints/{created['id']}"
    off = (await client.patch(path, json={"enabled": False})).json()
    assert off["enabled"] is False and off["disabled_reason"].startswith("disabled through the API")
    on = (await client.patch(path, json={"enabled": True})).json()
    assert on["enabled"] is True and on["disabled_reason"] is None


async def test_rotating_the_secret_shows_the_new_one_once(
    client: httpx.AsyncClient, private_ok: Runtime
) -> None:
    created = await post_created(
        client, "/webhook-endpoints", {"name": "crm", "url": URL, "event_types": ["sent"]}
    )
    path = f"/webhook-endpoints/{created['id']}"
    rotated = await client.post(f"{path}/rotate-secret")
    assert rotated.status_code == 200
    new = rotated.json()["secret"]
    assert new.startswith("whsec_") and new != created["secret"]
    assert new not in (await client.get(path)).text
    audit = await client.get("/audit-log", params={"action": "webhook_endpoint.rotate_secret"})
    assert audit.json() and new not in audit.text


async def test_a_test_delivery_is_queued_and_listed_and_deleting_removes_the_log(
    client: httpx.AsyncClient, session: AsyncSession, receiver: HookReceiver, private_ok: Runtime
) -> None:
    created = await register(client, receiver, "crm", ["bounced"])
    path = f"/webhook-endpoints/{created['id']}"
    test = await client.post(f"{path}/test")
    assert test.status_code == 201, test.text
    queued = test.json()
    assert (queued["event_type"], queued["status"], queued["attempts"]) == ("test", "pending", 0)
    assert queued["payload"]["type"] == "test"
    assert queued["payload"]["data"]["endpoint_id"] == created["id"]
    listed = (await client.get(f"{path}/deliveries")).json()
    assert [d["id"] for d in listed["items"]] == [queued["id"]] and listed["total"] == 1
    assert (await client.get(f"{path}/deliveries", params={"status": "succeeded"})).json()[
        "total"
    ] == 0
    bad = await client.get(f"{path}/deliveries", params={"status": "lost"})
    assert bad.status_code == 422 and "pending" in bad.json()["detail"]
    assert (await client.delete(path)).status_code == 204
    assert (await client.get(path)).status_code == 404
    assert (await client.get(f"{path}/deliveries")).status_code == 404
    assert (await session.scalars(select(WebhookDelivery))).all() == []


async def test_unknown_endpoints_are_404(client: httpx.AsyncClient) -> None:
    for method, path in [
        ("GET", "/webhook-endpoints/999"),
        ("PATCH", "/webhook-endpoints/999"),
        ("DELETE", "/webhook-endpoints/999"),
        ("POST", "/webhook-endpoints/999/rotate-secret"),
        ("POST", "/webhook-endpoints/999/test"),
        ("GET", "/webhook-endpoints/999/deliveries"),
    ]:
        answer = await client.request(method, path, json={} if method == "PATCH" else None)
        assert answer.status_code == 404, (method, path, answer.text)
        assert answer.json()["code"] == "not_found"


async def test_the_routes_need_an_admin_key(
    anon_client: httpx.AsyncClient, api_keys: dict[Scope, str]
) -> None:
    routes = [
        ("POST", "/webhook-endpoints"),
        ("GET", "/webhook-endpoints"),
        ("GET", "/webhook-endpoints/1"),
        ("PATCH", "/webhook-endpoints/1"),
        ("DELETE", "/webhook-endpoints/1"),
        ("POST", "/webhook-endpoints/1/rotate-secret"),
        ("GET", "/webhook-endpoints/1/deliveries"),
        ("POST", "/webhook-endpoints/1/test"),
    ]
    for method, path in routes:
        assert (await anon_client.request(method, path)).status_code == 401, (method, path)
    anon_client.headers["Authorization"] = f"Bearer {api_keys[Scope.write]}"
    for method, path in routes:
        assert (await anon_client.request(method, path)).status_code == 403, (method, path)
