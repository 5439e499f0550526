"""Automation: workflow template versions, the engine's cursor over the audit chain, rule runs,
timers and waits, scheduled-action ticks and queued messages

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07 21:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import careops.domain.models

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
UTC = careops.domain.models.UTCDateTime(timezone=True)
PENDING = sa.text("status = 'pending'")
WAITING = sa.text("status = 'pending' AND awaits IS NOT NULL")


def upgrade() -> None:
    op.create_table(
        "workflow_version",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("version", sa.String(length=32), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("owner", sa.String(length=100), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("activated_by", sa.String(length=100), nullable=True),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.Column("activated_at", UTC, nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ux_workflow_version_hash", "workflow_version", ["name", "content_hash"], unique=True)
    op.create_index(
        "ux_workflow_active",
        "workflow_version",
        ["name"],
        unique=True,
        postgresql_where=sa.text("active"),
        sqlite_where=sa.text("active"),
    )
    op.create_table(
        "automation_cursor",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "automation_run",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("run_key", sa.String(length=200), nullable=False),
        sa.Column("workflow", sa.String(length=100), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("rule", sa.String(length=100), nullable=False),
        sa.Column("step", sa.String(length=100), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("trigger", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=True),
        sa.Column("subject_type", sa.String(length=32), nullable=True),
        sa.Column("subject_id", sa.String(length=32), nullable=True),
        sa.Column("location_id", sa.String(length=32), nullable=True),
        sa.Column("depth", sa.Integer(), nullable=False),
        sa.Column("cause_run_id", sa.String(length=32), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("detail", JSON, nullable=False),
        sa.Column("started_at", UTC, nullable=False),
        sa.Column("finished_at", UTC, nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("run_key"),
    )
    op.create_index("ix_automation_run_rule", "automation_run", ["workflow", "rule", "started_at"])
    op.create_index("ix_automation_run_started", "automation_run", ["started_at"])
    op.create_table(
        "automation_timer",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("timer_key", sa.String(length=200), nullable=False),
        sa.Column("workflow", sa.String(length=100), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("rule", sa.String(length=100), nullable=False),
        sa.Column("next_step", sa.Integer(), nullable=False),
        sa.Column("awaits", sa.String(length=64), nullable=True),
        sa.Column("on_event", sa.String(length=16), nullable=True),
        sa.Column("event_id", sa.BigInteger(), nullable=True),
        sa.Column("subject_type", sa.String(length=32), nullable=False),
        sa.Column("subject_id", sa.String(length=32), nullable=False),
        sa.Column("location_id", sa.String(length=32), nullable=True),
        sa.Column("depth", sa.Integer(), nullable=False),
        sa.Column("due_at", UTC, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("fired_at", UTC, nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("timer_key"),
    )
    op.create_index(
        "ix_automation_timer_due",
        "automation_timer",
        ["due_at"],
        postgresql_where=PENDING,
        sqlite_where=PENDING,
    )
    op.create_index(
        "ix_automation_timer_waiting",
        "automation_timer",
        ["subject_id", "awaits"],
        postgresql_where=WAITING,
        sqlite_where=WAITING,
    )
    op.create_table(
        "schedule_tick",
        sa.Column("schedule", sa.String(length=200), nullable=False),
        sa.Column("tick_at", UTC, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("worker", sa.String(length=100), nullable=True),
        sa.Column("error", sa.String(length=500), nullable=True),
        sa.Column("started_at", UTC, nullable=False),
        sa.Column("finished_at", UTC, nullable=True),
        sa.PrimaryKeyConstraint("schedule", "tick_at"),
    )
    op.create_table(
        "queued_message",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("recipient", sa.String(length=200), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("case_id", sa.String(length=32), nullable=True),
        sa.Column("location_id", sa.String(length=32), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["service_case.id"]),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("queued_message")
    op.drop_table("schedule_tick")
    op.drop_index("ix_automation_timer_waiting", table_name="automation_timer")
    op.drop_index("ix_automation_timer_due", table_name="automation_timer")
    op.drop_table("automation_timer")
    op.drop_index("ix_automation_run_started", table_name="automation_run")
    op.drop_index("ix_automation_run_rule", table_name="automation_run")
    op.drop_table("automation_run")
    op.drop_table("automation_cursor")
    op.drop_index("ux_workflow_active", table_name="workflow_version")
    op.drop_index("ux_workflow_version_hash", table_name="workflow_version")
    op.drop_table("workflow_version")
