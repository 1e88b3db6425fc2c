"""Transports that keep mail on this machine: ``maildir`` (the embedded default: each message a
file under ``./var/mail/new/``, readable by any mail client) and ``console`` (printed)."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from tidings.config import ensure_data_dir
from tidings.transports.base import Outcome, OutgoingMessage, SendResult


def write_to_maildir(root: Path, data: bytes, unique: str = "") -> Path:
    """Deliver into a Maildir (tmp/ then an atomic rename into new/), as mail servers do."""
    for part in ("tmp", "new", "cur"):
        ensure_data_dir(root / part)
    name = f"{time.time_ns()}.{os.getpid()}{unique}.{socket.gethostname()}.eml"
    temporary = root / "tmp" / name
    temporary.write_bytes(data)
    final = root / "new" / name
    temporary.rename(final)
    return final


class MaildirTransport:
    name = "maildir"
    needs_parts = False

    def __init__(self, root: Path) -> None:
        self.root = root

    async def send(self, batch: Sequence[OutgoingMessage]) -> list[SendResult]:
        return await asyncio.to_thread(self._write_all, batch)

    def _write_all(self, batch: Sequence[OutgoingMessage]) -> list[SendResult]:
        results = []
        for message in batch:
            try:
                path = write_to_maildir(self.root, message.data, f"_{message.delivery_id}")
            except OSError as exc:  # a full or read-only disk: try again later
                results.append(SendResult(message.delivery_id, Outcome.transient, str(exc)))
            else:
                results.append(SendResult(message.delivery_id, Outcome.accepted, "", path.name))
        return results

    async def close(self) -> None:
        return None


class ConsoleTransport:
    name = "console"
    needs_parts = False

    async def send(self, batch: Sequence[OutgoingMessage]) -> list[SendResult]:
        for message in batch:
            sys.stdout.write(message.data.decode("ascii", "replace").replace("\r\n", "\n") + "\n")
        sys.stdout.flush()
        return [SendResult(m.delivery_id, Outcome.accepted) for m in batch]

    async def close(self) -> None:
        return None
