"""`tidings providers list` and `tidings providers test NAME --to ADDRESS`: one real message
through the provider (a real aiosmtpd server for an smtp provider)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.delivery.support import SmtpServer
from tests.fakes.sendgrid import FakeSendGrid
from tidings.cli import app
from tidings.config import Settings
from tidings.db.engine import create_database
from tidings.providers.schemas import ProviderCreate
from tidings.providers.service import create_provider
from tidings.runtime import Runtime

runner = CliRunner()


async def _add(config: Settings, **fields: object) -> None:
    database = create_database(config)
    try:
        async with database.sessions() as session:
            await create_provider(session, ProviderCreate(**fields), "test")  # type: ignore[arg-type]
    finally:
        await database.dispose()


@pytest.fixture
def add_provider(cli_env: Runtime, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("COLUMNS", "200")
    return lambda **fields: asyncio.run(_add(cli_env.settings, **fields))


def test_list_shows_providers_without_their_secrets(add_provider) -> None:  # type: ignore[no-untyped-def]
    add_provider(
        name="sg", kind="sendgrid", credentials={"api_key": "SG.very-secret-key"}, per_second=50
    )
    listed = runner.invoke(app, ["providers", "list"])
    assert listed.exit_code == 0, listed.output
    assert "sg" in listed.output and "50/second" in listed.output
    assert "very-secret" not in listed.output


def test_a_test_message_goes_through_an_smtp_provider(add_provider) -> None:  # type: ignore[no-untyped-def]
    with SmtpServer() as server:
        add_provider(
            name="relay", kind="smtp",
            settings={"host": "127.0.0.1", "port": server.port, "security": "none"},
        )  # fmt: skip
        sent = runner.invoke(app, ["providers", "test", "relay", "--to", "ann@example.org"])
        assert sent.exit_code == 0, sent.output
        assert "accepted" in sent.output
        [(recipient, message)] = server.inbox.parsed()
    assert recipient == "ann@example.org" and "via relay" in str(message["Subject"])


def test_a_maildir_provider_writes_the_file(add_provider, cli_env: Runtime) -> None:  # type: ignore[no-untyped-def]
    add_provider(name="local", kind="maildir")
    sent = runner.invoke(app, ["providers", "test", "local", "--to", "ann@example.org"])
    assert sent.exit_code == 0, sent.output
    assert list((Path(cli_env.settings.data_dir) / "mail" / "new").glob("*.eml"))


def test_a_test_message_goes_through_an_api_provider(add_provider, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("TIDINGS_MAIL_FROM", "News <news@example.com>")
    with FakeSendGrid() as fake:
        add_provider(
            name="sg", kind="sendgrid", settings={"base_url": fake.url},
            credentials={"api_key": fake.api_key},
        )  # fmt: skip
        sent = runner.invoke(app, ["providers", "test", "sg", "--to", "ann@example.org"])
        assert sent.exit_code == 0, sent.output
        assert "accepted" in sent.output
        assert fake.recipients() == ["ann@example.org"]


def test_failures_are_one_red_line(add_provider, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("TIDINGS_MAIL_FROM", "News <news@example.com>")
    with FakeSendGrid() as fake:
        add_provider(
            name="sg", kind="sendgrid", settings={"base_url": fake.url},
            credentials={"api_key": "SG.very-secret-key"},
        )  # fmt: skip
        for args, message in [
            (["providers", "test", "nope", "--to", "a@example.org"], "no provider 'nope'"),
            (["providers", "test", "sg", "--to", "a@example.org"], "permanent: 401"),
            (["providers", "test", "sg", "--to", "not an address"], "--to"),
        ]:
            result = runner.invoke(app, args)
            assert result.exit_code == 1, result.output
            assert message in result.output and "Traceback" not in result.output
            assert "very-secret" not in result.output
