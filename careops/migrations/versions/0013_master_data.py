"""Master data governed: retirement, location groups, service details, payer categories, referring
organisations, code mappings per sender and field ownership

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 12:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import careops.domain.models

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
UTC = careops.domain.models.UTCDateTime(timezone=True)
RETIRED = ("location", "service", "payer", "referrer")


def upgrade() -> None:
    for table in RETIRED:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("retired_at", UTC, nullable=True))
    with op.batch_alter_table("location") as batch:
        batch.add_column(sa.Column("groups", JSON, nullable=False, server_default="[]"))
    with op.batch_alter_table("service") as batch:
        batch.add_column(sa.Column("duration_minutes", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("resources", JSON, nullable=False, server_default="[]"))
        for column in ("authorisation", "prices", "materials"):
            batch.add_column(sa.Column(column, JSON, nullable=False, server_default="{}"))
    with op.batch_alter_table("payer") as batch:
        batch.add_column(sa.Column("category", sa.String(length=64), nullable=True))
    with op.batch_alter_table("referrer") as batch:
        batch.add_column(sa.Column("organisation", sa.String(length=200), nullable=True))
    op.create_table(
        "code_mapping",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("sender", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("code", sa.String(length=200), nullable=False),
        sa.Column("target", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("retired_at", UTC, nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ux_code_mapping_live",
        "code_mapping",
        ["sender", "kind", "code"],
        unique=True,
        postgresql_where=sa.text("retired_at IS NULL"),
        sqlite_where=sa.text("retired_at IS NULL"),
    )
    op.create_table(
        "field_owner",
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("field", sa.String(length=64), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("kind", "field"),
    )


def downgrade() -> None:
    op.drop_table("field_owner")
    op.drop_index("ux_code_mapping_live", table_name="code_mapping")
    op.drop_table("code_mapping")
    with op.batch_alter_table("referrer") as batch:
        batch.drop_column("organisation")
    with op.batch_alter_table("payer") as batch:
        batch.drop_column("category")
    with op.batch_alter_table("service") as batch:
        for column in ("materials", "prices", "authorisation", "resources", "duration_minutes"):
            batch.drop_column(column)
    with op.batch_alter_table("location") as batch:
        batch.drop_column("groups")
    for table in RETIRED:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("retired_at")
