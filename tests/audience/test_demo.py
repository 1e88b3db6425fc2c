"""Demo data: POST /seed (seed 003) and `tidings demo` build a realistic, idempotent audience."""

from __future__ import annotations

import httpx
from typer.testing import CliRunner

from tidings.cli import app
from tidings.runtime import Runtime


async def test_seed_creates_a_realistic_audience_and_is_idempotent(
    client: httpx.AsyncClient,
) -> None:
    first = await client.post("/seed", params={"subscribers": 300})
    assert first.status_code == 200
    assert first.json() == {"subscribers": 300, "topics": 3, "promotions": 3, "segments": 3}
    second = await client.post("/seed", params={"subscribers": 300})
    assert second.json() == first.json()

    stats = (await client.get("/subscribers/stats", params={"days": 120})).json()
    assert stats["total"] == 300
    assert stats["by_status"]["active"] > 250
    assert all(stats["by_status"][s] > 0 for s in ("unsubscribed", "bounced", "complained"))
    assert set(stats["by_tag"]) == {"retail", "tech", "finance"}
    assert all(topic["active"] > 0 for topic in stats["by_topic"])
    assert sum(day["joined"] for day in stats["growth"]) == 300
    statuses = {p["status"] for p in (await client.get("/promotions")).json()["items"]}
    assert statuses == {"draft", "active", "ended"}
    segments = (await client.get("/segments")).json()["items"]
    counts = [(await client.get(f"/segments/{s['id']}/count")).json()["count"] for s in segments]
    assert all(0 < count < 300 for count in counts)
    active_promotion = next(
        p for p in (await client.get("/promotions")).json()["items"] if p["status"] == "active"
    )
    members = await client.get("/subscriptions", params={"promotion_id": active_promotion["id"]})
    assert members.json()["total"] > 0


def test_demo_command_reports_what_it_made(cli_env: Runtime) -> None:
    result = CliRunner().invoke(app, ["demo", "--subscribers", "120"])
    assert result.exit_code == 0, result.output
    assert "120 subscribers, 3 topics, 3 promotions, 3 segments" in result.output
