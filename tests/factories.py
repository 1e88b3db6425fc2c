"""Factories that build real objects through the API, asserting each call succeeded."""

from __future__ import annotations

from typing import Any

import httpx


async def post_created(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], expected: int = 201
) -> dict[str, Any]:
    response = await client.post(path, json=body)
    assert response.status_code == expected, response.text
    created: dict[str, Any] = response.json()
    return created


async def add_subscriber(client: httpx.AsyncClient, email: str, **fields: Any) -> dict[str, Any]:
    return await post_created(client, "/subscribers/", {"email": email, **fields})


async def add_topic(client: httpx.AsyncClient, name: str, **fields: Any) -> dict[str, Any]:
    return await post_created(client, "/topics/", {"name": name, **fields})
