"""An index on the lower-case family name, for finding patients by the start of their name

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 12:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_patient_family_lower", "patient", [sa.text("lower(family_name)")])


def downgrade() -> None:
    op.drop_index("ix_patient_family_lower", table_name="patient")
