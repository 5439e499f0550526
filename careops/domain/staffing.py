"""The staffing records: shifts, home-care service plans (whose visits are appointments that book
staff like any other resource) and staffing conflicts with their resolution.

Staff themselves are resources (``Resource.staff``): their kinds are their roles, their
credentials say which services they may deliver and until when, ``also_at`` the other locations
they are assigned to, ``weekly_hours`` their contracted hours.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal, get_args

from sqlalchemy import Date, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from careops.domain.models import Base, new_id, utcnow


class Shift(Base):
    """When a member of staff works at a location: planned, or cancelled."""

    __tablename__ = "shift"
    __table_args__ = (Index("ix_shift_resource_start", "resource_id", "starts_at"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    resource_id: Mapped[str] = mapped_column(ForeignKey("resource.id"))
    location_id: Mapped[str] = mapped_column(ForeignKey("location.id"))
    starts_at: Mapped[dt.datetime] = mapped_column()
    ends_at: Mapped[dt.datetime] = mapped_column()
    status: Mapped[str] = mapped_column(String(16), default="planned")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ServicePlan(Base):
    """A home-care patient's plan of visits: a case's service, in an address zone, on weekdays at
    a time (location time), from ``first_day`` to ``last_day``, with a named member of staff
    (continuity of care). Its visits are appointments carrying its id (each visit then goes its own
    way: completed, cancelled, missed, reassigned)."""

    __tablename__ = "service_plan"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    case_id: Mapped[str] = mapped_column(ForeignKey("service_case.id"), index=True)
    location_id: Mapped[str] = mapped_column(ForeignKey("location.id"))
    service_id: Mapped[str] = mapped_column(ForeignKey("service.id"))
    zone: Mapped[str] = mapped_column(String(64))
    # [{"weekday": "mon", "time": "09:00"}, ...]
    pattern: Mapped[list[dict[str, Any]]] = mapped_column(default=list)
    first_day: Mapped[dt.date] = mapped_column(Date)
    last_day: Mapped[dt.date] = mapped_column(Date)
    staff: Mapped[str | None] = mapped_column(String(64))  # the preferred member of staff's code
    status: Mapped[str] = mapped_column(String(16), default="active")
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class StaffConflict(Base):
    """A member of staff cannot do some of their visits (sickness, vehicle failure, an overlap, a
    credential expired): open until a supervisor reassigns them (resolved) or withdraws it."""

    __tablename__ = "staff_conflict"
    __table_args__ = (Index("ix_staff_conflict_location_status", "location_id", "status"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    resource_id: Mapped[str] = mapped_column(ForeignKey("resource.id"))
    location_id: Mapped[str] = mapped_column(ForeignKey("location.id"))
    kind: Mapped[str] = mapped_column(String(32))
    shift_id: Mapped[str | None] = mapped_column(ForeignKey("shift.id"))
    appointment_ids: Mapped[list[str]] = mapped_column(default=list)
    note: Mapped[str | None] = mapped_column(String(500))
    status: Mapped[str] = mapped_column(String(16), default="open")
    reassigned_to: Mapped[str | None] = mapped_column(String(64))  # a member of staff's code
    reported_by: Mapped[str] = mapped_column(String(100))
    resolved_by: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[dt.datetime | None] = mapped_column()


ConflictKind = Literal["sickness", "vehicle_failure", "overlap", "credential_expired", "other"]
CONFLICT_KINDS: tuple[str, ...] = get_args(ConflictKind)
