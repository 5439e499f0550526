"""intake items carry their idempotency key; outbox rows carry their workflow id; fewer indexes

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 05:45:00

The idempotency record of an intake becomes four columns of its intake item (one insert per
referral instead of two); existing records are copied over before their table is dropped.
Outbox rows get the id of the durable workflow they were handed to, fixed at first claim.
Indexes written on every referral but read by nothing (event type, intake status) go or become
partial (only quarantined items).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import careops.domain.models

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_QUARANTINED = sa.text("status = 'quarantined'")
_CLAIMED = sa.text("workflow_id IS NOT NULL")
_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("intake_item", schema=None) as batch_op:
        batch_op.add_column(sa.Column("principal_id", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("idempotency_key", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("response_status", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("response_body", _JSON, nullable=True))
        batch_op.create_index("ux_intake_idempotency", ["principal_id", "idempotency_key"], unique=True)
        batch_op.drop_index("ix_intake_item_status")
        batch_op.create_index(
            "ix_intake_quarantined",
            ["id"],
            unique=False,
            postgresql_where=_QUARANTINED,
            sqlite_where=_QUARANTINED,
        )
    records = sa.table(
        "idempotency_record",
        sa.column("principal_id", sa.String),
        sa.column("key", sa.String),
        sa.column("status_code", sa.Integer),
        sa.column("response_body", _JSON),
    )
    items = sa.table(
        "intake_item",
        sa.column("id", sa.String),
        sa.column("principal_id", sa.String),
        sa.column("idempotency_key", sa.String),
        sa.column("response_status", sa.Integer),
        sa.column("response_body", _JSON),
    )
    connection = op.get_bind()
    for record in connection.execute(sa.select(records)):
        item_id = (record.response_body or {}).get("intake_item_id")
        if item_id:
            connection.execute(
                sa.update(items)
                .where(items.c.id == item_id)
                .values(
                    principal_id=record.principal_id,
                    idempotency_key=record.key,
                    response_status=record.status_code,
                    response_body=record.response_body,
                )
            )
    op.drop_table("idempotency_record")
    with op.batch_alter_table("outbox_message", schema=None) as batch_op:
        batch_op.add_column(sa.Column("workflow_id", sa.String(length=64), nullable=True))
        batch_op.create_index(
            "ix_outbox_workflow",
            ["workflow_id"],
            unique=False,
            postgresql_where=_CLAIMED,
            sqlite_where=_CLAIMED,
        )
    with op.batch_alter_table("business_event", schema=None) as batch_op:
        batch_op.drop_index("ix_business_event_type")


def downgrade() -> None:
    with op.batch_alter_table("business_event", schema=None) as batch_op:
        batch_op.create_index("ix_business_event_type", ["type"], unique=False)
    with op.batch_alter_table("outbox_message", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_workflow")
        batch_op.drop_column("workflow_id")
    op.create_table(
        "idempotency_record",
        sa.Column("principal_id", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("request_sha256", sa.String(length=64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("response_body", _JSON, nullable=False),
        sa.Column("created_at", careops.domain.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("principal_id", "key"),
    )
    op.execute(
        "INSERT INTO idempotency_record (principal_id, key, request_sha256, status_code, response_body,"
        " created_at) SELECT principal_id, idempotency_key, payload_sha256, response_status, response_body,"
        " received_at FROM intake_item WHERE idempotency_key IS NOT NULL"
    )
    with op.batch_alter_table("intake_item", schema=None) as batch_op:
        batch_op.drop_index("ix_intake_quarantined")
        batch_op.create_index("ix_intake_item_status", ["status"], unique=False)
        batch_op.drop_index("ux_intake_idempotency")
        batch_op.drop_column("response_body")
        batch_op.drop_column("response_status")
        batch_op.drop_column("idempotency_key")
        batch_op.drop_column("principal_id")
