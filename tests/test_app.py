"""Service basics: health, docs, one JSON error shape, no tracebacks for malformed input."""

from __future__ import annotations

import httpx

from tidings.app import create_app
from tidings.config import Settings
from tidings.db.engine import create_database
from tidings.runtime import Runtime


async def test_health_reports_the_database(anon_client: httpx.AsyncClient) -> None:
    response = await anon_client.get("/health")
    assert response.status_code == 200
    assert response.json()["database"] == "ok"


async def test_health_is_503_when_the_database_is_unreachable(db: Runtime) -> None:
    settings = Settings(database_url="postgresql+asyncpg://postgres@127.0.0.1:9/nowhere")
    broken = Runtime(settings=settings, database=create_database(settings), cipher=db.cipher)
    transport = httpx.ASGITransport(app=create_app(runtime=broken))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/health")
    await broken.close()
    assert response.status_code == 503
    assert response.json() == {"status": "degraded", "database": "unreachable", "version": "0.1.0"}


async def test_docs_and_openapi_schema_are_served(anon_client: httpx.AsyncClient) -> None:
    assert (await anon_client.get("/docs")).status_code == 200
    schema = (await anon_client.get("/openapi.json")).json()
    assert "/subscribers/{ref}" in schema["paths"]
    assert "HTTPBearer" in schema["components"]["securitySchemes"]


async def test_errors_share_one_json_shape(client: httpx.AsyncClient) -> None:
    unknown_route = await client.get("/no/such/route")
    malformed = await client.post(
        "/subscribers/", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    wrong_type = await client.post("/subscribers/", json={"email": 42})
    for response, status in ((unknown_route, 404), (malformed, 422), (wrong_type, 422)):
        assert response.status_code == status
        body = response.json()
        assert isinstance(body["detail"], str) and body["detail"]
        assert isinstance(body["code"], str)
    assert "body.email" in wrong_type.json()["detail"]


async def test_nul_characters_in_urls_are_a_400(client: httpx.AsyncClient) -> None:
    response = await client.get("/subscribers/", params={"tag": "a\x00b"})
    assert response.status_code == 400
    assert "NUL" in response.json()["detail"]


def test_request_logs_mask_email_addresses_link_tokens_and_secret_paths() -> None:
    from tidings.app import _loggable_path

    assert _loggable_path("/subscribers/ann@example.com/topics") == "/subscribers/{email}/topics"
    assert _loggable_path("/subscribers/12") == "/subscribers/12"
    assert _loggable_path("/u/AAAAtoken/preferences") == "/u/{token}/preferences"
    assert _loggable_path("/webhooks/postmark/s3cret") == "/webhooks/postmark/{token}"
    assert _loggable_path("/webhooks/postmark") == "/webhooks/postmark"
