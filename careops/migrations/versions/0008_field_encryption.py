"""Field encryption: wrapped data keys, ciphertext columns, the MRN's blind index

Existing values stay readable in clear until `careops migrate` (which runs after this revision)
or `careops keys rotate` encrypts them and fills the blind index.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 03:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import careops.domain.models

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "field_key",
        sa.Column("id", sa.String(length=16), nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("wrapped", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", careops.domain.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("retired_at", careops.domain.models.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("patient") as batch:
        batch.add_column(sa.Column("mrn_index", sa.String(length=64), nullable=True))
        batch.alter_column("mrn", type_=sa.Text(), existing_type=sa.String(length=64), existing_nullable=True)
        batch.drop_index("ix_patient_mrn")
        batch.create_index("ix_patient_mrn_index", ["organisation_id", "mrn_index"], unique=True)
    with op.batch_alter_table("service_case") as batch:
        batch.alter_column(
            "member_id", type_=sa.Text(), existing_type=sa.String(length=64), existing_nullable=True
        )
    with op.batch_alter_table("intake_item") as batch:
        batch.alter_column(
            "normalised", type_=sa.Text(), existing_type=JSON, existing_nullable=True,
            postgresql_using="normalised::text",
        )  # fmt: skip


def downgrade() -> None:
    with op.batch_alter_table("intake_item") as batch:
        batch.alter_column(
            "normalised", type_=JSON, existing_type=sa.Text(), existing_nullable=True,
            postgresql_using="normalised::jsonb",
        )  # fmt: skip
    with op.batch_alter_table("service_case") as batch:
        batch.alter_column(
            "member_id", type_=sa.String(length=64), existing_type=sa.Text(), existing_nullable=True
        )
    with op.batch_alter_table("patient") as batch:
        batch.drop_index("ix_patient_mrn_index")
        batch.create_index("ix_patient_mrn", ["organisation_id", "mrn"], unique=True)
        batch.alter_column("mrn", type_=sa.String(length=64), existing_type=sa.Text(), existing_nullable=True)
        batch.drop_column("mrn_index")
    op.drop_table("field_key")
