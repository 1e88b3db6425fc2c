"""`tidings serve` end to end: first start, embedded defaults, and a bounded schemathesis run."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from tests.conftest import DATABASE_KINDS, fresh_database
from tests.live_server import LiveServer

EXAMPLES_PER_OPERATION = 40


def test_first_start_creates_var_secrets_and_prints_an_admin_key_once(tmp_path: Path) -> None:
    server = LiveServer(tmp_path).start()
    try:
        keys = server.printed_keys()
        assert len(set(keys)) == 1
        assert f"{server.base_url}/docs" in server.output
        response = httpx.get(
            f"{server.base_url}/keys", headers={"Authorization": f"Bearer {keys[0]}"}
        )
        assert response.status_code == 200 and response.json()[0]["scope"] == "admin"
    finally:
        server.stop()
    secrets_file = tmp_path / "var" / "secrets.json"
    assert (tmp_path / "var" / "tidings.db").exists()
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "var").stat().st_mode) == 0o700
    first_secrets = secrets_file.read_text()

    again = LiveServer(tmp_path).start()
    try:
        assert again.printed_keys() == []  # a key exists now: nothing new is printed
        response = httpx.get(
            f"{again.base_url}/keys", headers={"Authorization": f"Bearer {keys[0]}"}
        )
        assert response.status_code == 200
    finally:
        again.stop()
    assert secrets_file.read_text() == first_secrets


@pytest.fixture(scope="module", params=DATABASE_KINDS)
def live_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    workdir = tmp_path_factory.mktemp(f"live-{request.param}")
    url = None
    with fresh_database(request.param, workdir) as database_url:
        if request.param != "sqlite":
            url = database_url
        server = LiveServer(workdir, url).start()
        try:
            yield server
        finally:
            server.stop()


def test_no_input_makes_the_server_fail(live_server: LiveServer) -> None:
    """Every operation of the OpenAPI schema, fed what the schema allows and what it does not:
    a bounded schemathesis run that fails on any 5xx."""
    headers = {"Authorization": f"Bearer {live_server.printed_keys()[0]}"}
    schema = schemathesis.openapi.from_url(f"{live_server.base_url}/openapi.json")
    server_errors: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        strategy = operation.as_strategy(GenerationMode.POSITIVE) | operation.as_strategy(
            GenerationMode.NEGATIVE
        )

        @given(case=strategy)
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def call(case: schemathesis.Case) -> None:
            response = case.call(headers=headers, timeout=30)
            if response.status_code >= 500:
                server_errors.append(
                    f"{case.method} {case.formatted_path} -> {response.status_code}"
                )

        call()
    assert operations >= 15
    assert server_errors == [], "\n".join(server_errors[:20]) + "\n" + live_server.output[-3000:]
