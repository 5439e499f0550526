"""Inventory: items, suppliers and stock thresholds (master data), stock levels that the database
keeps from going negative, stock moves, replenishment requests and their purchase orders

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07 15:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import careops.domain.models

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
UTC = careops.domain.models.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "item",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("unit", sa.String(length=32), nullable=False),
        sa.Column("pack_size", sa.Integer(), nullable=False),
        sa.Column("unit_price", sa.Float(), nullable=True),
        sa.Column("supplier", sa.String(length=64), nullable=True),
        sa.Column("retired_at", UTC, nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("code"),
    )
    op.create_table(
        "supplier",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("email", sa.String(length=200), nullable=True),
        sa.Column("retired_at", UTC, nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("code"),
    )
    op.create_table(
        "stock_threshold",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("location", sa.String(length=64), nullable=False),
        sa.Column("item", sa.String(length=64), nullable=False),
        sa.Column("minimum", sa.Integer(), nullable=False),
        sa.Column("maximum", sa.Integer(), nullable=True),
        sa.Column("reorder_quantity", sa.Integer(), nullable=True),
        sa.Column("retired_at", UTC, nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("location", "item"),
    )
    op.create_table(
        "stock_level",
        sa.Column("location_id", sa.String(length=32), nullable=False),
        sa.Column("item_id", sa.String(length=32), nullable=False),
        sa.Column("on_hand", sa.Integer(), nullable=False),
        sa.Column("below", sa.Boolean(), nullable=False),
        sa.Column("updated_at", UTC, nullable=False),
        sa.CheckConstraint("on_hand >= 0", name="ck_stock_level_not_negative"),
        sa.ForeignKeyConstraint(["item_id"], ["item.id"]),
        sa.ForeignKeyConstraint(["location_id"], ["location.id"]),
        sa.PrimaryKeyConstraint("location_id", "item_id"),
    )
    op.create_table(
        "stock_move",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("location_id", sa.String(length=32), nullable=False),
        sa.Column("item_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("on_hand", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=True),
        sa.Column("reference", sa.String(length=64), nullable=True),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.ForeignKeyConstraint(["item_id"], ["item.id"]),
        sa.ForeignKeyConstraint(["location_id"], ["location.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_stock_move_location_item", "stock_move", ["location_id", "item_id", "id"])
    op.create_table(
        "replenishment",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("location_id", sa.String(length=32), nullable=False),
        sa.Column("supplier", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("urgency", sa.String(length=16), nullable=False),
        sa.Column("lines", JSON, nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("external_reference", sa.String(length=100), nullable=True),
        sa.Column("requested_by", sa.String(length=100), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("updated_at", UTC, nullable=False),
        sa.ForeignKeyConstraint(["location_id"], ["location.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_replenishment_location_status", "replenishment", ["location_id", "status"])


def downgrade() -> None:
    op.drop_index("ix_replenishment_location_status", table_name="replenishment")
    op.drop_table("replenishment")
    op.drop_index("ix_stock_move_location_item", table_name="stock_move")
    op.drop_table("stock_move")
    op.drop_table("stock_level")
    op.drop_table("stock_threshold")
    op.drop_table("supplier")
    op.drop_table("item")
