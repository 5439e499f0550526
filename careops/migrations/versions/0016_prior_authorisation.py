"""Prior authorisations: requested, approved (number, units, validity) or denied, per case

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 14:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import careops.domain.models

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC = careops.domain.models.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "prior_authorisation",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("case_id", sa.String(length=32), nullable=False),
        sa.Column("payer_id", sa.String(length=32), nullable=True),
        sa.Column("service_id", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("requested_units", sa.Integer(), nullable=False),
        sa.Column("approved_units", sa.Integer(), nullable=True),
        sa.Column("number", sa.String(length=64), nullable=True),
        sa.Column("valid_from", sa.Date(), nullable=True),
        sa.Column("valid_to", sa.Date(), nullable=True),
        sa.Column("decided_by", sa.String(length=100), nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("updated_at", UTC, nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["service_case.id"]),
        sa.ForeignKeyConstraint(["payer_id"], ["payer.id"]),
        sa.ForeignKeyConstraint(["service_id"], ["service.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_prior_authorisation_case_id", "prior_authorisation", ["case_id"])


def downgrade() -> None:
    op.drop_index("ix_prior_authorisation_case_id", table_name="prior_authorisation")
    op.drop_table("prior_authorisation")
