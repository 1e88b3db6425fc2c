"""One SMTP session: a lean client of our own on asyncio streams (``SmtpConnection``), with its
configuration, replies and errors. ``transports.smtp`` pools these behind ``Transport``.

Our own client because aiosmtplib measured about 1,600 msg/s at 20 KB over 16 connections, and
a sending MTA needs little of SMTP: EHLO, STARTTLS or implicit TLS, AUTH PLAIN/LOGIN, PIPELINING
(RFC 2920) and one recipient per transaction (one delivery is one message).
bench/smtp_client.py measures it against postfix's smtp-source.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import ipaddress
import re
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from tidings.logs import get_logger
from tidings.transports.base import Outcome, OutgoingMessage, SendResult

log = get_logger("tidings.transports.smtp")

Security = Literal["none", "starttls", "tls"]
SECURITY_MODES: tuple[Security, ...] = ("none", "starttls", "tls")
CRLF = b"\r\n"
_QUEUED_AS = re.compile(r"queued as ([^\s;,]+)", re.IGNORECASE)
# Anything that could end or extend an SMTP command line inside an envelope address.
_UNSAFE_ADDRESS = re.compile(r"[\x00-\x20<>\x7f]")
_QUIT_TIMEOUT = 5.0  # also bounds the NOOP that checks an idle connection
# The at-least-once trade-off, spelled out in the delivery's log when it applies.
_AFTER_DATA = (
    "after the message data was sent, so its outcome is unknown (a retry may deliver twice)"
)
# What a network or a misbehaving server can do to a session; anything else is a bug and raises.
_NETWORK_ERRORS = (OSError, EOFError, asyncio.LimitOverrunError)


@functools.cache
def _local_name() -> str:
    return socket.getfqdn()


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    """Where and how to hand mail over. The password and the TLS context stay out of repr."""

    host: str
    port: int = 25
    security: Security = "none"  # "tls" is implicit TLS (port 465), "starttls" upgrades (587)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 30.0  # seconds for setting a session up, and for each message
    connections: int = 8  # the pool's size
    helo_name: str = field(default_factory=_local_name)
    max_messages_per_connection: int = 1000  # then QUIT and reconnect
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.security not in SECURITY_MODES:
            raise ValueError(f"security must be one of {SECURITY_MODES}, not {self.security!r}")
        if self.connections < 1 or self.max_messages_per_connection < 1:
            raise ValueError("connections and max_messages_per_connection must be at least 1")
        if self.timeout <= 0:
            raise ValueError(f"timeout must be positive, not {self.timeout}")
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together: set both or neither")
        if not self.helo_name.isascii() or _UNSAFE_ADDRESS.search(self.helo_name):
            raise ValueError(f"helo_name must be an ASCII host name, not {self.helo_name!r}")


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    lines: tuple[str, ...]  # the text of each line, without code and separator

    @property
    def text(self) -> str:
        """The reply as a log line keeps it: "550 5.1.1 <x@y>: Recipient address rejected"."""
        return f"{self.code} {' '.join(self.lines)}".rstrip()


class SmtpError(Exception):
    """A session could not be set up or used. ``detail`` is safe to log: never a password."""

    outcome = Outcome.transient

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class SmtpReplyError(SmtpError):
    """The server refused a session step (greeting, EHLO, STARTTLS, AUTH) with this reply.

    Transient even for a 5xx: a refused session says nothing about the messages (a wrong
    password, a blocked IP), so they wait, with backoff, for the operator's fix instead of a
    whole campaign failing for good."""

    def __init__(self, reply: Reply, detail: str | None = None) -> None:
        super().__init__(detail or reply.text)
        self.reply = reply
        self.outcome = Outcome.transient


class SmtpConfigError(SmtpError):
    """The server lacks what the configuration requires (STARTTLS, an AUTH mechanism). Transient:
    the messages are fine, and the operator's fix of the configuration lets them go."""


def _outcome_of(code: int) -> Outcome:
    if 200 <= code < 300:
        return Outcome.accepted
    return Outcome.permanent if code >= 500 else Outcome.transient


def _result_of(message: OutgoingMessage, reply: Reply) -> SendResult:
    outcome = _outcome_of(reply.code)
    queue_id = None
    if outcome is Outcome.accepted:
        found = _QUEUED_AS.search(reply.lines[-1])
        queue_id = found[1] if found else None
    return SendResult(message.delivery_id, outcome, reply.text, queue_id)


def _parse_reply(raw: list[bytes]) -> Reply:
    last = raw[-1]
    if len(last) < 3 or not last[:3].isdigit():
        raise SmtpError(f"the server sent something that is not an SMTP reply: {last[:80]!r}")
    return Reply(int(last[:3]), tuple(r[4:].strip().decode("utf-8", "replace") for r in raw))


def _parse_capabilities(reply: Reply) -> dict[str, str]:
    """EHLO's lines after the first: keyword (upper case) -> its parameters ("AUTH" -> "PLAIN")."""
    capabilities = {}
    for line in reply.lines[1:]:
        keyword, _, parameters = line.partition(" ")
        capabilities[keyword.upper()] = parameters
    return capabilities


def _dot_stuffed(data: bytes) -> bytes:
    """The DATA payload: a line starting with "." gets another (RFC 5321 4.5.2), and the end
    marker follows. Two C-speed bytes operations, no loop over lines."""
    stuffed = data.replace(b"\r\n.", b"\r\n..")
    if stuffed[:1] == b".":
        stuffed = b"." + stuffed
    return stuffed + (b".\r\n" if stuffed[-2:] == CRLF else b"\r\n.\r\n")


def _redacted(text: str, secrets: Sequence[bytes]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):  # a token may contain another
        if secret:
            text = text.replace(secret.decode("utf-8", "replace"), "[redacted]")
    return text


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class SmtpConnection:
    """One SMTP session. Not for concurrent use: the pool lends it to one task at a time."""

    _reader: asyncio.StreamReader

    def __init__(self, config: SmtpConfig, ssl_context: ssl.SSLContext | None = None) -> None:
        self._config = config
        self._ssl_context = ssl_context
        self._writer: asyncio.StreamWriter | None = None
        self._stage = "connecting"
        self._tls = False
        self._pipelining = False
        self._size_limit = 0  # 0: the server announced none
        self._reset_pending = False
        self.capabilities: dict[str, str] = {}
        self.transactions = 0
        self.idle_since = time.monotonic()

    @property
    def is_open(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    async def open(self) -> None:
        """Connect, then greeting, EHLO, STARTTLS and AUTH as configured; raises ``SmtpError``."""
        try:
            async with asyncio.timeout(self._config.timeout):
                await self._connect()
                await self._greet()
                if self._config.security == "starttls":
                    await self._start_tls()
                if self._config.username is not None:
                    await self._authenticate()
        except _NETWORK_ERRORS as exc:
            self.abort()
            raise SmtpError(self._describe(exc)) from None
        except BaseException:
            self.abort()
            raise
        self._stage = "idle"

    async def send(self, message: OutgoingMessage) -> SendResult:
        """One transaction. Whatever the server or the network does becomes the result."""
        refusal = self._refusal(message)
        if refusal is not None:
            return SendResult(message.delivery_id, Outcome.permanent, refusal)
        self.transactions += 1
        try:
            async with asyncio.timeout(self._config.timeout):
                return await self._transact(message)
        except (*_NETWORK_ERRORS, SmtpError) as exc:
            self.abort()
            return SendResult(message.delivery_id, Outcome.transient, self._describe(exc))
        except BaseException:  # cancelled mid-transaction: the session's state is unknown
            self.abort()
            raise
        finally:
            self.idle_since = time.monotonic()

    async def is_alive(self) -> bool:
        """Whether the server still answers NOOP; if not, the connection is dropped."""
        if not self.is_open or self._reader.at_eof():
            self.abort()
            return False
        try:
            async with asyncio.timeout(min(self._config.timeout, _QUIT_TIMEOUT)):
                reply = await self._command(b"NOOP\r\n")
        except (*_NETWORK_ERRORS, SmtpError):
            reply = None
        if reply is None or reply.code != 250:  # a 421 "timeout exceeded" waiting there, say
            self.abort()
            return False
        return True

    async def quit(self) -> None:
        """Say goodbye; a server that does not answer within a few seconds is just dropped."""
        writer = self._writer
        if writer is None or writer.is_closing():
            return
        try:
            async with asyncio.timeout(min(self._config.timeout, _QUIT_TIMEOUT)):
                await self._command(b"QUIT\r\n")
                writer.close()
                await writer.wait_closed()
        except (*_NETWORK_ERRORS, SmtpError):
            pass  # leaving anyway: a failed goodbye changes nothing for any message
        finally:
            self.abort()

    def abort(self) -> None:
        """Drop the connection at once (no QUIT): after an error its state is unknown."""
        if self._writer is not None:
            self._writer.transport.abort()
            self._writer = None

    async def _connect(self) -> None:
        implicit_tls = self._config.security == "tls"
        self._reader, self._writer = await asyncio.open_connection(
            self._config.host,
            self._config.port,
            ssl=self._ssl_context if implicit_tls else None,
            server_hostname=self._config.host if implicit_tls else None,
        )
        self._tls = implicit_tls

    async def _greet(self) -> None:
        self._stage = "waiting for the greeting"
        reply = await self._read_reply()
        if reply.code != 220:
            raise SmtpReplyError(reply)
        await self._hello()

    async def _hello(self) -> None:
        """EHLO, or HELO for a server that does not know it (then no extension is used)."""
        self._stage = "during EHLO"
        name = self._config.helo_name.encode("ascii")
        reply = await self._command(b"EHLO " + name + CRLF)
        capabilities = _parse_capabilities(reply)
        if 500 <= reply.code < 600:
            reply = await self._command(b"HELO " + name + CRLF)
            capabilities = {}
        if reply.code != 250:
            raise SmtpReplyError(reply)
        self.capabilities = capabilities
        self._pipelining = "PIPELINING" in capabilities
        size = capabilities.get("SIZE", "0")
        self._size_limit = int(size) if size.isdigit() else 0

    async def _start_tls(self) -> None:
        if "STARTTLS" not in self.capabilities:
            raise SmtpConfigError(
                f"{self._where} does not offer STARTTLS and security is 'starttls': "
                "refusing to send in clear text"
            )
        self._stage = "during STARTTLS"
        reply = await self._command(b"STARTTLS\r\n")
        if reply.code != 220:
            raise SmtpReplyError(reply)
        assert self._writer is not None and self._ssl_context is not None
        await self._writer.start_tls(self._ssl_context, server_hostname=self._config.host)
        self._tls = True
        await self._hello()  # RFC 3207: forget what was said in clear text, ask again

    async def _authenticate(self) -> None:
        if not (self._tls or _is_loopback(self._config.host)):
            raise SmtpConfigError(
                f"refusing to send the password to {self._where} without TLS: "
                "set security to 'starttls' or 'tls'"
            )
        self._stage = "during AUTH"
        mechanisms = self.capabilities.get("AUTH", "").upper().split()
        user = (self._config.username or "").encode()
        password = (self._config.password or "").encode()
        plain_token = base64.b64encode(b"\0" + user + b"\0" + password)
        if "PLAIN" in mechanisms:
            reply = await self._command(b"AUTH PLAIN " + plain_token + CRLF)
        elif "LOGIN" in mechanisms:
            reply = await self._command(b"AUTH LOGIN\r\n")
            for secret in (user, password):
                if reply.code == 334:
                    reply = await self._command(base64.b64encode(secret) + CRLF)
        else:
            offered = " ".join(mechanisms) or "none"
            raise SmtpConfigError(
                f"{self._where} offers no AUTH mechanism we speak (PLAIN, LOGIN), only: {offered}"
            )
        if reply.code != 235:  # a server may echo what it could not decode: never show that
            secrets = (password, base64.b64encode(password), plain_token)
            raise SmtpReplyError(reply, _redacted(reply.text, secrets))

    def _refusal(self, message: OutgoingMessage) -> str | None:
        """Why a message cannot go to this server whatever is retried, or None."""
        for address in (message.sender, message.recipient):
            if _UNSAFE_ADDRESS.search(address):
                return f"envelope address {address!r} holds a space, <, > or a control character"
            if not address.isascii():
                return f"envelope address {address!r} is not ASCII; SMTPUTF8 is not supported"
        if self._size_limit and len(message.data) > self._size_limit:
            return (
                f"message of {len(message.data):,} bytes exceeds the server's SIZE limit of "
                f"{self._size_limit:,}"
            )
        return None

    async def _transact(self, message: OutgoingMessage) -> SendResult:
        mail = b"MAIL FROM:<" + message.sender.encode("ascii") + b">\r\n"
        rcpt = b"RCPT TO:<" + message.recipient.encode("ascii") + b">\r\n"
        if self._pipelining:
            refusal = await self._pipelined_envelope(mail, rcpt)
        else:
            refusal = await self._lockstep_envelope(mail, rcpt)
        if refusal is not None:
            return self._refused(message, refusal)
        self._stage = _AFTER_DATA
        assert self._writer is not None
        self._writer.write(_dot_stuffed(message.data))
        await self._writer.drain()
        reply = await self._read_reply()
        self._stage = "idle"
        if reply.code == 421:
            self.abort()
        return _result_of(message, reply)

    async def _pipelined_envelope(self, mail: bytes, rcpt: bytes) -> Reply | None:
        """MAIL, RCPT and DATA in one write (RFC 2920), then their replies in order; the first
        refusal, or None when DATA may start. A refused earlier message's RSET leads the group."""
        self._stage = "sending the envelope (MAIL, RCPT, DATA)"
        assert self._writer is not None
        reset = self._reset_pending
        self._writer.write((b"RSET\r\n" if reset else b"") + mail + rcpt + b"DATA\r\n")
        await self._writer.drain()
        if reset:
            self._check_reset(await self._read_reply())
        refusal: Reply | None = None
        for wanted_class in (2, 2, 3):
            reply = await self._read_reply()
            if reply.code == 421:  # the server is closing: the other replies never come
                return reply
            if refusal is None and reply.code // 100 != wanted_class:
                refusal = reply
        if refusal is not None and reply.code == 354:
            await self._command(b".\r\n")  # DATA was opened without a recipient: end it empty
        return refusal

    async def _lockstep_envelope(self, mail: bytes, rcpt: bytes) -> Reply | None:
        """MAIL, RCPT and DATA one at a time, for a server without PIPELINING."""
        self._stage = "sending the envelope (MAIL, RCPT, DATA)"
        if self._reset_pending:
            self._check_reset(await self._command(b"RSET\r\n"))
        for command in (mail, rcpt):
            reply = await self._command(command)
            if reply.code // 100 != 2:
                return reply
        reply = await self._command(b"DATA\r\n")
        return None if reply.code == 354 else reply

    def _refused(self, message: OutgoingMessage, reply: Reply) -> SendResult:
        """A refused transaction; the RSET that clears it goes with the next message's envelope,
        which saves a round trip. A 421 means the server is closing the connection."""
        if reply.code == 421:
            self.abort()
        else:
            self._reset_pending = True
        self._stage = "idle"
        return _result_of(message, reply)

    def _check_reset(self, reply: Reply) -> None:
        if reply.code // 100 != 2:
            raise SmtpError(f"the server refused RSET: {reply.text}")
        self._reset_pending = False

    async def _command(self, line: bytes) -> Reply:
        assert self._writer is not None
        self._writer.write(line)
        await self._writer.drain()
        return await self._read_reply()

    async def _read_reply(self) -> Reply:
        """One reply, all its lines: "250-first", "250-second", "250 last"."""
        line = await self._reader.readuntil(b"\n")
        raw = [line]
        while line[3:4] == b"-":
            line = await self._reader.readuntil(b"\n")
            raw.append(line)
        return _parse_reply(raw)

    @property
    def _where(self) -> str:
        return f"{self._config.host}:{self._config.port}"

    def _describe(self, error: BaseException) -> str:
        """A readable line for the delivery's log: what happened, when, with whom."""
        where = f"{self._stage} ({self._where})"
        if isinstance(error, SmtpError):
            return f"{error.detail} ({self._where})"
        if isinstance(error, TimeoutError):
            return f"timed out after {self._config.timeout:g} s {where}"
        if isinstance(error, ConnectionRefusedError):
            return f"connection refused by {self._where}"
        if isinstance(error, socket.gaierror):
            return f"cannot resolve {self._config.host}: {error.strerror}"
        if isinstance(error, ssl.SSLCertVerificationError):
            return f"TLS certificate not trusted: {error.verify_message} {where}"
        if isinstance(error, ssl.SSLError):
            return f"TLS error: {error.reason or error} {where}"
        if isinstance(error, EOFError | ConnectionError):
            return f"connection closed by the server {where}"
        if isinstance(error, OSError):
            return f"network error: {error.strerror or error} {where}"
        return f"{type(error).__name__}: {error} {where}"  # a reply line beyond the stream limit
