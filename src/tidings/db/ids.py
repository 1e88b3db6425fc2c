"""Primary key type: BIGINT on PostgreSQL, INTEGER (the rowid alias) on SQLite."""

from sqlalchemy import BigInteger, Integer

BigId = BigInteger().with_variant(Integer(), "sqlite")
MAX_ID = 2**63 - 1
