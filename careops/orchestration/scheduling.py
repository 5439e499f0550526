"""Scheduling: when a service can be booked at a location, with which resources.

A service needs one resource of each kind its ``resources`` name (an MRI scanner and a
radiographer), free, within working hours and not closed for the whole time it holds them: its
preparation time before the start, then its duration. A member of staff is taken only for a
service a credential of theirs names, valid that day; for a home visit (a service with
``home_visit``) only if their visits just before and after, in another zone, leave the location's
``travel_minutes`` between them. Bookings take the resources' slots (``SLOT_MINUTES`` each) in
``resource_booking``, whose primary key is the invariant that no resource is taken twice (and
whose trigger refuses staff without the credential): ``appointments`` books, moves and ends them.
"""

from __future__ import annotations

import datetime as dt
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, Select, String, cast, func, insert, or_, select, type_coerce
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from careops.db import Database
from careops.domain.master_data import WEEKDAYS, closed_on
from careops.domain.models import (
    Appointment,
    Base,
    Location,
    Resource,
    ResourceBooking,
    Service,
    ServiceCase,
    find,
    utcnow,
)
from careops.errors import NotFound, ValidationFailed
from careops.governance.scoping import LocationScope
from careops.orchestration.locations import location_named

SLOT_MINUTES = 5
OFFER_EVERY_MINUTES = 15  # how far apart the starts availability offers are
DEFAULT_DURATION_MINUTES = 30
MAX_WINDOW = dt.timedelta(days=31)
LONGEST = dt.timedelta(days=1)  # no appointment lasts longer (bounds the searches for neighbours)
_bookings = Base.metadata.tables[ResourceBooking.__tablename__]
SLOT = dt.timedelta(minutes=SLOT_MINUTES)
# A staff member's home visits near a start: (start, end, zone) per resource id.
Visits = dict[str, list[tuple[dt.datetime, dt.datetime, str | None]]]
# What the candidates are booked for: per resource id, the starts and ends of its spans, in order.
Busy = dict[str, tuple[list[dt.datetime], list[dt.datetime]]]


@dataclass(frozen=True)
class Slot:
    starts_at: dt.datetime
    ends_at: dt.datetime
    resources: tuple[str, ...]  # resource codes, one per kind the service needs


@dataclass(frozen=True)
class Need:
    """What a booking at one place needs: how long it holds its resources (preparation, then the
    duration) and, per kind, the candidate resources (staff already narrowed to the credentialed)."""

    location: Location
    service: Service
    duration: dt.timedelta
    preparation: dt.timedelta
    candidates: dict[str, list[Resource]]
    zone: str | None = None  # a home visit's
    visits: Visits = field(default_factory=dict)
    memo: dict[tuple[Any, ...], Any] = field(default_factory=dict)  # per resource and day

    def held(self, start: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
        """The span the resources are held for an appointment starting at ``start``."""
        return start - self.preparation, start + self.duration


def slots_of(start: dt.datetime, end: dt.datetime) -> Iterator[dt.datetime]:
    """The booking slots ``[start, end)`` covers (``start`` on a slot boundary)."""
    at = start
    while at < end:
        yield at
        at += dt.timedelta(minutes=SLOT_MINUTES)


def hold(
    session: Session, appointment_id: str, resource_ids: list[str], start: dt.datetime, end: dt.datetime
) -> None:
    """Take the resources' slots over ``[start, end)`` for the appointment (one insert; a slot
    already taken fails it: the primary key is the invariant)."""
    rows = [
        {"resource_id": resource_id, "slot_start": slot, "appointment_id": appointment_id}
        for resource_id in resource_ids
        for slot in slots_of(start, end)
    ]
    session.execute(insert(_bookings), rows)


def aligned(moment: dt.datetime, minutes: int = SLOT_MINUTES) -> bool:
    return moment.second == 0 and moment.microsecond == 0 and moment.minute % minutes == 0


def _open_spans(need: Need, resource: Resource, day: dt.date) -> list[tuple[dt.datetime, dt.datetime]]:
    """The resource's working spans on a local day (none when it or the location is closed), as
    UTC times; worked out once per resource and day for the need."""
    key = (resource.id, day)
    spans = need.memo.get(key)
    if spans is None:
        spans = []
        if not closed_on(resource.closures, day) and not closed_on(need.location.closures, day):
            zone = ZoneInfo(need.location.timezone or "UTC")
            for span in resource.hours.get(WEEKDAYS[day.weekday()], []):
                begin, finish = (int(span[0:2]), int(span[3:5])), (int(span[6:8]), int(span[9:11]))
                opens = dt.datetime.combine(day, dt.time(*begin), zone)
                closes = dt.datetime.combine(day, dt.time(), zone) + dt.timedelta(
                    hours=finish[0], minutes=finish[1]
                )
                spans.append((opens.astimezone(dt.UTC), closes.astimezone(dt.UTC)))
        need.memo[key] = spans
    return spans


def _within_hours(need: Need, resource: Resource, day: dt.date, start: dt.datetime, end: dt.datetime) -> bool:
    """Whether ``[start, end)`` falls inside one of the resource's working spans of that local day."""
    return any(opens <= start and end <= closes for opens, closes in _open_spans(need, resource, day))


def _credentialed_on(need: Need, resource: Resource, day: dt.date) -> bool:
    key = (resource.id, day, "credential")
    allowed = need.memo.get(key)
    if allowed is None:
        allowed = need.memo[key] = credentialed(resource, need.service.code, day)
    return bool(allowed)


def credentialed(resource: Resource, service_code: str, day: dt.date) -> bool:
    """Whether a resource may deliver the service that day: not staff, or a credential of theirs
    names it and is valid then (the rule the database's booking trigger keeps too)."""
    if not resource.staff:
        return True
    for credential in resource.credentials:
        starts = dt.date.fromisoformat(credential["valid_from"]) if credential.get("valid_from") else None
        ends = dt.date.fromisoformat(credential["expires"]) if credential.get("expires") else None
        if (
            service_code in credential.get("services", [])
            and (starts is None or starts <= day)
            and (ends is None or day <= ends)
        ):
            return True
    return False


def works_at(session: Session, slug: str) -> ColumnElement[bool]:
    """Resources of the location: based there, or staff assigned to it too (``also_at``; on
    PostgreSQL a containment its GIN index answers)."""
    if session.get_bind().dialect.name == "postgresql":
        also = type_coerce(Resource.also_at, JSONB).contains([slug])
    else:
        also = cast(Resource.also_at, String).like(f'%"{slug}"%')
    return or_(Resource.location == slug, also)


def find_place(
    session: Session, location_slug: str, service_code: str, scope: LocationScope
) -> tuple[Location, Service]:
    location = location_named(session, location_slug, scope)
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


def need_for(session: Session, location: Location, service: Service, zone: str | None = None) -> Need:
    """What booking the service at the location takes; 422 when the location lacks a kind of
    resource it needs, or a home visit names no zone."""
    if service.home_visit and not zone:
        raise ValidationFailed(f"{service.code} is a home visit: name the address zone")
    resources = session.scalars(
        select(Resource)
        .where(works_at(session, location.slug), Resource.retired_at.is_(None))
        .order_by(Resource.code)
    ).all()
    candidates = {kind: [r for r in resources if kind in r.kinds] for kind in service.resources}
    missing = [kind for kind, found in candidates.items() if not found]
    if missing:
        raise ValidationFailed(f"{location.slug} has no {', '.join(missing)} for {service.code}")
    duration = dt.timedelta(minutes=service.duration_minutes or DEFAULT_DURATION_MINUTES)
    preparation = dt.timedelta(minutes=service.preparation_minutes or 0)
    return Need(location, service, duration, preparation, candidates, zone if service.home_visit else None)


def bookings_query(
    ids: list[str], start: dt.datetime, end: dt.datetime
) -> Select[str, dt.datetime, dt.datetime]:
    """Per resource and appointment, the first and last slot it holds in ``[start, end)``: an
    appointment's slots of one resource are consecutive, so this is its span, in a row."""
    return (
        select(_bookings.c.resource_id, func.min(_bookings.c.slot_start), func.max(_bookings.c.slot_start))
        .where(
            _bookings.c.resource_id.in_(ids), _bookings.c.slot_start >= start, _bookings.c.slot_start < end
        )
        .group_by(_bookings.c.resource_id, _bookings.c.appointment_id)
    )


def taken(session: Session, need: Need, start: dt.datetime, end: dt.datetime) -> Busy:
    """The spans the candidates are already booked for in ``[start, end)``, per resource in order."""
    ids = [r.id for found in need.candidates.values() for r in found]
    spans: dict[str, list[tuple[dt.datetime, dt.datetime]]] = {}
    if ids:
        for resource_id, first, last in session.execute(bookings_query(ids, start, end)):
            spans.setdefault(resource_id, []).append((first, last + SLOT))
    busy: Busy = {}
    for resource_id, found in spans.items():
        found.sort()
        busy[resource_id] = ([a for a, _ in found], [b for _, b in found])
    return busy


def _free(busy: Busy, resource: Resource, start: dt.datetime, end: dt.datetime) -> bool:
    """Whether none of the resource's booked spans overlaps ``[start, end)`` (they never overlap
    each other, so the one starting last before ``end`` is the only one that can)."""
    spans = busy.get(resource.id)
    if spans is None:
        return True
    starts, ends = spans
    before = bisect_left(starts, end)
    return before == 0 or ends[before - 1] <= start


def with_visits(session: Session, need: Need, start: dt.datetime, end: dt.datetime) -> Need:
    """For a home visit: the need with the staff's other home visits around ``[start, end)``."""
    if need.zone is None:
        return need
    margin = dt.timedelta(minutes=need.location.travel_minutes)
    staff = {r.code: r.id for found in need.candidates.values() for r in found if r.staff}
    rows = session.scalars(
        select(Appointment).where(
            Appointment.location_id == need.location.id,
            Appointment.zone.is_not(None),
            Appointment.status.in_(("proposed", "confirmed")),
            Appointment.starts_at < end + margin,
            Appointment.starts_at > start - margin - LONGEST,
            Appointment.ends_at > start - margin,
        )
    ).all()
    visits: Visits = {}
    for visit in rows:
        for code in visit.resource_codes:
            if code in staff:
                visits.setdefault(staff[code], []).append((visit.starts_at, visit.ends_at, visit.zone))
    return Need(
        need.location, need.service, need.duration, need.preparation, need.candidates, need.zone, visits
    )


def _travels(need: Need, resource: Resource, start: dt.datetime, end: dt.datetime) -> bool:
    """Whether the staff member can reach this visit from their others (and leave for the next)."""
    margin = dt.timedelta(minutes=need.location.travel_minutes)
    return all(
        zone == need.zone or other_end + margin <= start or end + margin <= other_start
        for other_start, other_end, zone in need.visits.get(resource.id, [])
    )


# Why a resource cannot be taken (``why_not``'s answers), as a person reads them.
REASONS = {
    "hours": "off hours or closed that day",
    "credential": "no valid credential for the service that day",
    "booked": "booked then",
    "travel": "no travel time from a visit in another zone",
}


def why_not(need: Need, resource: Resource, start: dt.datetime, busy: Busy) -> str | None:
    """Why the resource cannot be taken for an appointment at ``start`` (a key of ``REASONS``:
    off hours, no valid credential that day, booked for part of the time it is held or, for a
    home visit, no time to travel to it), or None when it can."""
    held_from, end = need.held(start)
    day = start.astimezone(ZoneInfo(need.location.timezone or "UTC")).date()
    if not _within_hours(need, resource, day, held_from, end):
        return "hours"
    if not _credentialed_on(need, resource, day):
        return "credential"
    if not _free(busy, resource, held_from, end):
        return "booked"
    if need.zone is not None and resource.staff and not _travels(need, resource, start, end):
        return "travel"
    return None


def fit(need: Need, start: dt.datetime, busy: Busy) -> list[Resource] | None:
    """One free resource per kind for an appointment at ``start`` (each resource once), or None."""
    chosen: list[Resource] = []
    for found in need.candidates.values():
        free = next((r for r in found if r not in chosen and why_not(need, r, start, busy) is None), None)
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
    zone: str | None = None,
) -> Offer:
    """Bookable starts (every ``OFFER_EVERY_MINUTES``) in ``[start, end)`` (at most ``MAX_WINDOW``
    of it) for the service at the location (a home visit: in ``zone``), each with the resources
    it would take; at most ``limit``."""
    end = min(end, start + MAX_WINDOW)
    with db.sessions() as session:
        location, service = find_place(session, location_slug, service_code, scope)
        try:
            need = need_for(session, location, service, zone)
        except ValidationFailed as exc:
            return Offer([], exc.detail)
        busy = taken(session, need, start - need.preparation, end + need.duration)
        need = with_visits(session, need, start, end)
    found: list[Slot] = []
    at = _round_up(max(start, utcnow()), OFFER_EVERY_MINUTES)
    while at + need.duration <= end and len(found) < limit:
        chosen = fit(need, at, busy)
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


def appointment_view(appointment: Appointment) -> dict[str, Any]:
    return {
        "id": appointment.id,
        "case_id": appointment.case_id,
        "starts_at": appointment.starts_at.isoformat(),
        "ends_at": appointment.ends_at.isoformat(),
        "status": appointment.status,
        "resources": list(appointment.resource_codes),
        "zone": appointment.zone,
        "source": appointment.source,
        "external_id": appointment.external_id,
    }


def board(
    db: Database, location_slug: str, first_day: dt.date, days: int, scope: LocationScope
) -> dict[str, Any]:
    """A location's appointments from ``first_day`` for ``days`` days (its local days), per
    resource: each live resource with the appointments that take it, and those booked elsewhere
    (HL7) that take none, in start order."""
    with db.sessions() as session:
        location = location_named(session, location_slug, scope, live=False)
        zone = ZoneInfo(location.timezone or "UTC")
        start = dt.datetime.combine(first_day, dt.time(), zone).astimezone(dt.UTC)
        end = dt.datetime.combine(first_day + dt.timedelta(days=days), dt.time(), zone).astimezone(dt.UTC)
        resources = session.scalars(
            select(Resource)
            .where(works_at(session, location.slug), Resource.retired_at.is_(None))
            .order_by(Resource.code)
        ).all()
        appointments = session.scalars(
            select(Appointment)
            .where(
                Appointment.location_id == location.id,
                Appointment.starts_at >= start,
                Appointment.starts_at < end,
                Appointment.status.in_(("proposed", "confirmed", "completed", "no_show")),
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
