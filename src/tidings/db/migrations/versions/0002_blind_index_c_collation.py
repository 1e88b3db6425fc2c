"""blind indexes compared bytewise (COLLATE "C") on PostgreSQL

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 10:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BLIND_INDEXES = ("subscribers", "suppressions")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite compares bytes already
    for table in BLIND_INDEXES:
        op.alter_column(
            table,
            "email_hash",
            type_=sa.String(length=64, collation="C"),
            existing_type=sa.String(length=64),
            existing_nullable=False,
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in BLIND_INDEXES:
        op.alter_column(
            table,
            "email_hash",
            type_=sa.String(length=64),
            existing_type=sa.String(length=64, collation="C"),
            existing_nullable=False,
        )
