"""the audit chain: business events get their place in a hash chain; signed checkpoints

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 06:35:00

Business events and security actions are one log. Each event is written unsealed (``seq`` null)
and sealed by the worker afterwards; existing events are sealed on the worker's first round.
The unused ``audit_entry`` table of 0001 goes. On PostgreSQL event payloads become ``json`` (kept as
written, canonical) instead of ``jsonb`` (re-spelt by the server), so that verifying the chain needs
no JSON parsing.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import careops.domain.models

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UNSEALED = sa.text("seq IS NULL")
_SEALED = sa.text("seq IS NOT NULL")
_HAS_CASE = sa.text("case_id IS NOT NULL")
_NO_MRN = sa.text("mrn IS NULL")


def upgrade() -> None:
    with op.batch_alter_table("business_event", schema=None) as batch_op:
        batch_op.add_column(sa.Column("seq", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("prev_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("hash", sa.String(length=64), nullable=True))
        batch_op.create_index(
            "ux_event_seq", ["seq"], unique=True, postgresql_where=_SEALED, sqlite_where=_SEALED
        )
        batch_op.create_index(
            "ix_event_unsealed", ["id"], unique=False, postgresql_where=_UNSEALED, sqlite_where=_UNSEALED
        )
    op.create_table(
        "audit_checkpoint",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("signature", sa.String(length=64), nullable=False),
        sa.Column("created_at", careops.domain.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    op.drop_table("audit_entry")
    # Index entries that nothing reads: events about no case, name matches for patients with an MRN.
    with op.batch_alter_table("business_event", schema=None) as batch_op:
        batch_op.drop_index("ix_event_case")
        batch_op.create_index(
            "ix_event_case",
            ["case_id", "id"],
            unique=False,
            postgresql_where=_HAS_CASE,
            sqlite_where=_HAS_CASE,
        )
    with op.batch_alter_table("patient", schema=None) as batch_op:
        batch_op.drop_index("ix_patient_name_birth")
        batch_op.create_index(
            "ix_patient_name_birth",
            ["organisation_id", "family_name", "birth_date"],
            unique=False,
            postgresql_where=_NO_MRN,
            sqlite_where=_NO_MRN,
        )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE business_event ALTER COLUMN payload TYPE json USING payload::json")


def downgrade() -> None:
    with op.batch_alter_table("patient", schema=None) as batch_op:
        batch_op.drop_index("ix_patient_name_birth")
        batch_op.create_index("ix_patient_name_birth", ["organisation_id", "family_name", "birth_date"])
    with op.batch_alter_table("business_event", schema=None) as batch_op:
        batch_op.drop_index("ix_event_case")
        batch_op.create_index("ix_event_case", ["case_id", "id"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE business_event ALTER COLUMN payload TYPE jsonb USING payload::jsonb")
    op.create_table(
        "audit_entry",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("occurred_at", careops.domain.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.String(length=100), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.drop_table("audit_checkpoint")
    with op.batch_alter_table("business_event", schema=None) as batch_op:
        batch_op.drop_index("ix_event_unsealed")
        batch_op.drop_index("ux_event_seq")
        batch_op.drop_column("hash")
        batch_op.drop_column("prev_hash")
        batch_op.drop_column("seq")
