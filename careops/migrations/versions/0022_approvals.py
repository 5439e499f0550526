"""Approvals: policy versions, requests with their chains' steps, decisions, delegations, absences
and signed decision links

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-07 23:06:23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import careops.domain.models

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
UTC = careops.domain.models.UTCDateTime(timezone=True)
APPROVAL = sa.text("subject_type = 'approval'")
DUE = sa.text("status = 'active' AND escalated_at IS NULL")


def upgrade() -> None:
    with op.batch_alter_table("api_token", schema=None) as batch_op:
        batch_op.add_column(sa.Column("user_id", sa.String(length=32), nullable=True))
    op.create_index(
        "ix_event_approval",
        "business_event",
        ["subject_id", "id"],
        postgresql_where=APPROVAL,
        sqlite_where=APPROVAL,
    )
    op.create_table(
        "approval_absence",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("starts_at", UTC, nullable=False),
        sa.Column("ends_at", UTC, nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("approval_absence", schema=None) as batch_op:
        batch_op.create_index("ix_approval_absence_user", ["user_id", "ends_at"], unique=False)

    op.create_table(
        "approval_delegation",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("delegator", sa.String(length=32), nullable=False),
        sa.Column("delegate", sa.String(length=32), nullable=False),
        sa.Column("starts_at", UTC, nullable=False),
        sa.Column("ends_at", UTC, nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("revoked_at", UTC, nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("approval_delegation", schema=None) as batch_op:
        batch_op.create_index("ix_approval_delegation_delegator", ["delegator", "ends_at"], unique=False)

    op.create_table(
        "approval_policy_version",
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
    with op.batch_alter_table("approval_policy_version", schema=None) as batch_op:
        batch_op.create_index(
            "ux_approval_policy_active",
            ["name"],
            unique=True,
            postgresql_where=sa.text("active"),
            sqlite_where=sa.text("active"),
        )
        batch_op.create_index("ux_approval_policy_hash", ["name", "content_hash"], unique=True)

    op.create_table(
        "approval_request",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("subject_type", sa.String(length=32), nullable=False),
        sa.Column("subject_id", sa.String(length=32), nullable=False),
        sa.Column("case_id", sa.String(length=32), nullable=True),
        sa.Column("location_id", sa.String(length=32), nullable=False),
        sa.Column("policy", sa.String(length=100), nullable=False),
        sa.Column("policy_hash", sa.String(length=64), nullable=False),
        sa.Column("policy_version", sa.String(length=32), nullable=False),
        sa.Column("matched", JSON, nullable=False),
        sa.Column("facts", JSON, nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("requested_by", sa.String(length=100), nullable=False),
        sa.Column("amended_by", JSON, nullable=False),
        sa.Column("separation", JSON, nullable=False),
        sa.Column("requested_at", UTC, nullable=False),
        sa.Column("decided_at", UTC, nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("approval_request", schema=None) as batch_op:
        batch_op.create_index(
            "ix_approval_request_status", ["status", "location_id", "requested_at"], unique=False
        )
        batch_op.create_index("ix_approval_request_subject", ["subject_type", "subject_id"], unique=False)

    op.create_table(
        "approval_decision",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("request_id", sa.String(length=32), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("decided_by", sa.String(length=100), nullable=False),
        sa.Column("on_behalf_of", sa.String(length=100), nullable=True),
        sa.Column("comment", sa.String(length=1000), nullable=True),
        sa.Column("via", sa.String(length=16), nullable=False),
        sa.Column("decided_at", UTC, nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["approval_request.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("approval_decision", schema=None) as batch_op:
        batch_op.create_index("ix_approval_decision_request", ["request_id", "position"], unique=False)

    op.create_table(
        "approval_link",
        sa.Column("token_sha256", sa.String(length=64), nullable=False),
        sa.Column("request_id", sa.String(length=32), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("approver", sa.String(length=32), nullable=False),
        sa.Column("expires_at", UTC, nullable=False),
        sa.Column("used_at", UTC, nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["approval_request.id"],
        ),
        sa.PrimaryKeyConstraint("token_sha256"),
    )
    with op.batch_alter_table("approval_link", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_approval_link_request_id"), ["request_id"], unique=False)

    op.create_table(
        "approval_step",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("request_id", sa.String(length=32), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("spec", JSON, nullable=False),
        sa.Column("approvers", JSON, nullable=False),
        sa.Column("quorum", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("started_at", UTC, nullable=True),
        sa.Column("due_at", UTC, nullable=True),
        sa.Column("escalated_at", UTC, nullable=True),
        sa.Column("finished_at", UTC, nullable=True),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["approval_request.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("approval_step", schema=None) as batch_op:
        batch_op.create_index(
            "ix_approval_step_due", ["due_at"], unique=False, postgresql_where=DUE, sqlite_where=DUE
        )
        batch_op.create_index("ix_approval_step_request", ["request_id", "position"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_event_approval", "business_event", postgresql_where=APPROVAL, sqlite_where=APPROVAL)
    with op.batch_alter_table("api_token", schema=None) as batch_op:
        batch_op.drop_column("user_id")
    with op.batch_alter_table("approval_step", schema=None) as batch_op:
        batch_op.drop_index("ix_approval_step_request")
        batch_op.drop_index("ix_approval_step_due", postgresql_where=DUE, sqlite_where=DUE)

    op.drop_table("approval_step")
    with op.batch_alter_table("approval_link", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_approval_link_request_id"))

    op.drop_table("approval_link")
    with op.batch_alter_table("approval_decision", schema=None) as batch_op:
        batch_op.drop_index("ix_approval_decision_request")

    op.drop_table("approval_decision")
    with op.batch_alter_table("approval_request", schema=None) as batch_op:
        batch_op.drop_index("ix_approval_request_subject")
        batch_op.drop_index("ix_approval_request_status")

    op.drop_table("approval_request")
    with op.batch_alter_table("approval_policy_version", schema=None) as batch_op:
        batch_op.drop_index("ux_approval_policy_hash")
        batch_op.drop_index(
            "ux_approval_policy_active", postgresql_where=sa.text("active"), sqlite_where=sa.text("active")
        )

    op.drop_table("approval_policy_version")
    with op.batch_alter_table("approval_delegation", schema=None) as batch_op:
        batch_op.drop_index("ix_approval_delegation_delegator")

    op.drop_table("approval_delegation")
    with op.batch_alter_table("approval_absence", schema=None) as batch_op:
        batch_op.drop_index("ix_approval_absence_user")

    op.drop_table("approval_absence")
