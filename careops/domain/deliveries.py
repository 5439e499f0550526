"""The delivery records: one row per (business event, subscribed connector), and each connector's
circuit breaker, shared by every worker through the database.

A delivery is ``pending`` (due at ``next_attempt_at``), ``delivered`` or ``dead`` (its retries
spent, or too old: a dead letter, for an engineer to replay). Its id is the idempotency key the
target receives, so a retry after a timeout is recognised downstream. Pending ones are claimed by
due time through a partial index, ``FOR UPDATE SKIP LOCKED``.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Float, Index, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from careops.domain.models import Base, new_id, utcnow


class Delivery(Base):
    __tablename__ = "delivery"
    __table_args__ = (
        Index("ux_delivery_event_connector", "event_id", "connector", unique=True),
        Index(
            "ix_delivery_due",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
        Index("ix_delivery_connector_status", "connector", "status", "created_at"),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    event_id: Mapped[int] = mapped_column(BigInteger)
    connector: Mapped[str] = mapped_column(String(64))
    event_type: Mapped[str] = mapped_column(String(64))
    case_id: Mapped[str | None] = mapped_column(String(32))
    location_id: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(String(500))
    last_status: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[dt.datetime | None] = mapped_column()


class ConnectorBreaker(Base):
    """A connector's circuit: ``closed`` (deliveries go), ``open`` until ``open_until`` after
    ``failures`` failures in a row, then ``half_open``: one delivery probes; success closes it."""

    __tablename__ = "connector_breaker"
    connector: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), default="closed")
    failures: Mapped[int] = mapped_column(Integer, default=0)
    open_until: Mapped[dt.datetime | None] = mapped_column()
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
