"""Shifts and home-care service plans.

A shift says when a member of staff works at a location (two planned shifts of one person never
overlap). A service plan books a home-care case's visits: its service, in the patient's address
zone, on the pattern's weekdays and times from its first to its last day, each visit an
appointment carrying the plan's id that takes staff like any booking (credential, working hours,
free slots, travel time between zones), the plan's named member of staff first when free. The
plan is booked whole or not at all, and the case is scheduled; it stays scheduled while the plan
has open visits.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from careops.db import Database
from careops.domain.cases import CaseAction, CaseStatus, transition
from careops.domain.events import Event, EventType, record_events
from careops.domain.master_data import WEEKDAYS
from careops.domain.models import Appointment, Location, Resource, Service, ServiceCase, find, new_id
from careops.domain.staffing import ServicePlan, Shift
from careops.errors import Conflict, NotFound, ValidationFailed
from careops.governance.scoping import LocationScope
from careops.orchestration.appointments import appointment_event, refused, take
from careops.orchestration.locations import location_named
from careops.orchestration.scheduling import appointment_view, works_at

MAX_PLAN_DAYS = 92
MAX_SHIFT = dt.timedelta(hours=24)


def staff_member(session: Session, code: str) -> Resource:
    """The live member of staff with this code (404 otherwise)."""
    found = session.scalars(
        select(Resource).where(Resource.code == code, Resource.staff.is_(True), Resource.retired_at.is_(None))
    ).first()
    if found is None:
        raise NotFound(f"no member of staff {code!r}")
    return found


def shift_view(shift: Shift, staff: str, location: str) -> dict[str, Any]:
    return {
        "id": shift.id,
        "staff": staff,
        "location": location,
        "starts_at": shift.starts_at.isoformat(),
        "ends_at": shift.ends_at.isoformat(),
        "status": shift.status,
    }


def plan_shift(
    db: Database,
    staff_code: str,
    location_slug: str,
    starts_at: dt.datetime,
    ends_at: dt.datetime,
    *,
    actor: str,
    scope: LocationScope,
) -> dict[str, Any]:
    """A planned shift of a member of staff at a location they work at (409 when it overlaps
    another of theirs; 422 when it ends before it starts or lasts more than a day)."""
    if not starts_at < ends_at <= starts_at + MAX_SHIFT:
        raise ValidationFailed("a shift ends after it starts, within 24 hours")
    with db.transaction() as session:
        location = location_named(session, location_slug, scope)
        staff = session.scalars(
            select(Resource)
            .where(
                Resource.code == staff_code,
                Resource.staff.is_(True),
                Resource.retired_at.is_(None),
                works_at(session, location.slug),
            )
            .with_for_update()
        ).first()
        if staff is None:
            raise NotFound(f"no member of staff {staff_code!r} at {location.slug}")
        overlapping = session.scalars(
            select(Shift.id).where(
                Shift.resource_id == staff.id,
                Shift.status == "planned",
                Shift.starts_at < ends_at,
                Shift.ends_at > starts_at,
            )
        ).first()
        if overlapping is not None:
            raise Conflict(f"{staff.code} already has a shift then", shift_id=overlapping)
        shift = Shift(
            id=new_id(), resource_id=staff.id, location_id=location.id, starts_at=starts_at, ends_at=ends_at
        )
        session.add(shift)
        view = shift_view(shift, staff.code, location.slug)
        record_events(
            session,
            Event(EventType.SHIFT_PLANNED, "shift", shift.id, actor, location_id=location.id, payload=view),
        )
        return view


def shifts(
    db: Database, location_slug: str, start: dt.datetime, end: dt.datetime, scope: LocationScope
) -> list[dict[str, Any]]:
    """The planned shifts at a location starting in ``[start, end)``, in start order."""
    with db.sessions() as session:
        location = location_named(session, location_slug, scope, live=False)
        rows = session.execute(
            select(Shift, Resource.code)
            .join(Resource, Resource.id == Shift.resource_id)
            .where(Shift.location_id == location.id, Shift.starts_at >= start, Shift.starts_at < end)
            .order_by(Shift.starts_at, Resource.code)
        ).all()
        return [shift_view(shift, code, location.slug) for shift, code in rows]


@dataclass(frozen=True)
class PlanRequest:
    case_id: str
    zone: str
    pattern: list[tuple[str, dt.time]]  # (weekday, local time)
    first_day: dt.date
    last_day: dt.date
    staff: str | None = None


def visit_starts(request: PlanRequest, timezone: str) -> list[dt.datetime]:
    """The plan's visit starts (UTC), in order: each day from the first to the last whose weekday
    the pattern names, at its local time."""
    zone = ZoneInfo(timezone or "UTC")
    starts = []
    day = request.first_day
    while day <= request.last_day:
        weekday = WEEKDAYS[day.weekday()]
        starts += [
            dt.datetime.combine(day, at, zone).astimezone(dt.UTC) for w, at in request.pattern if w == weekday
        ]
        day += dt.timedelta(days=1)
    return sorted(starts)


def create_plan(db: Database, request: PlanRequest, *, actor: str, scope: LocationScope) -> dict[str, Any]:
    """Book a home-care case's plan of visits, whole or not at all, and schedule the case.

    404 for an unknown case or member of staff; 409 when the case is not ready to schedule, its
    service is no home visit, or a visit finds no free, credentialed staff (named with its start);
    422 for a plan longer than ``MAX_PLAN_DAYS`` or with no visit in it.
    """
    if not request.first_day <= request.last_day <= request.first_day + dt.timedelta(days=MAX_PLAN_DAYS):
        raise ValidationFailed(f"a plan runs from its first to its last day, at most {MAX_PLAN_DAYS} days")
    try:
        with db.transaction() as session:
            case = find(session, ServiceCase, request.case_id, for_update=True)
            if case is None or not scope.allows(case.location_id):
                raise NotFound("no case with this id")
            if case.status != CaseStatus.READY_TO_SCHEDULE:
                raise Conflict(f"the case is {case.status}, not ready_to_schedule", case_status=case.status)
            service = session.get(Service, case.service_id)
            location = session.get(Location, case.location_id)
            assert service is not None and location is not None
            if not service.home_visit:
                raise Conflict(f"{service.code} is no home visit: book it as an appointment")
            if request.staff is not None:
                staff_member(session, request.staff)
            starts = visit_starts(request, location.timezone)
            if not starts:
                raise ValidationFailed("the pattern names no day between the first and the last")
            plan = ServicePlan(
                id=new_id(),
                case_id=case.id,
                location_id=case.location_id,
                service_id=service.id,
                zone=request.zone,
                pattern=[{"weekday": w, "time": at.strftime("%H:%M")} for w, at in request.pattern],
                first_day=request.first_day,
                last_day=request.last_day,
                staff=request.staff,
                status="active",
                created_by=actor,
            )
            session.add(plan)
            session.flush()
            visits = []
            for start in starts:
                visit = Appointment(
                    id=new_id(),
                    case_id=case.id,
                    location_id=case.location_id,
                    service_id=service.id,
                    status="confirmed",
                    zone=request.zone,
                    plan_id=plan.id,
                )
                try:
                    take(session, visit, case, start, prefer=request.staff)
                except Conflict as exc:
                    raise Conflict(
                        f"no free, credentialed staff for the visit at {start.isoformat()}"
                    ) from exc
                visits.append(visit)
            transition(session, case, CaseAction.SCHEDULE, actor=actor, reason_code="service_plan")
            view = plan_view(plan, visits)
            record_events(
                session,
                Event.about_case_record(
                    EventType.SERVICE_PLAN_CREATED,
                    "service_plan",
                    plan.id,
                    case,
                    actor=actor,
                    payload={"visits": len(visits), "staff": plan.staff, "first_day": view["first_day"]},
                ),
                *(
                    appointment_event(EventType.APPOINTMENT_BOOKED, v, case, actor, plan=plan.id)
                    for v in visits
                ),
            )
            return view
    except IntegrityError as exc:
        raise refused(exc) from exc


def plan_view(plan: ServicePlan, visits: list[Appointment]) -> dict[str, Any]:
    return {
        "id": plan.id,
        "case_id": plan.case_id,
        "zone": plan.zone,
        "pattern": plan.pattern,
        "first_day": plan.first_day.isoformat(),
        "last_day": plan.last_day.isoformat(),
        "staff": plan.staff,
        "status": plan.status,
        "visits": [appointment_view(v) for v in visits],
    }


def get_plan(db: Database, plan_id: str, scope: LocationScope) -> dict[str, Any]:
    with db.sessions() as session:
        plan = find(session, ServicePlan, plan_id)
        if plan is None or not scope.allows(plan.location_id):
            raise NotFound("no service plan with this id")
        visits = session.scalars(
            select(Appointment).where(Appointment.plan_id == plan.id).order_by(Appointment.starts_at)
        ).all()
        return plan_view(plan, list(visits))
