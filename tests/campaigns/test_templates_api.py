"""Templates API and previews on both databases: validated at save, rendered per subscriber."""

from __future__ import annotations

from typing import Any

import httpx

from tests.factories import add_subscriber, post_created

LAYOUT = {
    "name": "house",
    "is_layout": True,
    "html": "<html><body><header>tidings</header>{% block content %}{% endblock %}</body></html>",
}


async def add_template(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    body = {"name": "welcome", "subject": "Hi {name}", "html": "<p>Hello {{ subscriber.name }}</p>"}
    return await post_created(client, "/templates", {**body, **fields})


async def test_a_template_extends_a_layout_and_previews_for_a_real_subscriber(
    client: httpx.AsyncClient,
) -> None:
    await post_created(client, "/templates", LAYOUT)
    html = (
        '{% extends "house" %}{% block content %}'
        "<p>Hi {name}, {{ subscriber.attributes.plan }}</p>{% endblock %}"
    )
    template = await add_template(client, html=html)
    ann = await add_subscriber(client, "ann@example.com", name="Ann", attributes={"plan": "pro"})
    preview = await client.post(
        f"/templates/{template['id']}/preview", json={"subscriber": ann["id"]}
    )
    assert preview.status_code == 200, preview.text
    shown = preview.json()
    assert shown["subject"] == "Hi Ann"
    assert "<header>tidings</header>" in shown["html"] and "Hi Ann, pro" in shown["html"]
    assert "Hi Ann, pro" in shown["text"]
    sample = await client.post(f"/templates/{template['id']}/preview", json={})
    assert "Ada" in sample.json()["subject"]


async def test_a_broken_template_is_refused_at_save_naming_the_part_and_line(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/templates", json={"name": "bad", "subject": "x", "html": "<p>ok</p>\n{{ name | shout }}"}
    )
    assert response.status_code == 422, response.text
    assert "html, line 2" in response.json()["detail"] and "shout" in response.json()["detail"]
    escape = await client.post(
        "/templates", json={"name": "evil", "html": "{{ ''.__class__.__mro__ }}"}
    )
    assert escape.status_code == 422 and "line 1" in escape.json()["detail"]
    missing = await client.post(
        "/templates", json={"name": "orphan", "html": '{% extends "nowhere" %}'}
    )
    assert missing.status_code == 422 and "nowhere" in missing.json()["detail"]


async def test_template_names_are_unique_and_a_template_in_use_cannot_be_deleted(
    client: httpx.AsyncClient,
) -> None:
    template = await add_template(client)
    again = await client.post("/templates", json={"name": "welcome", "html": "<p>x</p>"})
    assert again.status_code == 409
    campaign = await post_created(
        client, "/campaigns/", {"name": "Uses it", "template_id": template["id"]}
    )
    assert campaign["subject"] == ""  # the template's subject is used
    deleted = await client.delete(f"/templates/{template['id']}")
    assert deleted.status_code == 409 and "used by 1 campaign" in deleted.text
    preview = await client.post(f"/campaigns/{campaign['id']}/preview", json={})
    assert preview.status_code == 200 and preview.json()["subject"] == "Hi Ada Lovelace"


async def test_replacing_a_template_is_validated_too(client: httpx.AsyncClient) -> None:
    template = await add_template(client)
    bad = await client.put(
        f"/templates/{template['id']}", json={"name": "welcome", "html": "{% if %}"}
    )
    assert bad.status_code == 422
    good = await client.put(
        f"/templates/{template['id']}", json={"name": "welcome", "html": "<p>new</p>"}
    )
    assert good.status_code == 200 and good.json()["html"] == "<p>new</p>"
    listed = (await client.get("/templates")).json()
    assert [t["name"] for t in listed["items"]] == ["welcome"]


async def test_campaign_content_is_checked_at_save_and_previewed_with_seed_placeholders(
    client: httpx.AsyncClient,
) -> None:
    broken = await client.post("/campaigns/", json={"name": "x", "html": "{% for %}"})
    assert broken.status_code == 422 and "html, line 1" in broken.json()["detail"]
    seed_001 = "<h1>Hello, {name}!</h1><p>Here's your weekly update.</p>"  # seed 001's content
    campaign = await post_created(
        client, "/campaigns/", {"name": "Weekly Update", "html": seed_001}
    )
    await add_subscriber(client, "bob@example.com", name="Bob Stone")
    shown = await client.post(
        f"/campaigns/{campaign['id']}/preview", json={"subscriber": "bob@example.com"}
    )
    assert shown.status_code == 200, shown.text
    assert "<h1>Hello, Bob Stone!</h1>" in shown.json()["html"]
    assert shown.json()["subject"] == "Weekly Update"
    unknown = await client.post(
        f"/campaigns/{campaign['id']}/preview", json={"subscriber": "nobody@example.com"}
    )
    assert unknown.status_code == 404
