"""Scheduling: resources, appointments and the resource bookings that keep a slot single

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 12:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import careops.domain.models

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
UTC = careops.domain.models.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "resource",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("location", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kinds", JSON, nullable=False),
        sa.Column("hours", JSON, nullable=False),
        sa.Column("retired_at", UTC, nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("code"),
    )
    op.create_table(
        "appointment",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("case_id", sa.String(length=32), nullable=False),
        sa.Column("location_id", sa.String(length=32), nullable=False),
        sa.Column("service_id", sa.String(length=32), nullable=False),
        sa.Column("starts_at", UTC, nullable=False),
        sa.Column("ends_at", UTC, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("resource_codes", JSON, nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("updated_at", UTC, nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["service_case.id"]),
        sa.ForeignKeyConstraint(["location_id"], ["location.id"]),
        sa.ForeignKeyConstraint(["service_id"], ["service.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_appointment_case_id", "appointment", ["case_id"])
    op.create_index("ix_appointment_location_start", "appointment", ["location_id", "starts_at"])
    op.create_table(
        "resource_booking",
        sa.Column("resource_id", sa.String(length=32), nullable=False),
        sa.Column("slot_start", UTC, nullable=False),
        sa.Column("appointment_id", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(["appointment_id"], ["appointment.id"]),
        sa.ForeignKeyConstraint(["resource_id"], ["resource.id"]),
        sa.PrimaryKeyConstraint("resource_id", "slot_start"),
    )
    op.create_index("ix_resource_booking_appointment_id", "resource_booking", ["appointment_id"])


def downgrade() -> None:
    op.drop_index("ix_resource_booking_appointment_id", table_name="resource_booking")
    op.drop_table("resource_booking")
    op.drop_index("ix_appointment_location_start", table_name="appointment")
    op.drop_index("ix_appointment_case_id", table_name="appointment")
    op.drop_table("appointment")
    op.drop_table("resource")
