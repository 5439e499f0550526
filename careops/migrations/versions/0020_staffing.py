"""Staffing: staff's other locations and contracted hours, shifts, home-care service plans (their
visits are appointments carrying the plan's id) and staffing conflicts

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07 18:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import careops.domain.models

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
UTC = careops.domain.models.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.add_column("resource", sa.Column("also_at", JSON, nullable=False, server_default="[]"))
    op.add_column("resource", sa.Column("weekly_hours", sa.Integer(), nullable=True))
    # Candidate search finds a location's staff by these (a GIN index on PostgreSQL: containment).
    op.create_index("ix_resource_location", "resource", ["location"])
    op.create_index("ix_resource_also_at", "resource", ["also_at"], postgresql_using="gin")
    op.add_column("appointment", sa.Column("plan_id", sa.String(length=32), nullable=True))
    op.create_index("ix_appointment_plan_id", "appointment", ["plan_id"])
    op.create_table(
        "shift",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("resource_id", sa.String(length=32), nullable=False),
        sa.Column("location_id", sa.String(length=32), nullable=False),
        sa.Column("starts_at", UTC, nullable=False),
        sa.Column("ends_at", UTC, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.ForeignKeyConstraint(["location_id"], ["location.id"]),
        sa.ForeignKeyConstraint(["resource_id"], ["resource.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_shift_resource_start", "shift", ["resource_id", "starts_at"])
    op.create_table(
        "service_plan",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("case_id", sa.String(length=32), nullable=False),
        sa.Column("location_id", sa.String(length=32), nullable=False),
        sa.Column("service_id", sa.String(length=32), nullable=False),
        sa.Column("zone", sa.String(length=64), nullable=False),
        sa.Column("pattern", JSON, nullable=False),
        sa.Column("first_day", sa.Date(), nullable=False),
        sa.Column("last_day", sa.Date(), nullable=False),
        sa.Column("staff", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["service_case.id"]),
        sa.ForeignKeyConstraint(["location_id"], ["location.id"]),
        sa.ForeignKeyConstraint(["service_id"], ["service.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_service_plan_case_id", "service_plan", ["case_id"])
    op.create_table(
        "staff_conflict",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("resource_id", sa.String(length=32), nullable=False),
        sa.Column("location_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("shift_id", sa.String(length=32), nullable=True),
        sa.Column("appointment_ids", JSON, nullable=False),
        sa.Column("note", sa.String(length=500), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reassigned_to", sa.String(length=64), nullable=True),
        sa.Column("reported_by", sa.String(length=100), nullable=False),
        sa.Column("resolved_by", sa.String(length=100), nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("resolved_at", UTC, nullable=True),
        sa.ForeignKeyConstraint(["location_id"], ["location.id"]),
        sa.ForeignKeyConstraint(["resource_id"], ["resource.id"]),
        sa.ForeignKeyConstraint(["shift_id"], ["shift.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_staff_conflict_location_status", "staff_conflict", ["location_id", "status"])


def downgrade() -> None:
    op.drop_table("staff_conflict")
    op.drop_table("service_plan")
    op.drop_table("shift")
    op.drop_index("ix_appointment_plan_id", table_name="appointment")
    op.drop_index("ix_resource_also_at", table_name="resource")
    op.drop_index("ix_resource_location", table_name="resource")
    # Not batch mode: on SQLite it would copy the tables, which the booking trigger names.
    for table, column in (("appointment", "plan_id"), ("resource", "weekly_hours"), ("resource", "also_at")):
        op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
