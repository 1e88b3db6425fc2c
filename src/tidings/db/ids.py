"""Primary key type: BIGINT on PostgreSQL, INTEGER (the rowid alias) on SQLite."""

from typing import TypeVar

from sqlalchemy import BigInteger, Integer, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

T = TypeVar("T")

BigId = BigInteger().with_variant(Integer(), "sqlite")
MAX_ID = 2**63 - 1


async def get_by_id(session: AsyncSession, model: type[T], row_id: int) -> T | None:
    """The row with that primary key, or None. An id outside BIGINT's range simply does not
    exist (PostgreSQL would refuse it as a parameter)."""
    return await session.get(model, row_id) if 0 < row_id <= MAX_ID else None


async def get_by_id_or_name(
    session: AsyncSession, model: type[T], name: InstrumentedAttribute[str], ref: str | int
) -> T | None:
    """The row a reference names: all digits is an id, anything else the value of ``name``."""
    text = str(ref)
    if text.isascii() and text.isdigit():
        return await get_by_id(session, model, int(text))
    found: T | None = await session.scalar(select(model).where(name == text))
    return found
