"""KPI roll-ups kept from the sealed event log, and the cursor of the roll-up

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 10:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "kpi_rollup",
        sa.Column("kpi", sa.String(length=64), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("location_id", sa.String(length=32), nullable=False),
        sa.Column("dimension", sa.String(length=100), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("total", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("kpi", "day", "location_id", "dimension"),
    )
    op.create_table(
        "kpi_cursor",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("kpi_cursor")
    op.drop_table("kpi_rollup")
