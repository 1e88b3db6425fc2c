"""The SMTP transport: a pool of persistent ``SmtpConnection`` sessions (transports.smtp_session)
behind the ``Transport`` interface, sending a batch over all of them at once."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Iterator, Sequence

from tidings.logs import get_logger
from tidings.transports.base import OutgoingMessage, SendResult
from tidings.transports.smtp_session import (
    SmtpConfig,
    SmtpConnection,
    SmtpError,
)

__all__ = ["SmtpConfig", "SmtpTransport"]

log = get_logger("tidings.transports.smtp")
# A connection idle this long is checked with NOOP before use: servers close idle sessions
# (Postfix after 300 s, many providers sooner), and the first message must not pay for that.
_IDLE_PROBE_AFTER = 1.0
_BACKOFF_FIRST = 0.1  # seconds before reconnecting after a failed connect, doubling
_BACKOFF_MAX = 2.0  # ...up to this: a dead server is not hammered, a batch never stalls long


async def _still_usable(connection: SmtpConnection) -> bool:
    """Used a moment ago, or idle for a while and still answering NOOP."""
    if time.monotonic() - connection.idle_since < _IDLE_PROBE_AFTER:
        return True
    return await connection.is_alive()


class _PoolSlot:
    """A place in the pool: at most one open connection, opened when first needed and reopened
    after a break, with a backoff after a failed connect so that a dead server is not hammered."""

    def __init__(self, config: SmtpConfig, ssl_context: ssl.SSLContext | None) -> None:
        self._config = config
        self._ssl_context = ssl_context
        self._connection: SmtpConnection | None = None
        self._failures = 0
        self._retry_at = 0.0

    async def connection(self) -> SmtpConnection:
        """An open connection with room for another message; raises ``SmtpError``."""
        current = self._connection
        if current is not None and current.is_open:
            if current.transactions >= self._config.max_messages_per_connection:
                await current.quit()
            elif await _still_usable(current):
                return current
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, self._retry_at - loop.time()))
        fresh = SmtpConnection(self._config, self._ssl_context)
        try:
            await fresh.open()
        except SmtpError as error:
            self._failures += 1
            backoff = min(_BACKOFF_MAX, _BACKOFF_FIRST * 2 ** (self._failures - 1))
            self._retry_at = loop.time() + backoff
            log.warning("smtp.connect_failed", host=self._config.host, error=error.detail)
            raise
        self._failures = 0
        self._connection = fresh
        return fresh

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.quit()
            self._connection = None


class SmtpTransport:
    """Sends batches over a pool of persistent SMTP connections, concurrently.

    Each connection's task takes the next message of the batch until none is left, so a slow
    connection takes fewer. A connection that cannot be opened answers for the message it took
    and leaves the rest to the others; if none can be opened, every message left gets that error.
    Two batches may be in flight at once: a connection serves one of them at a time.
    """

    name = "smtp"
    needs_parts = False

    def __init__(self, config: SmtpConfig) -> None:
        self._config = config
        ssl_context = None
        if config.security != "none":
            ssl_context = config.ssl_context or ssl.create_default_context()
        self._idle: asyncio.Queue[_PoolSlot] = asyncio.Queue()
        for _ in range(config.connections):
            self._idle.put_nowait(_PoolSlot(config, ssl_context))
        self._closed = False

    async def send(self, batch: Sequence[OutgoingMessage]) -> list[SendResult]:
        if self._closed:
            raise RuntimeError("this SmtpTransport is closed")
        results: list[SendResult | None] = [None] * len(batch)
        failures: list[SmtpError] = []
        indexes = iter(range(len(batch)))  # shared: each task takes the next message
        async with asyncio.TaskGroup() as tasks:
            for _ in range(min(len(batch), self._config.connections)):
                tasks.create_task(self._send_some(batch, indexes, results, failures))
        return [
            result if result is not None else _not_attempted(message, failures[-1])
            for message, result in zip(batch, results, strict=True)
        ]

    async def close(self) -> None:
        """QUIT every connection, after the batches in flight are done."""
        if self._closed:
            return
        self._closed = True
        slots = [await self._idle.get() for _ in range(self._config.connections)]
        await asyncio.gather(*(slot.close() for slot in slots))

    async def _send_some(
        self,
        batch: Sequence[OutgoingMessage],
        indexes: Iterator[int],
        results: list[SendResult | None],
        failures: list[SmtpError],
    ) -> None:
        """On one pooled connection, send messages of the batch until none is left, or until
        the connection cannot be (re)opened."""
        slot = await self._idle.get()
        try:
            for index in indexes:
                message = batch[index]
                try:
                    connection = await slot.connection()
                except SmtpError as error:
                    results[index] = SendResult(message.delivery_id, error.outcome, error.detail)
                    failures.append(error)
                    return
                results[index] = await connection.send(message)
        finally:
            self._idle.put_nowait(slot)


def _not_attempted(message: OutgoingMessage, error: SmtpError) -> SendResult:
    detail = f"not attempted: no SMTP connection could be opened: {error.detail}"
    return SendResult(message.delivery_id, error.outcome, detail)
