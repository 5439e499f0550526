"""Documents: files that came with an intake item (attachments, uploads), with extracted text

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 01:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import careops.domain.models

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "document",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("intake_item_id", sa.String(length=32), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("content_type", sa.String(length=100), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("created_at", careops.domain.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["intake_item_id"], ["intake_item.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_document_intake_item_id", "document", ["intake_item_id"])


def downgrade() -> None:
    op.drop_index("ix_document_intake_item_id", table_name="document")
    op.drop_table("document")
