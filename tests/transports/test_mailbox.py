"""Transactional mail goes through the configured transport: the maildir by default, SMTP when
configured (a real aiosmtpd server here), and a refusal is reported, not raised."""

from __future__ import annotations

from pathlib import Path

from tests.delivery.support import SmtpServer, free_port
from tidings.config import Settings
from tidings.transports.mailbox import OutgoingMail, send_transactional

MAIL = OutgoingMail(to="ann@example.org", subject="Confirm", text="Click", html="<p>Click</p>")


async def test_the_default_writes_the_message_into_the_maildir(tmp_path: Path) -> None:
    assert await send_transactional(Settings(data_dir=tmp_path), MAIL)
    [written] = (tmp_path / "mail" / "new").iterdir()
    assert b"Subject: Confirm" in written.read_bytes()


async def test_with_smtp_configured_the_message_goes_to_the_smtp_server(tmp_path: Path) -> None:
    with SmtpServer() as server:
        settings = Settings(
            data_dir=tmp_path,
            mail_transport="smtp",
            smtp_port=server.port,
            smtp_host="127.0.0.1",
            smtp_security="none",
            mail_from="News <news@example.com>",
        )
        assert await send_transactional(settings, MAIL)
        [(recipient, message)] = server.inbox.parsed()
    assert recipient == "ann@example.org" and message["Subject"] == "Confirm"
    assert not (tmp_path / "mail").exists()


async def test_an_unreachable_server_is_reported_as_not_sent(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        mail_transport="smtp",
        smtp_host="127.0.0.1",
        smtp_port=free_port(),
        smtp_security="none",
        smtp_timeout=2,
    )
    assert not await send_transactional(settings, MAIL)
