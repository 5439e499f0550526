"""Deliveries to outbound connectors and each connector's circuit breaker

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-08 00:02:54
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import careops.domain.models

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC = careops.domain.models.UTCDateTime(timezone=True)
PENDING = sa.text("status = 'pending'")


def upgrade() -> None:
    op.create_table(
        "connector_breaker",
        sa.Column("connector", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("open_until", UTC, nullable=True),
        sa.Column("updated_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("connector"),
    )
    op.create_table(
        "delivery",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("connector", sa.String(length=64), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("case_id", sa.String(length=32), nullable=True),
        sa.Column("location_id", sa.String(length=32), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTC, nullable=False),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("delivered_at", UTC, nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("delivery", schema=None) as batch_op:
        batch_op.create_index(
            "ix_delivery_connector_status", ["connector", "status", "created_at"], unique=False
        )
        batch_op.create_index(
            "ix_delivery_due",
            ["next_attempt_at"],
            unique=False,
            postgresql_where=PENDING,
            sqlite_where=PENDING,
        )
        batch_op.create_index("ux_delivery_event_connector", ["event_id", "connector"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("delivery", schema=None) as batch_op:
        batch_op.drop_index("ux_delivery_event_connector")
        batch_op.drop_index("ix_delivery_due", postgresql_where=PENDING, sqlite_where=PENDING)
        batch_op.drop_index("ix_delivery_connector_status")

    op.drop_table("delivery")
    op.drop_table("connector_breaker")
