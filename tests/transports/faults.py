"""A scriptable SMTP server for tests: it answers each recipient as a rule says (accept, 421,
451, 550, never answer, drop the connection after the data), and records what it received.
It can also refuse at the greeting, answer AUTH as told, and close idle sessions.

With PIPELINING advertised it holds its replies until the group ends (at DATA, as RFC 2920
allows), so a client that waits for each reply before the next command hangs against it.
Without PIPELINING it notes every command that arrived before the previous reply was sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from types import TracebackType
from typing import Literal, Self

Behaviour = Literal["accept", "421", "451", "550", "hang", "drop-after-data"]

REPLIES = {
    "451": "451-4.3.0 <{0}>: Temporary lookup failure\r\n451 4.3.0 Try again later",
    "550": "550 5.1.1 <{0}>: Recipient address rejected: User unknown",
    "421": "421 4.7.0 fault.test Service not available, closing transmission channel",
}
# Commands after which a pipelining server must answer everything it holds (RFC 2920 3.1).
_GROUP_ENDS = {"EHLO", "HELO", "DATA", "QUIT", "NOOP", "STARTTLS", "AUTH"}


class _Wire:
    """The server's side of the stream, with its own buffer so it can see what is waiting."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader
        self._buffer = bytearray()

    @property
    def has_more(self) -> bool:
        return bool(self._buffer)

    async def line(self) -> bytes | None:
        return await self._take_until(b"\r\n")

    async def message_data(self) -> bytes | None:
        """The data up to the lone dot, with the dot-stuffing undone; None if the client left."""
        if not await self._fill_to(3):
            return None
        if self._buffer[:3] == b".\r\n":
            del self._buffer[:3]
            return b""
        raw = await self._take_until(b"\r\n.\r\n")
        if raw is None:
            return None
        data = raw + b"\r\n"
        return (data[1:] if data[:1] == b"." else data).replace(b"\r\n..", b"\r\n.")

    async def wait_for_close(self) -> None:
        while await self._reader.read(65536):
            pass

    async def _take_until(self, marker: bytes) -> bytes | None:
        while (end := self._buffer.find(marker)) < 0:
            if not await self._read_more():
                return None
        taken = bytes(self._buffer[:end])
        del self._buffer[: end + len(marker)]
        return taken

    async def _fill_to(self, size: int) -> bool:
        while len(self._buffer) < size:
            if not await self._read_more():
                return False
        return True

    async def _read_more(self) -> bool:
        chunk = await self._reader.read(65536)
        self._buffer += chunk
        return bool(chunk)


class FaultSmtpServer:
    """``async with FaultSmtpServer({"x@example.org": "550"}) as server:`` then send to
    ``server.host``, ``server.port``. Recipients without a rule are accepted."""

    host = "127.0.0.1"

    def __init__(
        self,
        rules: Mapping[str, Behaviour] | None = None,
        *,
        pipelining: bool = True,
        greeting: str = "220-fault.test ESMTP\r\n220 ready",
        idle_timeout: float | None = None,
        auth: str | None = None,
    ) -> None:
        self.rules = dict(rules or {})
        self.pipelining = pipelining
        self.greeting = greeting
        self.idle_timeout = idle_timeout  # then "421 timeout exceeded" and close, as Postfix
        # Offer AUTH PLAIN LOGIN and answer it so; "{0}" is what the client sent after AUTH.
        self.auth = auth
        self.received: dict[str, list[bytes]] = {}  # recipient -> each message's data
        self.connections = 0
        self.groups: list[list[str]] = []  # the commands answered together, in order
        self.lockstep_violations = 0  # commands sent ahead of a reply without PIPELINING
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._queued = 0

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the server first"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._session, self.host, 0)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            await self._server.wait_closed()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            writer.write(self.greeting.encode() + b"\r\n")
            await _Conversation(self, _Wire(reader), writer).run()
        except ConnectionError:
            pass  # the client went away: nothing left to answer
        finally:
            self._writers.discard(writer)
            writer.close()  # after what is written: a 221 or 421 reaches the client

    def record(self, recipient: str, data: bytes) -> str:
        """Keep an accepted message; its queue id."""
        self.received.setdefault(recipient, []).append(data)
        self._queued += 1
        return f"Q{self._queued:05d}"


class _Conversation:
    """One session's state: the transaction's recipient and the replies held back."""

    def __init__(self, server: FaultSmtpServer, wire: _Wire, writer: asyncio.StreamWriter) -> None:
        self._server = server
        self._wire = wire
        self._writer = writer
        self._held: list[str] = []
        self._group: list[str] = []
        self._recipient: str | None = None

    async def run(self) -> None:
        while (line := await self._next_line()) is not None:
            verb, _, argument = line.decode().partition(" ")
            verb = verb.upper()
            if not self._server.pipelining and self._wire.has_more:
                self._server.lockstep_violations += 1
            if not await self._answer(verb, argument):
                return

    async def _next_line(self) -> bytes | None:
        try:
            async with asyncio.timeout(self._server.idle_timeout):
                return await self._wire.line()
        except TimeoutError:
            self._group.append("(idle)")
            self._reply("421 4.4.2 fault.test Error: timeout exceeded")
            return None

    async def _answer(self, verb: str, argument: str) -> bool:
        """Reply to one command; False when the session is over."""
        self._group.append(verb)
        if verb in {"EHLO", "HELO"}:
            return self._reply(self._capabilities() if verb == "EHLO" else "250 fault.test")
        if verb in {"MAIL", "RSET"}:
            self._recipient = None
            return self._reply("250 2.0.0 Ok")
        if verb == "RCPT":
            return await self._rcpt(argument.partition("<")[2].partition(">")[0])
        if verb == "DATA":
            return await self._data()
        if verb == "AUTH" and self._server.auth is not None:
            return self._reply(self._server.auth.format(argument))
        if verb == "QUIT":
            self._reply("221 2.0.0 Bye")
            return False
        return self._reply("502 5.5.2 Error: command not recognized")

    def _capabilities(self) -> str:
        lines = ["fault.test", "SIZE 10240000", "8BITMIME", "ENHANCEDSTATUSCODES"]
        if self._server.pipelining:
            lines.insert(1, "PIPELINING")
        if self._server.auth is not None:
            lines.insert(1, "AUTH PLAIN LOGIN")
        return "\r\n".join(f"250-{line}" for line in lines[:-1]) + f"\r\n250 {lines[-1]}"

    async def _rcpt(self, address: str) -> bool:
        behaviour = self._server.rules.get(address, "accept")
        if behaviour == "hang":
            await self._wire.wait_for_close()
            return False
        if behaviour in REPLIES:
            self._reply(REPLIES[behaviour].format(address))
            return behaviour != "421"
        self._recipient = address
        return self._reply("250 2.1.5 Ok")

    async def _data(self) -> bool:
        recipient = self._recipient
        if recipient is None:
            return self._reply("554 5.5.1 Error: no valid recipients")
        self._reply("354 End data with <CR><LF>.<CR><LF>")
        data = await self._wire.message_data()
        if data is None or self._server.rules.get(recipient) == "drop-after-data":
            return False
        self._recipient = None
        queue_id = self._server.record(recipient, data)
        return self._reply(f"250 2.0.0 Ok: queued as {queue_id}", group_end=True)

    def _reply(self, text: str, *, group_end: bool = False) -> bool:
        """Hold the reply while a pipelined group goes on; send what is held when it ends."""
        self._held.append(text)
        verb = self._group[-1] if self._group else ""
        ends = group_end or verb in _GROUP_ENDS or text.startswith("421")
        if self._server.pipelining and not ends:
            return True
        self._writer.write("".join(f"{reply}\r\n" for reply in self._held).encode())
        if self._group:
            self._server.groups.append(self._group)
        self._held, self._group = [], []
        return True
