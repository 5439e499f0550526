"""The stock records: items, suppliers and thresholds (master data), each location's stock
levels (never negative: a check constraint), the moves that change them, and replenishment
requests with their purchase orders."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Boolean, CheckConstraint, Float, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from careops.domain.models import Base, new_id, utcnow


class Item(Base):
    """Something a location keeps in stock and services consume (a dressing, a vacutainer)."""

    __tablename__ = "item"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    unit: Mapped[str] = mapped_column(String(32), default="each")
    pack_size: Mapped[int] = mapped_column(Integer, default=1)
    unit_price: Mapped[float | None] = mapped_column(Float)
    supplier: Mapped[str | None] = mapped_column(String(64))  # the usual supplier's code
    retired_at: Mapped[dt.datetime | None] = mapped_column()


class Supplier(Base):
    __tablename__ = "supplier"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(200))
    retired_at: Mapped[dt.datetime | None] = mapped_column()


class StockThreshold(Base):
    """When an item runs low at a location (master data): below ``minimum`` it is reordered,
    ``reorder_quantity`` at a time, up to ``maximum``."""

    __tablename__ = "stock_threshold"
    __table_args__ = (UniqueConstraint("location", "item"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    location: Mapped[str] = mapped_column(String(64))  # the location's slug
    item: Mapped[str] = mapped_column(String(64))  # the item's code
    minimum: Mapped[int] = mapped_column(Integer, default=0)
    maximum: Mapped[int | None] = mapped_column(Integer)
    reorder_quantity: Mapped[int | None] = mapped_column(Integer)
    retired_at: Mapped[dt.datetime | None] = mapped_column()


class StockLevel(Base):
    """What a location holds of an item. The database keeps it from going negative; ``below`` says
    it is under its threshold's minimum (``stock.below_threshold`` is written once per crossing)."""

    __tablename__ = "stock_level"
    __table_args__ = (CheckConstraint("on_hand >= 0", name="ck_stock_level_not_negative"),)
    location_id: Mapped[str] = mapped_column(ForeignKey("location.id"), primary_key=True)
    item_id: Mapped[str] = mapped_column(ForeignKey("item.id"), primary_key=True)
    on_hand: Mapped[int] = mapped_column(Integer, default=0)
    below: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class StockMove(Base):
    """One change of a stock level: receipt, consumption, transfer (out and in) or adjustment."""

    __tablename__ = "stock_move"
    __table_args__ = (Index("ix_stock_move_location_item", "location_id", "item_id", "id"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    location_id: Mapped[str] = mapped_column(ForeignKey("location.id"))
    item_id: Mapped[str] = mapped_column(ForeignKey("item.id"))
    kind: Mapped[str] = mapped_column(String(16))
    quantity: Mapped[int] = mapped_column(Integer)  # signed: what it added to on_hand
    on_hand: Mapped[int] = mapped_column(Integer)  # after it
    reason: Mapped[str | None] = mapped_column(String(200))
    reference: Mapped[str | None] = mapped_column(String(64))  # an appointment, a replenishment
    actor: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Replenishment(Base):
    """A replenishment request and, once ordered, its purchase order: draft → requested →
    approved → ordered → received, or cancelled."""

    __tablename__ = "replenishment"
    __table_args__ = (Index("ix_replenishment_location_status", "location_id", "status"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    location_id: Mapped[str] = mapped_column(ForeignKey("location.id"))
    supplier: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    urgency: Mapped[str] = mapped_column(String(16), default="routine")
    lines: Mapped[list[dict[str, Any]]] = mapped_column(default=list)
    value: Mapped[float] = mapped_column(Float, default=0.0)
    external_reference: Mapped[str | None] = mapped_column(String(100))  # the purchase order's number
    requested_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
