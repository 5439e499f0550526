"""Intake items record who sent them (HL7 sending application and facility, email sender, ...)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 00:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("intake_item", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sender", sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("intake_item", schema=None) as batch_op:
        batch_op.drop_column("sender")
