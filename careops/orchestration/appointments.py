"""Appointments: proposed, confirmed, rescheduled, cancelled, missed or completed, each step
writing its event in the transaction of the change.

Booking takes free resources (``scheduling.fit``) and their slots in ``resource_booking``, whose
primary key is the invariant: a slot already taken fails the insert, so two bookings racing for
it end with one appointment and one 409, on SQLite and PostgreSQL alike, in one process or many.
A proposed appointment holds its resources; the case is scheduled when it is confirmed (a
booking made confirmed schedules it at once). A case is completed by completing its appointment
(and, when its service needs one, receiving its result), and goes back to ``ready_to_schedule``
when the appointment is cancelled or missed. Completing an appointment consumes the service's
bill of materials at its location.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from careops.db import Database
from careops.domain.cases import CaseAction, CaseStatus, transition
from careops.domain.events import Event, EventType, record_events
from careops.domain.models import (
    Appointment,
    Base,
    Location,
    ResourceBooking,
    Service,
    ServiceCase,
    find,
    new_id,
    utcnow,
)
from careops.errors import Conflict, NotFound, ValidationFailed
from careops.governance.scoping import LocationScope
from careops.orchestration.authorisations import check_validity
from careops.orchestration.billing import check_readiness
from careops.orchestration.inventory import consume_for
from careops.orchestration.locations import lock_location
from careops.orchestration.results import awaiting_result
from careops.orchestration.scheduling import (
    SLOT_MINUTES,
    aligned,
    appointment_view,
    fit,
    hold,
    need_for,
    taken,
    with_visits,
)

_bookings = Base.metadata.tables[ResourceBooking.__tablename__]
OPEN = ("proposed", "confirmed")


def appointment_event(
    kind: EventType, appointment: Appointment, case: ServiceCase, actor: str, **more: Any
) -> Event:
    payload = {
        "appointment_id": appointment.id,
        "starts_at": appointment.starts_at.isoformat(),
        "resources": list(appointment.resource_codes),
        **more,
    }
    return Event.about_case_record(kind, "appointment", appointment.id, case, actor=actor, payload=payload)


def _checked_start(starts_at: dt.datetime) -> None:
    if starts_at.tzinfo is None or not aligned(starts_at, SLOT_MINUTES):
        raise ValidationFailed(f"a start is a time with its zone on a {SLOT_MINUTES}-minute boundary")


def refused(exc: IntegrityError) -> Conflict:
    """409 for what the database refused: a slot another booking took, or staff without the
    credential (its trigger)."""
    if "staff_not_credentialed" in str(exc.orig):
        return Conflict("a member of staff it would take has no valid credential for the service that day")
    return Conflict("the slot was taken by another booking a moment ago; choose another")


def take(
    session: Session,
    appointment: Appointment,
    case: ServiceCase,
    starts_at: dt.datetime,
    prefer: str | None = None,
) -> None:
    """Give the appointment free resources for ``starts_at`` and take their slots (the caller has
    released any it held); the resource coded ``prefer`` first when it is free."""
    location = session.get(Location, case.location_id)
    service = session.get(Service, case.service_id)
    assert location is not None and service is not None
    need = need_for(session, location, service, appointment.zone)
    if prefer is not None:
        need.candidates.update(
            (kind, sorted(found, key=lambda r: r.code != prefer)) for kind, found in need.candidates.items()
        )
    held_from, ends_at = need.held(starts_at)
    if need.zone is not None:  # a home visit: staff visits nearby are read under a lock
        lock_location(session, location.id)
    need = with_visits(session, need, starts_at, ends_at)
    chosen = fit(need, starts_at, taken(session, need, held_from, ends_at))
    if chosen is None:
        raise Conflict("no free resources of every kind the service needs at that time")
    appointment.starts_at, appointment.ends_at, appointment.held_from = starts_at, ends_at, held_from
    appointment.resource_codes = [r.code for r in chosen]
    session.add(appointment)
    session.flush()
    hold(session, appointment.id, [r.id for r in chosen], held_from, ends_at)
    check_validity(session, case, starts_at.astimezone(ZoneInfo(location.timezone or "UTC")).date())


def book(
    db: Database,
    case_id: str,
    starts_at: dt.datetime,
    *,
    actor: str,
    scope: LocationScope,
    propose: bool = False,
    zone: str | None = None,
) -> dict[str, Any]:
    """Book the case's service at ``starts_at`` with free resources: confirmed (the case becomes
    ``scheduled``) or ``propose``d (the resources held until it is confirmed or cancelled).

    409 when the case is not ready to schedule or already has an open appointment, or no resource
    of a needed kind is free then (also when a concurrent booking took the slot first); 422 for a
    start off the slot grid, or a home visit without its zone.
    """
    _checked_start(starts_at)
    try:
        with db.transaction() as session:
            case = find(session, ServiceCase, case_id, for_update=True)
            if case is None or not scope.allows(case.location_id):
                raise NotFound("no case with this id")
            if case.status != CaseStatus.READY_TO_SCHEDULE:
                raise Conflict(f"the case is {case.status}, not ready_to_schedule", case_status=case.status)
            held = _open_appointment(session, case)
            if held is not None:
                raise Conflict(
                    "the case already has an open appointment: confirm or cancel it", appointment_id=held
                )
            appointment = Appointment(
                id=new_id(),
                case_id=case.id,
                location_id=case.location_id,
                service_id=case.service_id,
                status="proposed" if propose else "confirmed",
                zone=zone,
            )
            take(session, appointment, case, starts_at)
            kind = EventType.APPOINTMENT_PROPOSED if propose else EventType.APPOINTMENT_BOOKED
            if not propose:
                transition(session, case, CaseAction.SCHEDULE, actor=actor, reason_code="appointment_booked")
            record_events(session, appointment_event(kind, appointment, case, actor))
            return appointment_view(appointment)
    except IntegrityError as exc:
        raise refused(exc) from exc


def _plan_goes_on(session: Session, visit: Appointment) -> bool:
    """Whether the service plan of the visit has other open visits."""
    return (
        session.scalars(
            select(Appointment.id).where(
                Appointment.plan_id == visit.plan_id, Appointment.status.in_(OPEN), Appointment.id != visit.id
            )
        ).first()
        is not None
    )


def _open_appointment(session: Session, case: ServiceCase) -> str | None:
    return session.scalars(
        select(Appointment.id).where(
            Appointment.case_id == case.id,
            Appointment.status.in_(OPEN),
            Appointment.source == "careops",
            Appointment.plan_id.is_(None),
        )
    ).first()


def _load(
    session: Session, appointment_id: str, scope: LocationScope, statuses: tuple[str, ...]
) -> tuple[Appointment, ServiceCase]:
    appointment = find(session, Appointment, appointment_id, for_update=True)
    if appointment is None or not scope.allows(appointment.location_id):
        raise NotFound("no appointment with this id")
    if appointment.status not in statuses or appointment.source != "careops":
        raise Conflict(
            f"the appointment is {appointment.status}"
            + ("" if appointment.source == "careops" else " (kept by another system)"),
            appointment_status=appointment.status,
        )
    case = session.get(ServiceCase, appointment.case_id)
    assert case is not None
    return appointment, case


def confirm(db: Database, appointment_id: str, *, actor: str, scope: LocationScope) -> dict[str, Any]:
    """The patient accepted a proposed appointment: it is confirmed and the case scheduled."""
    with db.transaction() as session:
        appointment, case = _load(session, appointment_id, scope, ("proposed",))
        appointment.status, appointment.updated_at = "confirmed", utcnow()
        transition(session, case, CaseAction.SCHEDULE, actor=actor, reason_code="appointment_confirmed")
        record_events(session, appointment_event(EventType.APPOINTMENT_CONFIRMED, appointment, case, actor))
        return appointment_view(appointment)


def reschedule(
    db: Database, appointment_id: str, starts_at: dt.datetime, *, actor: str, scope: LocationScope
) -> dict[str, Any]:
    """Move a proposed or confirmed appointment to ``starts_at``: its slots are released and free
    resources taken for the new time, in one transaction (409 if none are free: it stays where it
    was)."""
    _checked_start(starts_at)
    try:
        with db.transaction() as session:
            appointment, case = _load(session, appointment_id, scope, OPEN)
            was = appointment.starts_at.isoformat()
            session.execute(delete(_bookings).where(_bookings.c.appointment_id == appointment.id))
            take(session, appointment, case, starts_at)
            appointment.updated_at = utcnow()
            record_events(
                session,
                appointment_event(EventType.APPOINTMENT_RESCHEDULED, appointment, case, actor, was=was),
            )
            return appointment_view(appointment)
    except IntegrityError as exc:
        raise refused(exc) from exc


# What each ending of an appointment does: its new status, the case's action, the event.
_ENDINGS = {
    "cancel": ("cancelled", CaseAction.UNSCHEDULE, EventType.APPOINTMENT_CANCELLED, True),
    "no_show": ("no_show", CaseAction.UNSCHEDULE, EventType.APPOINTMENT_NO_SHOW, True),
    "complete": ("completed", CaseAction.COMPLETE, EventType.APPOINTMENT_COMPLETED, False),
}
ENDINGS = tuple(_ENDINGS)


def end_appointment(
    db: Database, appointment_id: str, ending: str, *, actor: str, scope: LocationScope, reason: str = ""
) -> dict[str, Any]:
    """Cancel (also a proposal), record a no-show or complete a confirmed appointment, and move its
    case to match (cancel and no-show free the resources and put the case back to
    ``ready_to_schedule``)."""
    status, action, event_type, release = _ENDINGS[ending]
    with db.transaction() as session:
        appointment, case = _load(
            session, appointment_id, scope, OPEN if ending == "cancel" else ("confirmed",)
        )
        appointment.status = status
        appointment.updated_at = utcnow()
        if release:
            session.execute(delete(_bookings).where(_bookings.c.appointment_id == appointment.id))
        more: dict[str, Any] = {"reason": reason[:500]} if reason else {}
        if appointment.plan_id is not None and _plan_goes_on(session, appointment):
            more["plan_id"] = appointment.plan_id  # the case stays scheduled for the plan's next visits
        elif case.status == CaseStatus.SCHEDULED:
            if action is CaseAction.COMPLETE and awaiting_result(session, case):
                more["awaiting_result"] = True  # completed when its result comes
            else:
                transition(session, case, action, actor=actor, reason_code=f"appointment_{status}")
        record_events(session, appointment_event(event_type, appointment, case, actor, **more))
        if ending == "complete":
            consume_for(session, case, appointment.id, actor=actor)
        if case.status == CaseStatus.COMPLETED:
            check_readiness(session, case, actor=actor)
        return appointment_view(appointment)
