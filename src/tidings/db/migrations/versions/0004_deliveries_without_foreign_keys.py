"""deliveries without foreign keys

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 12:07:43.510622
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_deliveries_subscriber_id_subscribers"), type_="foreignkey"
        )
        batch_op.drop_constraint(
            batch_op.f("fk_deliveries_run_id_campaign_runs"), type_="foreignkey"
        )


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.create_foreign_key(
            batch_op.f("fk_deliveries_run_id_campaign_runs"),
            "campaign_runs",
            ["run_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_deliveries_subscriber_id_subscribers"),
            "subscribers",
            ["subscriber_id"],
            ["id"],
            ondelete="CASCADE",
        )
