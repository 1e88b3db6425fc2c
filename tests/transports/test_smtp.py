"""The SMTP transport against real servers in the test's own event loop: aiosmtpd (plain,
STARTTLS, implicit TLS, AUTH) and the scriptable fault server of faults.py. aiosmtpd does not
offer PIPELINING, so it checks the one-command-at-a-time path; the fault server checks the other."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
import ssl
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.transports.faults import Behaviour, FaultSmtpServer
from tidings.transports import smtp
from tidings.transports.base import Outcome, OutgoingMessage, SendResult
from tidings.transports.smtp import SmtpConfig, SmtpTransport

PASSWORD = "correct horse battery staple"
SENDER = "bounces@example.com"


class Recorder:
    """An aiosmtpd handler that keeps every message as received, and the client's port."""

    def __init__(self) -> None:
        self.received: dict[str, list[bytes]] = {}
        self.clients: set[str] = set()  # the client's address and port: one per connection

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert session.peer is not None and envelope.original_content is not None
        self.clients.add(str(session.peer))
        for recipient in envelope.rcpt_tos:
            self.received.setdefault(recipient, []).append(envelope.original_content)
        return "250 Message accepted for delivery"


def check_password(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
) -> AuthResult:
    good = isinstance(data, LoginPassword) and data == (b"news", PASSWORD.encode())
    return AuthResult(success=good, handled=False)


@dataclass(frozen=True)
class Certificate:
    server_context: ssl.SSLContext
    client_context: ssl.SSLContext  # trusts the certificate


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """A self-signed certificate for localhost and 127.0.0.1, made for this run."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    directory = tmp_path_factory.mktemp("tls")
    (directory / "cert.pem").write_bytes(pem)
    (directory / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(Path(directory / "cert.pem"), Path(directory / "key.pem"))
    return Certificate(server_context, ssl.create_default_context(cadata=pem.decode()))


@asynccontextmanager
async def smtpd(
    handler: Recorder, *, tls: ssl.SSLContext | None = None, **options: Any
) -> AsyncIterator[int]:
    """aiosmtpd on a free port of 127.0.0.1, in this event loop; yields the port. ``tls``
    makes it implicit TLS; options go to aiosmtpd's SMTP (tls_context= offers STARTTLS)."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(handler, **options), "127.0.0.1", 0, ssl=tls)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def config(port: int, **fields: Any) -> SmtpConfig:
    """A client of the local test server; a hang fails the test in seconds, not minutes."""
    fields.setdefault("timeout", 5.0)
    return SmtpConfig(host="127.0.0.1", port=port, helo_name="sender.test", **fields)


def message(i: int, recipient: str | None = None, body: bytes | None = None) -> OutgoingMessage:
    to = recipient or f"reader{i}@example.org"
    text = body if body is not None else f"Hello reader {i}.\r\n".encode()
    data = f"From: {SENDER}\r\nTo: {to}\r\nSubject: news {i}\r\n\r\n".encode() + text
    return OutgoingMessage(delivery_id=i, sender=SENDER, recipient=to, data=data)


async def send_once(smtp: SmtpConfig, batch: Sequence[OutgoingMessage]) -> list[SendResult]:
    transport = SmtpTransport(smtp)
    try:
        return await transport.send(batch)
    finally:
        await transport.close()


def with_final_line_break(data: bytes) -> bytes:
    """What arrives of a message: the client ends unterminated data with a line break."""
    return data if data.endswith(b"\r\n") else data + b"\r\n"


def outcomes(results: Sequence[SendResult]) -> list[Outcome]:
    return [r.outcome for r in results]


DOTTED_BODIES = [
    b".starts with a dot\r\n..two dots\r\n...three\r\n.\r\nlast line\r\n",
    b"no dots at all, and no final line break",
    b"a line\r\n.\r\n",  # a lone dot that must not end the data early
    b"",
]


async def test_a_batch_of_200_arrives_exactly_once_each_byte_identical() -> None:
    batch = [message(i, body=DOTTED_BODIES[i % 4] if i % 10 < 4 else None) for i in range(200)]
    batch.append(OutgoingMessage(200, SENDER, "first@example.org", b".first line is a dot\r\n"))
    handler = Recorder()
    async with smtpd(handler) as port:
        results = await send_once(config(port, connections=4), batch)
    assert [r.delivery_id for r in results] == list(range(201))
    assert set(outcomes(results)) == {Outcome.accepted}
    assert results[0].detail == "250 Message accepted for delivery"
    assert handler.received == {m.recipient: [with_final_line_break(m.data)] for m in batch}
    assert len(handler.clients) <= 4


async def test_pipelining_sends_mail_rcpt_data_in_one_group_and_rset_with_the_next() -> None:
    async with FaultSmtpServer({"no@example.org": "550"}, pipelining=True) as server:
        batch = [message(1), message(2, "no@example.org"), message(3)]
        results = await send_once(config(server.port, connections=1), batch)
    assert outcomes(results) == [Outcome.accepted, Outcome.permanent, Outcome.accepted]
    assert [r.provider_message_id for r in results] == ["Q00001", None, "Q00002"]
    assert server.groups == [
        ["EHLO"],
        ["MAIL", "RCPT", "DATA"],
        ["MAIL", "RCPT", "DATA"],
        ["RSET", "MAIL", "RCPT", "DATA"],
        ["QUIT"],
    ]


async def test_without_pipelining_each_command_waits_for_its_reply() -> None:
    async with FaultSmtpServer({"no@example.org": "550"}, pipelining=False) as server:
        batch = [message(1), message(2, "no@example.org"), message(3)]
        results = await send_once(config(server.port, connections=1), batch)
    assert outcomes(results) == [Outcome.accepted, Outcome.permanent, Outcome.accepted]
    assert server.lockstep_violations == 0
    assert ["RSET"] in server.groups
    assert list(server.received) == ["reader1@example.org", "reader3@example.org"]


async def test_each_fault_is_classified_and_the_pool_reconnects_after_421() -> None:
    rules: dict[str, Behaviour] = {
        "closing@example.org": "421",
        "later@example.org": "451",
        "unknown@example.org": "550",
    }
    async with FaultSmtpServer(rules) as server:
        batch = [message(0)] + [message(i, r) for i, r in enumerate(rules, 1)] + [message(4)]
        results = await send_once(config(server.port, connections=1), batch)
    accepted, closing, later, unknown, after = results
    assert outcomes(results) == [
        Outcome.accepted,
        Outcome.transient,
        Outcome.transient,
        Outcome.permanent,
        Outcome.accepted,
    ]
    assert closing.detail.startswith("421 4.7.0 fault.test Service not available")
    assert later.detail == (
        "451 4.3.0 <later@example.org>: Temporary lookup failure 4.3.0 Try again later"
    )
    assert later.status_code == "4.3.0"
    assert (
        unknown.detail
        == "550 5.1.1 <unknown@example.org>: Recipient address rejected: User unknown"
    )
    assert unknown.status_code == "5.1.1"
    assert accepted.provider_message_id == "Q00001" and after.provider_message_id == "Q00002"
    assert server.connections == 2
    assert set(server.received) == {"reader0@example.org", "reader4@example.org"}


async def test_a_server_that_never_answers_times_out_as_transient() -> None:
    async with FaultSmtpServer({"silent@example.org": "hang"}) as server:
        batch = [message(1, "silent@example.org"), message(2)]
        results = await send_once(config(server.port, connections=1, timeout=0.3), batch)
    assert outcomes(results) == [Outcome.transient, Outcome.accepted]
    assert results[0].detail.startswith("timed out after 0.3 s sending the envelope")
    assert server.connections == 2


async def test_a_connection_lost_after_the_data_leaves_the_outcome_unknown() -> None:
    async with FaultSmtpServer({"lost@example.org": "drop-after-data"}) as server:
        results = await send_once(config(server.port), [message(1, "lost@example.org")])
    assert outcomes(results) == [Outcome.transient]
    assert "connection closed by the server after the message data was sent" in results[0].detail
    assert "its outcome is unknown (a retry may deliver twice)" in results[0].detail


async def test_nothing_listening_makes_every_message_transient() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # free again once closed: nothing listens there
    results = await send_once(config(port, connections=2), [message(i) for i in range(5)])
    assert outcomes(results) == [Outcome.transient] * 5
    assert all(f"connection refused by 127.0.0.1:{port}" in r.detail for r in results)


async def test_a_refusing_greeting_defers_the_batch_with_the_servers_words() -> None:
    async with FaultSmtpServer(greeting="554 5.3.2 fault.test no service") as server:
        results = await send_once(config(server.port), [message(1), message(2)])
    assert outcomes(results) == [Outcome.transient] * 2
    assert results[0].detail == "554 5.3.2 fault.test no service"
    assert results[1].detail.endswith("554 5.3.2 fault.test no service")


async def test_a_connection_the_server_closed_while_idle_is_replaced_unnoticed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(smtp, "_IDLE_PROBE_AFTER", 0.05)
    async with FaultSmtpServer(idle_timeout=0.1) as server:
        transport = SmtpTransport(config(server.port, connections=1))
        first = await transport.send([message(1)])
        await asyncio.sleep(0.3)  # the server says 421 and hangs up meanwhile
        second = await transport.send([message(2)])
        await transport.close()
    assert outcomes(first + second) == [Outcome.accepted] * 2
    assert server.connections == 2


async def test_reconnecting_to_a_dead_server_backs_off() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    transport = SmtpTransport(config(port, connections=1))
    await transport.send([message(1)])
    started = time.monotonic()
    results = await transport.send([message(2)])
    await transport.close()
    assert outcomes(results) == [Outcome.transient]
    assert time.monotonic() - started >= 0.09  # not at once: the first backoff is 0.1 s


async def test_a_connection_is_replaced_after_max_messages() -> None:
    async with FaultSmtpServer() as server:
        smtp = config(server.port, connections=1, max_messages_per_connection=2)
        results = await send_once(smtp, [message(i) for i in range(5)])
    assert set(outcomes(results)) == {Outcome.accepted}
    assert server.connections == 3
    assert server.groups.count(["QUIT"]) == 3


async def test_two_batches_in_flight_share_the_pool() -> None:
    async with FaultSmtpServer() as server:
        transport = SmtpTransport(config(server.port, connections=3))
        first, second = await asyncio.gather(
            transport.send([message(i) for i in range(40)]),
            transport.send([message(i) for i in range(100, 140)]),
        )
        await transport.close()
    assert [r.delivery_id for r in first + second] == [*range(40), *range(100, 140)]
    assert {r.outcome for r in first + second} == {Outcome.accepted}
    assert server.connections == 3
    assert sum(len(v) for v in server.received.values()) == 80


async def test_starttls_upgrades_then_authenticates(certificate: Certificate) -> None:
    handler = Recorder()
    options: dict[str, Any] = {
        "tls_context": certificate.server_context,
        "require_starttls": True,
    }
    async with smtpd(handler, authenticator=check_password, **options) as port:
        smtp = config(
            port,
            security="starttls",
            ssl_context=certificate.client_context,
            username="news",
            password=PASSWORD,
        )
        results = await send_once(smtp, [message(1), message(2)])
    assert outcomes(results) == [Outcome.accepted] * 2
    assert sorted(handler.received) == ["reader1@example.org", "reader2@example.org"]


async def test_starttls_required_but_not_offered_refuses_to_send() -> None:
    handler = Recorder()
    async with smtpd(handler) as port:
        smtp = config(port, security="starttls", ssl_context=ssl.create_default_context())
        results = await send_once(smtp, [message(1)])
    assert outcomes(results) == [Outcome.transient]
    assert "does not offer STARTTLS" in results[0].detail
    assert handler.received == {}


async def test_implicit_tls(certificate: Certificate) -> None:
    handler = Recorder()
    async with smtpd(handler, tls=certificate.server_context) as port:
        smtp = config(port, security="tls", ssl_context=certificate.client_context)
        results = await send_once(smtp, [message(i) for i in range(10)])
    assert outcomes(results) == [Outcome.accepted] * 10
    assert len(handler.received) == 10


async def test_an_untrusted_certificate_is_a_transient_tls_error(certificate: Certificate) -> None:
    async with smtpd(Recorder(), tls=certificate.server_context) as port:
        smtp = config(port, security="tls", ssl_context=ssl.create_default_context())
        results = await send_once(smtp, [message(1)])
    assert outcomes(results) == [Outcome.transient]
    assert results[0].detail.startswith("TLS certificate not trusted")


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
@pytest.mark.parametrize("excluded", [[], ["PLAIN"]], ids=["plain", "login"])
async def test_auth_with_the_right_password_sends(excluded: list[str]) -> None:
    handler = Recorder()
    options: dict[str, Any] = {"auth_require_tls": False, "auth_exclude_mechanism": excluded}
    async with smtpd(handler, authenticator=check_password, auth_required=True, **options) as port:
        smtp = config(port, username="news", password=PASSWORD)
        results = await send_once(smtp, [message(1)])
    assert outcomes(results) == [Outcome.accepted]


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
async def test_auth_with_a_wrong_password_defers_the_batch_and_never_shows_it() -> None:
    wrong = "wrong-Pa55word"
    options: dict[str, Any] = {"auth_require_tls": False, "auth_required": True}
    async with smtpd(Recorder(), authenticator=check_password, **options) as port:
        smtp = config(port, username="news", password=wrong)
        results = await send_once(smtp, [message(1), message(2)])
    assert outcomes(results) == [Outcome.transient] * 2
    assert results[0].detail == "535 5.7.8 Authentication credentials invalid"
    assert all(wrong not in r.detail and wrong not in repr(r) for r in results)
    assert wrong not in repr(smtp)


async def test_a_server_echoing_the_credentials_does_not_get_them_into_the_detail() -> None:
    async with FaultSmtpServer(auth="535 5.7.8 cannot decode {0}") as server:
        smtp = config(server.port, username="news", password=PASSWORD)
        results = await send_once(smtp, [message(1)])
    assert outcomes(results) == [Outcome.transient]
    assert results[0].detail == "535 5.7.8 cannot decode PLAIN [redacted]"


def test_the_config_rejects_nonsense_and_hides_the_password() -> None:
    with pytest.raises(ValueError, match="security must be one of"):
        SmtpConfig(host="mx.example.com", security="ssl")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="username and password go together"):
        SmtpConfig(host="mx.example.com", username="news")
    assert PASSWORD not in repr(SmtpConfig("mx.example.com", username="n", password=PASSWORD))


async def test_an_address_that_could_inject_a_command_is_refused_locally() -> None:
    async with FaultSmtpServer() as server:
        evil = message(1, "a@example.org>\r\nRCPT TO:<b@example.org")
        results = await send_once(config(server.port), [evil, message(2)])
    assert outcomes(results) == [Outcome.permanent, Outcome.accepted]
    assert "control character" in results[0].detail
    assert list(server.received) == ["reader2@example.org"]
