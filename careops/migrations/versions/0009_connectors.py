"""Connectors with rotating signing secrets, and receipts of signed webhooks (replay refusal)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 03:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import careops.domain.models

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC = careops.domain.models.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "connector",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("direction", sa.String(length=16), nullable=False),
        sa.Column("url", sa.String(length=500), nullable=True),
        sa.Column("sees_as", sa.String(length=64), nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "connector_secret",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("connector_name", sa.String(length=64), nullable=False),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("expires_at", UTC, nullable=True),
        sa.ForeignKeyConstraint(["connector_name"], ["connector.name"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_connector_secret_connector_name", "connector_secret", ["connector_name"])
    op.create_table(
        "webhook_receipt",
        sa.Column("signature_sha256", sa.String(length=64), nullable=False),
        sa.Column("connector", sa.String(length=64), nullable=False),
        sa.Column("received_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("signature_sha256"),
    )
    op.create_index("ix_webhook_receipt_received_at", "webhook_receipt", ["received_at"])


def downgrade() -> None:
    op.drop_index("ix_webhook_receipt_received_at", table_name="webhook_receipt")
    op.drop_table("webhook_receipt")
    op.drop_index("ix_connector_secret_connector_name", table_name="connector_secret")
    op.drop_table("connector_secret")
    op.drop_table("connector")
