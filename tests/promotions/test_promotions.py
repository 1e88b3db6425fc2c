"""Promotions API (seed 004) on both databases: the one-way lifecycle and per-state edit rules."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tests.factories import post_created
from tidings.security.models import AuditEntry, Scope

HUGE_ID = "99999999999999999999"
SUMMER_SALE = {
    "name": "Summer Sale",
    "description": "Get 20% off everything",
    "start_at": "2026-06-01T00:00:00Z",
    "end_at": "2026-06-30T23:59:59Z",
}
ALL_FIELDS = "name, description, start_at, end_at"


async def add_promotion(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    return await post_created(client, "/promotions", {**SUMMER_SALE, **fields})


async def set_status(
    client: httpx.AsyncClient, promotion_id: object, status: str, expected: int = 200
) -> dict[str, Any]:
    response = await client.post(f"/promotions/{promotion_id}/status", json={"status": status})
    assert response.status_code == expected, response.text
    body: dict[str, Any] = response.json()
    return body


async def promotion_in(client: httpx.AsyncClient, status: str, **fields: Any) -> dict[str, Any]:
    """A promotion brought to ``status`` through the API, one legal step at a time."""
    promotion = await add_promotion(client, **fields)
    path = ["draft", "active", "ended"]
    for step in path[1 : path.index(status) + 1]:
        promotion = await set_status(client, promotion["id"], step)
    assert promotion["status"] == status
    return promotion


async def audit_entries(session: AsyncSession) -> list[dict[str, Any]]:
    """Audit rows about promotions, as plain dicts: the read is ended (rolled back, which expires
    the loaded rows) so the single pooled SQLite connection is free for the next request."""
    entries = (await session.scalars(select(AuditEntry).order_by(AuditEntry.id))).all()
    rows = [
        {
            "action": e.action,
            "target_type": e.target_type,
            "target_id": e.target_id,
            "detail": e.detail,
            "actor": e.actor,
        }
        for e in entries
        if e.action.startswith("promotion")
    ]
    await session.rollback()
    return rows


# --- seed 004's curl examples -------------------------------------------------------------------


async def test_the_readme_examples_work_as_written(client: httpx.AsyncClient) -> None:
    # Create a promotion
    response = await client.post(
        "/promotions",
        json={
            "name": "Summer Sale",
            "description": "Get 20% off everything",
            "start_at": "2026-06-01T00:00:00Z",
            "end_at": "2026-06-30T23:59:59Z",
        },
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["id"] == 1
    assert created["name"] == "Summer Sale"
    assert created["description"] == "Get 20% off everything"
    assert created["status"] == "draft"
    assert created["start_at"] == "2026-06-01T00:00:00Z"
    assert created["end_at"] == "2026-06-30T23:59:59Z"
    assert created["activated_at"] is None and created["ended_at"] is None

    # List all draft promotions
    drafts = await client.get("/promotions?status=draft")
    assert drafts.status_code == 200
    assert drafts.json()["total"] == 1
    assert [p["name"] for p in drafts.json()["items"]] == ["Summer Sale"]

    # Activate a promotion
    response = await client.post("/promotions/1/status", json={"status": "active"})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "active"
    assert response.json()["activated_at"] is not None

    # Update description (allowed in ACTIVE state)
    response = await client.patch("/promotions/1", json={"description": "New description"})
    assert response.status_code == 200, response.text
    assert response.json()["description"] == "New description"
    assert response.json()["name"] == "Summer Sale"
    assert response.json()["status"] == "active"

    # End a promotion
    response = await client.post("/promotions/1/status", json={"status": "ended"})
    assert response.status_code == 200, response.text
    ended = response.json()
    assert ended["status"] == "ended"
    assert ended["ended_at"] is not None and ended["ended_at"] >= ended["activated_at"]

    assert (await client.get("/promotions?status=draft")).json()["total"] == 0
    assert (await client.get("/promotions/1")).json() == ended


# --- create, get, list --------------------------------------------------------------------------


async def test_create_defaults_description_and_get_returns_the_same(
    client: httpx.AsyncClient,
) -> None:
    body = {k: v for k, v in SUMMER_SALE.items() if k != "description"}
    created = await post_created(client, "/promotions", {**body, "name": "  Spaced  "})
    assert created["name"] == "Spaced"
    assert created["description"] == ""
    assert created["status"] == "draft"
    assert created["created_at"] and created["updated_at"]
    fetched = await client.get(f"/promotions/{created['id']}")
    assert fetched.status_code == 200
    assert fetched.json() == created


@pytest.mark.parametrize("promotion_id", ["4242", str(2**63 - 1)])
async def test_unknown_promotion_is_404(client: httpx.AsyncClient, promotion_id: str) -> None:
    await add_promotion(client)
    for response in [
        await client.get(f"/promotions/{promotion_id}"),
        await client.patch(f"/promotions/{promotion_id}", json={"name": "x"}),
        await client.post(f"/promotions/{promotion_id}/status", json={"status": "active"}),
    ]:
        assert response.status_code == 404, response.text
        assert response.json()["code"] == "not_found"


@pytest.mark.parametrize("promotion_id", ["0", "-1", HUGE_ID, "9223372036854775808", "abc"])
@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("GET", "", None),
        ("PATCH", "", {"name": "x"}),
        ("POST", "/status", {"status": "active"}),
    ],
)
async def test_invalid_promotion_ids_are_422_not_500(
    client: httpx.AsyncClient, promotion_id: str, method: str, suffix: str, body: object
) -> None:
    response = await client.request(method, f"/promotions/{promotion_id}{suffix}", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"


async def test_list_filters_by_status_and_paginates(client: httpx.AsyncClient) -> None:
    for i in range(5):
        await add_promotion(client, name=f"Promo {i}")
    await set_status(client, 2, "active")
    await set_status(client, 3, "active")
    await set_status(client, 3, "ended")

    everything = (await client.get("/promotions")).json()
    assert everything["total"] == 5
    assert [p["id"] for p in everything["items"]] == [1, 2, 3, 4, 5]
    by_status = {
        status: [
            p["id"] for p in (await client.get(f"/promotions?status={status}")).json()["items"]
        ]
        for status in ("draft", "active", "ended")
    }
    assert by_status == {"draft": [1, 4, 5], "active": [2], "ended": [3]}

    page = (await client.get("/promotions?status=draft&limit=2&offset=1")).json()
    assert [p["id"] for p in page["items"]] == [4, 5]
    assert page["total"] == 3 and page["limit"] == 2 and page["offset"] == 1

    for query in ["status=paused", "status=DRAFT", "limit=0", "limit=1001", "offset=-1"]:
        assert (await client.get(f"/promotions?{query}")).status_code == 422, query


BAD_CREATE_BODIES = [
    {},
    {k: v for k, v in SUMMER_SALE.items() if k != "name"},
    {k: v for k, v in SUMMER_SALE.items() if k != "start_at"},
    {k: v for k, v in SUMMER_SALE.items() if k != "end_at"},
    {**SUMMER_SALE, "name": ""},
    {**SUMMER_SALE, "name": "   "},
    {**SUMMER_SALE, "name": "x" * 201},
    {**SUMMER_SALE, "name": None},
    {**SUMMER_SALE, "description": None},
    {**SUMMER_SALE, "description": "d" * 10_001},
    {**SUMMER_SALE, "start_at": None},
    {**SUMMER_SALE, "end_at": None},
    {**SUMMER_SALE, "start_at": "tomorrow"},
    {**SUMMER_SALE, "end_at": "2026-13-01T00:00:00Z"},
    {**SUMMER_SALE, "status": "active"},
    {**SUMMER_SALE, "id": 7},
    {**SUMMER_SALE, "name": "nul\x00byte"},
    # Values whose conversion to UTC leaves the range of datetime: a clear 422, not a crash.
    {**SUMMER_SALE, "start_at": "0001-01-01T00:00:00+01:00"},
    {**SUMMER_SALE, "end_at": "9999-12-31T23:00:00-05:00"},
]


@pytest.mark.parametrize("body", BAD_CREATE_BODIES)
async def test_invalid_create_bodies_are_422(
    client: httpx.AsyncClient, body: dict[str, object]
) -> None:
    response = await client.post("/promotions", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"
    assert (await client.get("/promotions")).json()["total"] == 0


@pytest.mark.parametrize("field", ["name", "description"])
async def test_text_with_a_lone_surrogate_is_422_not_500(
    client: httpx.AsyncClient, field: str
) -> None:
    raw = json.dumps({**SUMMER_SALE, field: "sale LONE"}).replace("LONE", "\\ud800")
    response = await client.post(
        "/promotions", content=raw, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert (await client.get("/promotions")).json()["total"] == 0


@pytest.mark.parametrize(
    ("start_at", "end_at"),
    [
        ("2026-06-30T00:00:00Z", "2026-06-01T00:00:00Z"),  # end before start
        ("2026-06-01T00:00:00Z", "2026-06-01T00:00:00Z"),  # equal
        ("2026-06-01T02:00:00+02:00", "2026-06-01T00:00:00Z"),  # the same instant, other zone
        ("2026-06-01T00:00:00", "2026-05-31T23:59:59Z"),  # naive start is UTC
    ],
)
async def test_end_at_must_be_after_start_at_on_create(
    client: httpx.AsyncClient, start_at: str, end_at: str
) -> None:
    response = await client.post(
        "/promotions", json={**SUMMER_SALE, "start_at": start_at, "end_at": end_at}
    )
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "invalid_time_range"
    assert "end_at" in response.json()["detail"] and "start_at" in response.json()["detail"]
    assert (await client.get("/promotions")).json()["total"] == 0


async def test_naive_times_are_utc_and_offsets_are_converted_to_utc(
    client: httpx.AsyncClient,
) -> None:
    created = await add_promotion(
        client, start_at="2026-06-01T00:00:00", end_at="2026-06-30T23:59:59-05:30"
    )
    assert created["start_at"] == "2026-06-01T00:00:00Z"
    assert created["end_at"] == "2026-07-01T05:29:59Z"
    assert (await client.get(f"/promotions/{created['id']}")).json() == created

    response = await client.patch(
        f"/promotions/{created['id']}", json={"start_at": "2026-06-01T09:30:00+09:30"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["start_at"] == "2026-06-01T00:00:00Z"
    response = await client.patch(f"/promotions/{created['id']}", json={"end_at": "2026-07-02"})
    assert response.status_code == 200, response.text
    assert response.json()["end_at"] == "2026-07-02T00:00:00Z"
    assert (await client.get(f"/promotions/{created['id']}")).json() == response.json()


# --- lifecycle ----------------------------------------------------------------------------------


async def test_draft_to_active_to_ended_stamps_each_step(client: httpx.AsyncClient) -> None:
    promotion = await add_promotion(client)
    active = await set_status(client, promotion["id"], "active")
    assert active["status"] == "active"
    assert active["activated_at"] is not None and active["ended_at"] is None
    assert active["activated_at"] >= promotion["created_at"]
    ended = await set_status(client, promotion["id"], "ended")
    assert ended["status"] == "ended"
    assert ended["activated_at"] == active["activated_at"]
    assert ended["ended_at"] is not None and ended["ended_at"] >= active["activated_at"]


@pytest.mark.parametrize(
    ("current", "target", "allowed"),
    [
        ("draft", "ended", "draft → active"),  # skipping
        ("draft", "draft", "draft → active"),  # same state
        ("active", "draft", "active → ended"),  # going back
        ("active", "active", "active → ended"),
        ("ended", "active", "none"),
        ("ended", "draft", "none"),
        ("ended", "ended", "none"),
    ],
)
async def test_illegal_transitions_are_422_and_list_the_allowed_moves(
    client: httpx.AsyncClient, current: str, target: str, allowed: str
) -> None:
    promotion = await promotion_in(client, current)
    response = await client.post(f"/promotions/{promotion['id']}/status", json={"status": target})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "illegal_transition"
    assert f"from {current} to {target}" in body["detail"]
    assert f"allowed: {allowed}" in body["detail"]
    assert (await client.get(f"/promotions/{promotion['id']}")).json() == promotion


@pytest.mark.parametrize(
    "body",
    [
        {"status": "paused"},
        {"status": "ACTIVE"},
        {"status": ""},
        {"status": None},
        {"status": 1},
        {},
        {"status": "active", "extra": True},
    ],
)
async def test_malformed_status_changes_are_422(
    client: httpx.AsyncClient, body: dict[str, object]
) -> None:
    promotion = await add_promotion(client)
    response = await client.post(f"/promotions/{promotion['id']}/status", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"
    assert (await client.get(f"/promotions/{promotion['id']}")).json()["status"] == "draft"


# --- edit rules ---------------------------------------------------------------------------------


async def test_a_draft_can_change_every_field(client: httpx.AsyncClient) -> None:
    promotion = await add_promotion(client)
    changes = {
        "name": "Winter Sale",
        "description": "Get 30% off",
        "start_at": "2026-12-01T00:00:00Z",
        "end_at": "2026-12-31T23:59:59Z",
    }
    response = await client.patch(f"/promotions/{promotion['id']}", json=changes)
    assert response.status_code == 200, response.text
    updated = response.json()
    assert {k: updated[k] for k in changes} == changes
    assert updated["status"] == "draft"
    assert updated["updated_at"] >= promotion["updated_at"]
    assert (await client.get(f"/promotions/{promotion['id']}")).json() == updated


async def test_patch_changes_only_the_given_fields(client: httpx.AsyncClient) -> None:
    promotion = await add_promotion(client)
    response = await client.patch(f"/promotions/{promotion['id']}", json={"name": "Renamed"})
    assert response.status_code == 200, response.text
    updated = response.json()
    assert updated["name"] == "Renamed"
    unchanged = ("description", "start_at", "end_at", "status", "created_at")
    assert {k: updated[k] for k in unchanged} == {k: promotion[k] for k in unchanged}


async def test_an_active_promotion_can_change_name_and_description(
    client: httpx.AsyncClient,
) -> None:
    promotion = await promotion_in(client, "active")
    response = await client.patch(
        f"/promotions/{promotion['id']}", json={"name": "Hot Sale", "description": "Hurry"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["name"] == "Hot Sale"
    assert response.json()["description"] == "Hurry"
    assert response.json()["status"] == "active"


@pytest.mark.parametrize(
    ("changes", "refused"),
    [
        ({"start_at": "2026-06-02T00:00:00Z"}, "start_at"),
        ({"end_at": "2026-07-30T00:00:00Z"}, "end_at"),
        ({"name": "ok", "end_at": "2026-07-30T00:00:00Z"}, "end_at"),
        (
            {"start_at": "2026-06-02T00:00:00Z", "end_at": "2026-07-30T00:00:00Z"},
            "end_at, start_at",
        ),
        # An unchanged value is still a change request for a field that is not editable.
        ({"start_at": SUMMER_SALE["start_at"]}, "start_at"),
    ],
)
async def test_an_active_promotion_refuses_time_changes_naming_the_field(
    client: httpx.AsyncClient, changes: dict[str, str], refused: str
) -> None:
    promotion = await promotion_in(client, "active")
    response = await client.patch(f"/promotions/{promotion['id']}", json=changes)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "read_only_field"
    assert f"cannot change {refused} of a active promotion" in body["detail"]
    assert "editable: name, description" in body["detail"]
    assert (await client.get(f"/promotions/{promotion['id']}")).json() == promotion


@pytest.mark.parametrize(
    "changes",
    [
        {"name": "Too late"},
        {"description": "Too late"},
        {"start_at": "2026-06-02T00:00:00Z"},
        {"end_at": "2026-07-30T00:00:00Z"},
        {"name": "a", "description": "b", "start_at": "2026-06-02T00:00:00Z"},
    ],
)
async def test_an_ended_promotion_is_read_only(
    client: httpx.AsyncClient, changes: dict[str, str]
) -> None:
    promotion = await promotion_in(client, "ended")
    response = await client.patch(f"/promotions/{promotion['id']}", json=changes)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "read_only_field"
    assert "of a ended promotion" in body["detail"]
    assert "editable: none (the promotion is read-only)" in body["detail"]
    for field in changes:
        assert field in body["detail"]
    assert (await client.get(f"/promotions/{promotion['id']}")).json() == promotion


@pytest.mark.parametrize(
    "changes",
    [
        {"end_at": "2026-05-31T00:00:00Z"},  # only end_at, before the stored start
        {"end_at": "2026-06-01T00:00:00Z"},  # only end_at, equal to the stored start
        {"start_at": "2026-07-01T00:00:00Z"},  # only start_at, after the stored end
        {"start_at": "2026-06-30T23:59:59Z"},  # only start_at, equal to the stored end
        {"start_at": "2026-08-01T00:00:00Z", "end_at": "2026-07-01T00:00:00Z"},  # both
        {"start_at": "2026-07-01T00:00:00Z", "end_at": "2026-07-01T02:00:00+02:00"},  # same instant
    ],
)
async def test_patch_cannot_make_the_time_range_invalid(
    client: httpx.AsyncClient, changes: dict[str, str]
) -> None:
    promotion = await add_promotion(client)
    response = await client.patch(f"/promotions/{promotion['id']}", json=changes)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "invalid_time_range"
    assert (await client.get(f"/promotions/{promotion['id']}")).json() == promotion


async def test_patch_moving_both_times_past_the_old_range_is_fine(
    client: httpx.AsyncClient,
) -> None:
    """Checked against the new pair, not field by field against the old values."""
    promotion = await add_promotion(client)
    changes = {"start_at": "2026-08-01T00:00:00Z", "end_at": "2026-08-31T00:00:00Z"}
    response = await client.patch(f"/promotions/{promotion['id']}", json=changes)
    assert response.status_code == 200, response.text
    assert response.json()["start_at"] == changes["start_at"]
    assert response.json()["end_at"] == changes["end_at"]


@pytest.mark.parametrize("status", ["draft", "active"])
@pytest.mark.parametrize(
    "changes",
    [
        {"name": None},
        {"description": None},
        {"start_at": None},
        {"end_at": None},
        {"status": "ended"},
        {"id": 9},
        {"activated_at": "2026-06-01T00:00:00Z"},
        {"name": ""},
        {"name": "x" * 201},
        {"start_at": "not a time"},
        {"start_at": "0001-01-01T00:00:00+01:00"},
    ],
)
async def test_null_unknown_and_malformed_patch_fields_are_422(
    client: httpx.AsyncClient, status: str, changes: dict[str, object]
) -> None:
    promotion = await promotion_in(client, status)
    response = await client.patch(f"/promotions/{promotion['id']}", json=changes)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"
    [field] = changes
    assert field in response.json()["detail"]
    assert (await client.get(f"/promotions/{promotion['id']}")).json() == promotion


# --- audit and permissions ----------------------------------------------------------------------


async def test_promotion_changes_are_audited_and_rejections_are_not(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    promotion = await add_promotion(client)
    pid = str(promotion["id"])
    await client.patch(f"/promotions/{pid}", json={"start_at": "2026-06-02T00:00:00Z"})
    await client.post(f"/promotions/{pid}/status", json={"status": "ended"})  # 422: no entry
    await set_status(client, pid, "active")
    await client.patch(f"/promotions/{pid}", json={"end_at": "2026-07-01T00:00:00Z"})  # 422
    await client.patch(f"/promotions/{pid}", json={"description": "New description"})
    await set_status(client, pid, "ended")
    await client.patch(f"/promotions/{pid}", json={"name": "x"})  # 422: no entry

    entries = await audit_entries(session)
    assert [(e["action"], e["target_type"], e["target_id"]) for e in entries] == [
        ("promotion.create", "promotion", pid),
        ("promotion.update", "promotion", pid),
        ("promotion.active", "promotion", pid),
        ("promotion.update", "promotion", pid),
        ("promotion.ended", "promotion", pid),
    ]
    assert [e["detail"] for e in entries[1:]] == [
        {"fields": ["start_at"]},
        {"from": "draft"},
        {"fields": ["description"]},
        {"from": "active"},
    ]
    assert all(e["actor"].startswith("test admin (tdg_") for e in entries)


async def test_a_read_key_can_look_but_not_change(
    anon_client: httpx.AsyncClient, client: httpx.AsyncClient, api_keys: dict[Scope, str]
) -> None:
    promotion = await add_promotion(client)
    reader = {"Authorization": f"Bearer {api_keys[Scope.read]}"}
    refused = [
        await anon_client.post("/promotions", json=SUMMER_SALE, headers=reader),
        await anon_client.patch(
            f"/promotions/{promotion['id']}", json={"name": "x"}, headers=reader
        ),
        await anon_client.post(
            f"/promotions/{promotion['id']}/status", json={"status": "active"}, headers=reader
        ),
    ]
    assert [r.status_code for r in refused] == [403, 403, 403]
    assert all(r.json()["code"] == "forbidden" for r in refused)
    listed = await anon_client.get("/promotions", headers=reader)
    assert listed.status_code == 200 and listed.json()["total"] == 1
    fetched = await anon_client.get(f"/promotions/{promotion['id']}", headers=reader)
    assert fetched.status_code == 200 and fetched.json() == promotion
    writer = {"Authorization": f"Bearer {api_keys[Scope.write]}"}
    assert (
        await anon_client.post("/promotions", json=SUMMER_SALE, headers=writer)
    ).status_code == 201
    del anon_client.headers["Authorization"]
    assert (await anon_client.get("/promotions")).status_code == 401
    assert (await anon_client.post("/promotions", json=SUMMER_SALE)).status_code == 401
