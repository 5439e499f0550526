"""Scheduling: when a service can be booked at a location, and the appointments that carry a case
from ``ready_to_schedule`` to ``scheduled`` and on.

A service needs one resource of each kind its ``resources`` name (an MRI scanner and a
radiographer), free and within working hours for the whole of its duration. Booking takes the
resources' slots (``SLOT_MINUTES`` each) in ``resource_booking``, whose primary key is the
invariant: a slot already taken fails the insert, so two bookings racing for it end with one
appointment and one 409, on SQLite and PostgreSQL alike. A case is scheduled only by booking,
completed by completing its appointment (and, when its service needs one, receiving its result),
and goes back to ``ready_to_schedule`` when the
appointment is cancelled or missed; each step writes its event in the same transaction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from careops.db import Database
from careops.domain.cases import CaseAction, CaseStatus, transition
from careops.domain.events import Event, EventType, record_events
from careops.domain.master_data import WEEKDAYS
from careops.domain.models import (
    Appointment,
    Base,
    Location,
    Resource,
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
from careops.orchestration.results import awaiting_result

SLOT_MINUTES = 5
OFFER_EVERY_MINUTES = 15  # how far apart the starts availability offers are
DEFAULT_DURATION_MINUTES = 30
MAX_WINDOW = dt.timedelta(days=31)
_bookings = Base.metadata.tables[ResourceBooking.__tablename__]


@dataclass(frozen=True)
class Slot:
    starts_at: dt.datetime
    ends_at: dt.datetime
    resources: tuple[str, ...]  # resource codes, one per kind the service needs


@dataclass(frozen=True)
class _Need:
    """What a booking at one place needs: the duration and, per kind, the candidate resources."""

    location: Location
    service: Service
    duration: dt.timedelta
    candidates: dict[str, list[Resource]]


def slots_of(start: dt.datetime, end: dt.datetime) -> Iterator[dt.datetime]:
    """The booking slots ``[start, end)`` covers (``start`` on a slot boundary)."""
    at = start
    while at < end:
        yield at
        at += dt.timedelta(minutes=SLOT_MINUTES)


def _aligned(moment: dt.datetime, minutes: int) -> bool:
    return moment.second == 0 and moment.microsecond == 0 and moment.minute % minutes == 0


def _within_hours(resource: Resource, start: dt.datetime, end: dt.datetime, zone: ZoneInfo) -> bool:
    """Whether ``[start, end)`` falls inside one of the resource's working spans, in local time."""
    local_start, local_end = start.astimezone(zone), end.astimezone(zone)
    if local_start.date() != (local_end - dt.timedelta(microseconds=1)).date():
        return False
    spans = resource.hours.get(WEEKDAYS[local_start.weekday()], [])
    begin, finish = (
        local_start.strftime("%H:%M"),
        (local_end - dt.timedelta(microseconds=1)).strftime("%H:%M"),
    )
    return any(span[:5] <= begin and finish < span[6:] for span in spans)


def _place(
    session: Session, location_slug: str, service_code: str, scope: LocationScope
) -> tuple[Location, Service]:
    location = session.scalars(
        select(Location).where(Location.slug == location_slug, Location.retired_at.is_(None))
    ).first()
    if location is None or not scope.allows(location.id):
        raise NotFound(f"no location {location_slug!r} among yours")
    service = session.scalars(
        select(Service).where(
            Service.code == service_code,
            Service.organisation_id == location.organisation_id,
            Service.retired_at.is_(None),
        )
    ).first()
    if service is None:
        raise NotFound(f"no live service {service_code!r}")
    return location, service


def _need_for(session: Session, location: Location, service: Service) -> _Need:
    resources = session.scalars(
        select(Resource)
        .where(Resource.location == location.slug, Resource.retired_at.is_(None))
        .order_by(Resource.code)
    ).all()
    candidates = {kind: [r for r in resources if kind in r.kinds] for kind in service.resources}
    missing = [kind for kind, found in candidates.items() if not found]
    if missing:
        raise ValidationFailed(f"{location.slug} has no {', '.join(missing)} for {service.code}")
    duration = dt.timedelta(minutes=service.duration_minutes or DEFAULT_DURATION_MINUTES)
    return _Need(location, service, duration, candidates)


def _taken(
    session: Session, need: _Need, start: dt.datetime, end: dt.datetime
) -> set[tuple[str, dt.datetime]]:
    ids = [r.id for found in need.candidates.values() for r in found]
    if not ids:
        return set()
    rows = session.execute(
        select(_bookings.c.resource_id, _bookings.c.slot_start).where(
            _bookings.c.resource_id.in_(ids), _bookings.c.slot_start >= start, _bookings.c.slot_start < end
        )
    )
    return {(resource_id, slot) for resource_id, slot in rows}


def _fit(need: _Need, start: dt.datetime, taken: set[tuple[str, dt.datetime]]) -> list[Resource] | None:
    """One free resource per kind for ``[start, start + duration)`` (each resource once), or None."""
    end = start + need.duration
    zone = ZoneInfo(need.location.timezone or "UTC")
    slots = list(slots_of(start, end))
    chosen: list[Resource] = []
    for found in need.candidates.values():
        free = next(
            (
                r
                for r in found
                if r not in chosen
                and _within_hours(r, start, end, zone)
                and not any((r.id, slot) in taken for slot in slots)
            ),
            None,
        )
        if free is None:
            return None
        chosen.append(free)
    return chosen


@dataclass(frozen=True)
class Offer:
    slots: list[Slot]
    unavailable: str | None = None  # why there can be none (a resource kind the location lacks)


def availability(
    db: Database,
    service_code: str,
    location_slug: str,
    start: dt.datetime,
    end: dt.datetime,
    scope: LocationScope,
    limit: int = 50,
) -> Offer:
    """Bookable starts (every ``OFFER_EVERY_MINUTES``) in ``[start, end)`` (at most ``MAX_WINDOW``
    of it) for the service at the location, each with the resources it would take; at most
    ``limit``."""
    end = min(end, start + MAX_WINDOW)
    with db.sessions() as session:
        location, service = _place(session, location_slug, service_code, scope)
        try:
            need = _need_for(session, location, service)
        except ValidationFailed as exc:
            return Offer([], exc.detail)
        taken = _taken(session, need, start, end + need.duration)
    found: list[Slot] = []
    at = _round_up(max(start, utcnow()), OFFER_EVERY_MINUTES)
    while at + need.duration <= end and len(found) < limit:
        chosen = _fit(need, at, taken)
        if chosen is not None:
            found.append(Slot(at, at + need.duration, tuple(r.code for r in chosen)))
        at += dt.timedelta(minutes=OFFER_EVERY_MINUTES)
    return Offer(found)


def _round_up(moment: dt.datetime, minutes: int) -> dt.datetime:
    base = moment.replace(second=0, microsecond=0)
    extra = (-base.minute) % minutes
    if extra == 0 and base < moment:
        extra = minutes
    return base + dt.timedelta(minutes=extra)


def appointment_view(appointment: Appointment) -> dict[str, Any]:
    return {
        "id": appointment.id,
        "case_id": appointment.case_id,
        "starts_at": appointment.starts_at.isoformat(),
        "ends_at": appointment.ends_at.isoformat(),
        "status": appointment.status,
        "resources": list(appointment.resource_codes),
        "source": appointment.source,
        "external_id": appointment.external_id,
    }


def book(
    db: Database, case_id: str, starts_at: dt.datetime, *, actor: str, scope: LocationScope
) -> dict[str, Any]:
    """Book the case's service at ``starts_at`` with free resources; the case becomes ``scheduled``.

    409 when the case is not ready to schedule, or no resource of a needed kind is free then (also
    when a concurrent booking took the slot first); 422 for a start off the slot grid.
    """
    if starts_at.tzinfo is None or not _aligned(starts_at, SLOT_MINUTES):
        raise ValidationFailed(f"a start is a time with its zone on a {SLOT_MINUTES}-minute boundary")
    try:
        with db.transaction() as session:
            case = find(session, ServiceCase, case_id, for_update=True)
            if case is None or not scope.allows(case.location_id):
                raise NotFound("no case with this id")
            if case.status != CaseStatus.READY_TO_SCHEDULE:
                raise Conflict(f"the case is {case.status}, not ready_to_schedule", case_status=case.status)
            location = session.get(Location, case.location_id)
            service = session.get(Service, case.service_id)
            assert location is not None and service is not None
            need = _need_for(session, location, service)
            chosen = _fit(need, starts_at, _taken(session, need, starts_at, starts_at + need.duration))
            if chosen is None:
                raise Conflict("no free resources of every kind the service needs at that time")
            appointment = Appointment(
                id=new_id(),
                case_id=case.id,
                location_id=location.id,
                service_id=service.id,
                starts_at=starts_at,
                ends_at=starts_at + need.duration,
                status="confirmed",
                resource_codes=[r.code for r in chosen],
            )
            session.add(appointment)
            session.flush()
            rows = [
                {"resource_id": r.id, "slot_start": slot, "appointment_id": appointment.id}
                for r in chosen
                for slot in slots_of(starts_at, starts_at + need.duration)
            ]
            session.execute(insert(_bookings), rows)
            transition(session, case, CaseAction.SCHEDULE, actor=actor, reason_code="appointment_booked")
            record_events(session, appointment_event(EventType.APPOINTMENT_BOOKED, appointment, case, actor))
            check_validity(session, case, starts_at.astimezone(ZoneInfo(location.timezone or "UTC")).date())
            return appointment_view(appointment)
    except IntegrityError as exc:
        raise Conflict("the slot was taken by another booking a moment ago; choose another") from exc


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
    """Cancel, record a no-show or complete a confirmed appointment, and move its case to match
    (cancel and no-show free the resources and put the case back to ``ready_to_schedule``)."""
    status, action, event_type, release = _ENDINGS[ending]
    with db.transaction() as session:
        appointment = find(session, Appointment, appointment_id, for_update=True)
        if appointment is None or not scope.allows(appointment.location_id):
            raise NotFound("no appointment with this id")
        if appointment.status != "confirmed":
            raise Conflict(f"the appointment is {appointment.status}", appointment_status=appointment.status)
        case = session.get(ServiceCase, appointment.case_id)
        assert case is not None
        appointment.status = status
        appointment.updated_at = utcnow()
        if release:
            session.execute(delete(_bookings).where(_bookings.c.appointment_id == appointment.id))
        more: dict[str, Any] = {"reason": reason[:500]} if reason else {}
        if case.status == CaseStatus.SCHEDULED:
            if action is CaseAction.COMPLETE and awaiting_result(session, case):
                more["awaiting_result"] = True  # completed when its result comes
            else:
                transition(session, case, action, actor=actor, reason_code=f"appointment_{status}")
        record_events(session, appointment_event(event_type, appointment, case, actor, **more))
        if case.status == CaseStatus.COMPLETED:
            check_readiness(session, case, actor=actor)
        return appointment_view(appointment)


def first_free(db: Database, case_id: str, scope: LocationScope, days: int = 14) -> Slot | None:
    """The earliest bookable slot for the case's service at its location in the next ``days``."""
    with db.sessions() as session:
        case = find(session, ServiceCase, case_id)
        if case is None or not scope.allows(case.location_id):
            raise NotFound("no case with this id")
        location = session.get(Location, case.location_id)
        service = session.get(Service, case.service_id)
        assert location is not None and service is not None
        slug, code = location.slug, service.code
    now = utcnow()
    found = availability(db, code, slug, now, now + dt.timedelta(days=days), scope, limit=1).slots
    return found[0] if found else None


def board(
    db: Database, location_slug: str, first_day: dt.date, days: int, scope: LocationScope
) -> dict[str, Any]:
    """A location's appointments from ``first_day`` for ``days`` days (its local days), per
    resource: each live resource with the appointments that take it, and those booked elsewhere
    (HL7) that take none, in start order."""
    with db.sessions() as session:
        location = session.scalars(select(Location).where(Location.slug == location_slug)).first()
        if location is None or not scope.allows(location.id):
            raise NotFound(f"no location {location_slug!r} among yours")
        zone = ZoneInfo(location.timezone or "UTC")
        start = dt.datetime.combine(first_day, dt.time(), zone).astimezone(dt.UTC)
        end = dt.datetime.combine(first_day + dt.timedelta(days=days), dt.time(), zone).astimezone(dt.UTC)
        resources = session.scalars(
            select(Resource)
            .where(Resource.location == location.slug, Resource.retired_at.is_(None))
            .order_by(Resource.code)
        ).all()
        appointments = session.scalars(
            select(Appointment)
            .where(
                Appointment.location_id == location.id,
                Appointment.starts_at >= start,
                Appointment.starts_at < end,
                Appointment.status.in_(("confirmed", "completed", "no_show")),
            )
            .order_by(Appointment.starts_at)
        ).all()
        views = [appointment_view(a) for a in appointments]
        rows = [
            {
                "code": r.code,
                "name": r.name,
                "kinds": list(r.kinds),
                "appointments": [v for v in views if r.code in v["resources"]],
            }
            for r in resources
        ]
        return {
            "location": location.slug,
            "timezone": location.timezone or "UTC",
            "from": first_day.isoformat(),
            "days": days,
            "resources": rows,
            "elsewhere": [v for v in views if not v["resources"]],
        }
