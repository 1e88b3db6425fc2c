"""Re-encrypt every encrypted column under the newest key: batched, resumable, set-based reads.

Rows are found by the key id stored in front of each ciphertext, so a run that is interrupted
simply continues with the rows still under an older key the next time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Table, Text, bindparam, func, or_, select, type_coerce, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tidings.db.registry import all_metadata
from tidings.db.types import EncryptedText
from tidings.security.audit import record_audit
from tidings.security.crypto import PiiCipher


@dataclass(frozen=True)
class EncryptedTable:
    table: Table
    columns: tuple[str, ...]


# Columns whose service encrypts with the PII cipher itself instead of through EncryptedText, by
# table: a DKIM private key is decrypted only where a signer is built (delivery.dkim_keys), never
# whenever a key row is loaded to be listed.
SERVICE_ENCRYPTED_COLUMNS: dict[str, tuple[str, ...]] = {"dkim_keys": ("private_key",)}


def encrypted_tables() -> list[EncryptedTable]:
    """Every table with an EncryptedText column, found from the models themselves, and the
    columns listed in SERVICE_ENCRYPTED_COLUMNS."""
    found = []
    for table in all_metadata().sorted_tables:
        columns = tuple(c.name for c in table.columns if isinstance(c.type, EncryptedText))
        columns += SERVICE_ENCRYPTED_COLUMNS.get(table.name, ())
        if columns:
            found.append(EncryptedTable(table, columns))
    return found


def _stale(spec: EncryptedTable, current_key_id: str) -> ColumnElement[bool]:
    raw = [type_coerce(spec.table.c[name], Text) for name in spec.columns]
    return or_(*[col.is_not(None) & ~col.startswith(f"{current_key_id}:") for col in raw])


def _rotated(cipher: PiiCipher, columns: tuple[str, ...], row: Any) -> dict[str, Any]:
    params: dict[str, Any] = {"row_id": row[0]}
    for name, value in zip(columns, row[1:], strict=True):
        params[f"old_{name}"] = value
        params[f"new_{name}"] = None if value is None else cipher.rotate(value)
    return params


async def count_stale_rows(session: AsyncSession, cipher: PiiCipher) -> int:
    total = 0
    for spec in encrypted_tables():
        query = (
            select(func.count()).select_from(spec.table).where(_stale(spec, cipher.current_key_id))
        )
        total += int(await session.scalar(query) or 0)
    return total


async def rotate_encryption(
    sessions: async_sessionmaker[AsyncSession],
    cipher: PiiCipher,
    *,
    batch_size: int = 500,
    actor: str,
    on_progress: Callable[[int], None] = lambda _n: None,
) -> int:
    """Re-encrypt all stale values; one transaction per batch. Returns the rows rewritten."""
    rewritten = 0
    for spec in encrypted_tables():
        pk = spec.table.c.id
        raw = [type_coerce(spec.table.c[name], Text).label(name) for name in spec.columns]
        stale = _stale(spec, cipher.current_key_id)
        values: dict[str, Any] = {
            name: bindparam(f"new_{name}", type_=Text) for name in spec.columns
        }
        # Re-encrypting is not an edit: set onupdate columns (updated_at) to themselves.
        values |= {c.name: c for c in spec.table.columns if c.onupdate is not None}
        # Write only where the value is still the one read: an edit made meanwhile (already under
        # the newest key) must not be overwritten with the old value.
        unchanged = [
            type_coerce(spec.table.c[name], Text).is_not_distinct_from(
                bindparam(f"old_{name}", type_=Text)
            )
            for name in spec.columns
        ]
        statement = update(spec.table).where(pk == bindparam("row_id"), *unchanged).values(values)
        last_id = 0
        while True:
            async with sessions() as session:
                rows = (
                    await session.execute(
                        select(pk, *raw).where(stale, pk > last_id).order_by(pk).limit(batch_size)
                    )
                ).all()
                if not rows:
                    break
                params = [_rotated(cipher, spec.columns, row) for row in rows]
                await session.execute(statement, params)
                await session.commit()
            last_id = rows[-1][0]
            rewritten += len(rows)
            on_progress(len(rows))
    if rewritten:
        async with sessions() as session:
            record_audit(
                session,
                actor,
                "encryption.rotate",
                "encryption_key",
                cipher.current_key_id,
                {"rows": rewritten},
            )
            await session.commit()
    return rewritten
