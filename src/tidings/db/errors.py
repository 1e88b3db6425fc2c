"""Telling which constraint an IntegrityError broke, on both databases."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession


def violates_unique(exc: IntegrityError, table: str, *columns: str) -> bool:
    """Whether ``exc`` is the unique constraint on ``table(columns)``, and not, say, a foreign key
    that a concurrent delete broke (which must not be reported as a duplicate)."""
    message = str(exc.orig)
    postgres_name = f"uq_{table}_{'_'.join(columns)}"  # from the naming convention in db.base
    sqlite_text = "UNIQUE constraint failed: " + ", ".join(f"{table}.{c}" for c in columns)
    return postgres_name in message or sqlite_text in message


async def flush_unique(
    session: AsyncSession, duplicate: Exception, table: str, *columns: str, commit: bool = False
) -> None:
    """Flush (or commit); if the unique constraint on ``table(columns)`` refuses the change, roll
    back and raise ``duplicate``. The constraint decides, so concurrent writers cannot both win."""
    try:
        await (session.commit() if commit else session.flush())
    except IntegrityError as exc:
        await session.rollback()
        if violates_unique(exc, table, *columns):
            raise duplicate from None
        raise
