"""Staffing conflicts: reported, answered with ranked candidates, resolved by a reassignment.

A conflict names a member of staff who cannot do some of their visits (sickness, a vehicle
failure, an overlap, a credential expired): the open careops appointments they hold in a shift,
in a time span, or named one by one. It opens an item in the ``staffing`` queue.

A candidate can take every affected visit: staff working at the location (based there or
``also_at`` it), with every role (resource kind) the absent member fills in them, on hours,
credentialed for each visit's service that day, free for the time each is held, able to travel
to each from their other home visits (the location's ``travel_minutes`` between zones), and
within their contracted ``weekly_hours`` in every week the visits fall in.

Candidates are ranked by a score out of 100: 50 x continuity (the share of the affected cases
they have been booked for before) + 30 x travel (per visit: 1 when they have another visit in
the same zone that day, 0.5 when they have none that day, 0 when they would come from another
zone; averaged) + 20 x hours balance (the share of their contracted week still free after the
visits; 0.5 without a contract). Ties go to the code's order.

Reassigning moves the visits' staff slots from the absent member to the chosen one in one
transaction: the slots' primary key refuses a double booking, the booking trigger a missing
credential, and the location's row lock serialises travel checks, so two supervisors choosing
the same person for overlapping visits end with one reassignment and one 409.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ScalarSelect, delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, load_only

from careops.db import Database
from careops.domain.events import Event, EventType, record_events
from careops.domain.models import (
    Appointment,
    Base,
    Location,
    Resource,
    ResourceBooking,
    Service,
    ServiceCase,
    find,
    is_id,
    new_id,
    utcnow,
)
from careops.domain.staffing import Shift, StaffConflict
from careops.errors import Conflict, NotFound, ValidationFailed
from careops.governance.scoping import EVERYWHERE, LocationScope
from careops.orchestration.appointments import OPEN, refused
from careops.orchestration.exception_queue import close_item_under, open_exception
from careops.orchestration.locations import lock_location
from careops.orchestration.scheduling import (
    LONGEST,
    REASONS,
    SLOT,
    Busy,
    Need,
    Visits,
    appointment_view,
    hold,
    why_not,
    works_at,
)
from careops.orchestration.service_plans import staff_member

_bookings = Base.metadata.tables[ResourceBooking.__tablename__]
QUEUE = "staffing"
# What judging a candidate reads of them (their other locations and the like stay unloaded).
JUDGED = (Resource.code, Resource.name, Resource.kinds, Resource.hours, Resource.closures, Resource.staff,
          Resource.credentials, Resource.weekly_hours)  # fmt: skip
MAX_VISITS = 200
WeekSlots = dict[tuple[str, dt.date], int]  # slots booked per resource id and week (its Monday)


@dataclass(frozen=True)
class Affected:
    """The visits a conflict is about, with what each asks of whoever takes it over."""

    location: Location
    absent: Resource
    visits: list[Appointment]
    needs: list[Need]  # per visit: its service, times and zone
    roles: set[str]  # the roles (resource kinds) the absent member fills in them


@dataclass
class Candidate:
    resource: Resource
    continuity: float = 0.0
    travel: float = 0.0
    balance: float = 0.5
    booked_minutes: dict[str, int] = field(default_factory=dict)  # per ISO week

    @property
    def score(self) -> int:
        return round(100 * (0.5 * self.continuity + 0.3 * self.travel + 0.2 * self.balance))

    def view(self) -> dict[str, Any]:
        return {
            "staff": self.resource.code,
            "name": self.resource.name,
            "score": self.score,
            "continuity": round(self.continuity, 2),
            "travel": round(self.travel, 2),
            "hours_balance": round(self.balance, 2),
            "weekly_hours": self.resource.weekly_hours,
            "booked_minutes": self.booked_minutes,
        }


def _open_visits_of(
    session: Session, staff: Resource, start: dt.datetime, end: dt.datetime
) -> list[Appointment]:
    """The open careops appointments that hold the member of staff in ``[start, end)``."""
    ids = select(_bookings.c.appointment_id).where(
        _bookings.c.resource_id == staff.id, _bookings.c.slot_start >= start, _bookings.c.slot_start < end
    )
    return list(
        session.scalars(
            select(Appointment)
            .where(Appointment.id.in_(ids), Appointment.status.in_(OPEN), Appointment.source == "careops")
            .order_by(Appointment.starts_at)
        ).all()
    )


def _affected(session: Session, location: Location, absent: Resource, visits: list[Appointment]) -> Affected:
    """What each visit needs of a replacement: the role the absent member fills in it."""
    services = {
        s.id: s
        for s in session.scalars(select(Service).where(Service.id.in_({v.service_id for v in visits})))
    }
    needs, roles = [], set()
    for visit in visits:
        service = services[visit.service_id]
        role = next((kind for kind in service.resources if kind in absent.kinds), None)
        if role is None:
            raise Conflict(f"{absent.code} fills no role {service.code} needs")
        roles.add(role)
        held = visit.starts_at - (visit.held_from or visit.starts_at)
        needs.append(Need(location, service, visit.ends_at - visit.starts_at, held, {}, visit.zone))
    return Affected(location, absent, visits, needs, roles)


def _monday(moment: dt.datetime, timezone: str) -> dt.date:
    """The Monday of the location's week ``moment`` falls in."""
    day = moment.astimezone(ZoneInfo(timezone or "UTC")).date()
    return day - dt.timedelta(days=day.weekday())


def _week_bounds(monday: dt.date, timezone: str) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.combine(monday, dt.time(), ZoneInfo(timezone or "UTC")).astimezone(dt.UTC)
    return start, start + dt.timedelta(days=7)


def rank(
    session: Session, affected: Affected, only: str | None = None
) -> tuple[list[Candidate], dict[str, str]]:
    """The candidates who can take every affected visit, best first, and why each other member of
    staff at the location cannot (by code). ``only``: judge just that member of staff."""
    location, visits = affected.location, affected.visits
    roles = affected.roles
    query = (
        select(Resource)
        .options(load_only(*JUDGED))
        .where(
            Resource.staff.is_(True),
            Resource.retired_at.is_(None),
            Resource.id != affected.absent.id,
            works_at(session, location.slug),
        )
    )
    if only is not None:
        query = query.where(Resource.code == only)
    staff = [r for r in session.scalars(query.order_by(Resource.code)) if roles <= set(r.kinds)]
    rejected: dict[str, str] = {}
    if not staff:
        return [], rejected
    # The bookings below are those of the query's staff, named by the query itself (a subquery,
    # not a list of ids to bind): those without the roles cost a few rows, not a long statement.
    among = query.with_only_columns(Resource.id).scalar_subquery()
    bookings = _bookings_of(session, affected, among)
    memo: dict[str, dict[tuple[Any, ...], Any]] = defaultdict(dict)  # per service code
    judged = [replace(need, visits=bookings.visits, memo=memo[need.service.code]) for need in affected.needs]
    alive: list[Resource] = []
    for resource in staff:
        for visit, need in zip(visits, judged, strict=True):
            reason = why_not(need, resource, visit.starts_at, bookings.busy)
            if reason is not None:
                rejected[resource.code] = f"{REASONS[reason]} ({visit.starts_at.isoformat()})"
                break
        else:
            alive.append(resource)
    candidates = _within_hours(affected, alive, bookings.slots, rejected)
    _score(session, affected, candidates, bookings.visits, among)
    candidates.sort(key=lambda c: (-c.score, c.resource.code))
    return candidates, rejected


@dataclass(frozen=True)
class Bookings:
    """What the candidates are booked for around the affected visits."""

    busy: Busy  # the spans they are held, per resource id (half a day around the visits)
    visits: Visits  # their open home visits then, per resource id
    slots: WeekSlots


def _bookings_of(session: Session, affected: Affected, staff: ScalarSelect[str]) -> Bookings:
    """The staff's booked slots per week of the visits (one query), what they are held for half a
    day around the visits (another) and, of that, their open home visits (a third, by primary
    key: joined, the planner would scan every appointment)."""
    timezone = affected.location.timezone
    first = min(v.held_from or v.starts_at for v in affected.visits)
    last = max(v.ends_at for v in affected.visits)
    slot = _bookings.c.slot_start
    slots: WeekSlots = {}
    for week in {_monday(v.starts_at, timezone) for v in affected.visits}:
        begin, finish = _week_bounds(week, timezone)
        counted = session.execute(
            select(_bookings.c.resource_id, func.count())
            .where(_bookings.c.resource_id.in_(staff), slot >= begin, slot < finish)
            .group_by(_bookings.c.resource_id)
        )
        slots.update({(resource_id, week): count for resource_id, count in counted})
    held = session.execute(
        select(_bookings.c.resource_id, _bookings.c.appointment_id, func.min(slot), func.max(slot))
        .where(_bookings.c.resource_id.in_(staff), slot >= first - LONGEST / 2, slot < last + LONGEST / 2)
        .group_by(_bookings.c.resource_id, _bookings.c.appointment_id)
    ).all()
    nearby = session.execute(
        select(Appointment.id, Appointment.starts_at, Appointment.ends_at, Appointment.zone).where(
            Appointment.id.in_({appointment_id for _, appointment_id, *_ in held}),
            Appointment.zone.is_not(None),
            Appointment.status.in_(OPEN),
        )
    )
    zoned = {row.id: row for row in nearby}
    spans: dict[str, list[tuple[dt.datetime, dt.datetime]]] = defaultdict(list)
    visits: Visits = defaultdict(list)
    for resource_id, appointment_id, held_first, held_last in held:
        spans[resource_id].append((held_first, held_last + SLOT))
        if appointment_id in zoned:
            visit = zoned[appointment_id]
            visits[resource_id].append((visit.starts_at, visit.ends_at, visit.zone))
    busy: Busy = {}
    for resource_id, found in spans.items():
        found.sort()
        busy[resource_id] = ([a for a, _ in found], [b for _, b in found])
    return Bookings(busy, dict(visits), slots)


def _within_hours(
    affected: Affected,
    staff: list[Resource],
    booked: dict[tuple[str, dt.date], int],
    rejected: dict[str, str],
) -> list[Candidate]:
    """The staff whose contracted week leaves room for the visits, with their booked minutes."""
    timezone = affected.location.timezone
    adding: dict[dt.date, int] = defaultdict(int)
    for visit in affected.visits:
        adding[_monday(visit.starts_at, timezone)] += (
            visit.ends_at - (visit.held_from or visit.starts_at)
        ) // SLOT
    minutes = int(SLOT.total_seconds() // 60)
    found = []
    for resource in staff:
        candidate = Candidate(resource)
        share = []
        for week, slots in adding.items():
            used = (booked.get((resource.id, week), 0) + slots) * minutes
            year, number, _ = week.isocalendar()
            candidate.booked_minutes[f"{year}-W{number:02d}"] = booked.get((resource.id, week), 0) * minutes
            if resource.weekly_hours is not None:
                share.append(1 - used / (resource.weekly_hours * 60) if resource.weekly_hours else -1.0)
        if any(s < 0 for s in share):
            rejected[resource.code] = f"over the contracted {resource.weekly_hours} hours a week"
            continue
        candidate.balance = min(share) if share else 0.5
        found.append(candidate)
    return found


def _score(
    session: Session,
    affected: Affected,
    candidates: list[Candidate],
    nearby: dict[str, list[Any]],
    among: ScalarSelect[str],
) -> None:
    """Fill in each candidate's continuity and travel (see the module's docstring)."""
    if not candidates:
        return
    cases = {v.case_id for v in affected.visits}
    served = session.execute(
        select(_bookings.c.resource_id, Appointment.case_id)
        .join(Appointment, Appointment.id == _bookings.c.appointment_id)
        .where(Appointment.case_id.in_(cases), _bookings.c.resource_id.in_(among))
        .distinct()
    ).all()
    seen: dict[str, set[str]] = defaultdict(set)
    for resource_id, case_id in served:
        seen[resource_id].add(case_id)
    zone = ZoneInfo(affected.location.timezone or "UTC")
    for candidate in candidates:
        candidate.continuity = len(seen[candidate.resource.id]) / len(cases)
        points = []
        theirs = nearby.get(candidate.resource.id, [])
        for visit in affected.visits:
            day = visit.starts_at.astimezone(zone).date()
            zones = {z for start, _end, z in theirs if start.astimezone(zone).date() == day}
            points.append(1.0 if visit.zone in zones else 0.0 if zones else 0.5)
        candidate.travel = sum(points) / len(points)


def conflict_view(conflict: StaffConflict, staff: str, visits: list[Appointment]) -> dict[str, Any]:
    return {
        "id": conflict.id,
        "staff": staff,
        "kind": conflict.kind,
        "status": conflict.status,
        "shift_id": conflict.shift_id,
        "note": conflict.note,
        "reassigned_to": conflict.reassigned_to,
        "reported_by": conflict.reported_by,
        "created_at": conflict.created_at.isoformat(),
        "visits": [appointment_view(v) for v in visits],
    }


@dataclass(frozen=True)
class ConflictReport:
    staff: str
    kind: str
    shift_id: str | None = None
    appointment_ids: tuple[str, ...] = ()
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    day: dt.date | None = None  # the whole day, in the time zone of the staff member's location
    note: str | None = None


def _reported_visits(
    session: Session, report: ConflictReport, staff: Resource
) -> tuple[list[Appointment], str | None]:
    """The visits a report names, and its shift's location id: one by one, a shift's, or a span's."""
    if report.appointment_ids:
        visits = [find(session, Appointment, i) for i in report.appointment_ids]
        wrong = [
            i
            for i, v in zip(report.appointment_ids, visits, strict=True)
            if v is None or staff.code not in v.resource_codes or v.status not in OPEN
        ]
        if wrong:
            raise Conflict(f"not an open appointment of {staff.code}: {', '.join(wrong)}")
        return sorted((v for v in visits if v is not None), key=lambda v: v.starts_at), None
    if report.shift_id is not None:
        shift = find(session, Shift, report.shift_id)
        if shift is None or shift.resource_id != staff.id:
            raise NotFound(f"no shift of {staff.code} with this id")
        return _open_visits_of(session, staff, shift.starts_at, shift.ends_at), shift.location_id
    if report.day is not None:
        zone = ZoneInfo(
            session.scalars(select(Location.timezone).where(Location.slug == staff.location)).first() or "UTC"
        )
        start = dt.datetime.combine(report.day, dt.time(), zone)
        return _open_visits_of(
            session, staff, start.astimezone(dt.UTC), (start + dt.timedelta(days=1)).astimezone(dt.UTC)
        ), None
    if report.start is None or report.end is None or report.end <= report.start:
        raise ValidationFailed(
            "name the visits: appointment ids, a shift, a day, or a span from a start to a later end"
        )
    return _open_visits_of(
        session, staff, report.start, min(report.end, report.start + dt.timedelta(days=31))
    ), None


def _not_in_open_conflict(
    session: Session, staff: Resource, location_id: str, visits: list[Appointment]
) -> None:
    """409 when an open conflict of the member of staff already covers one of the visits."""
    ids = {v.id for v in visits}
    for conflict in session.scalars(
        select(StaffConflict).where(
            StaffConflict.location_id == location_id,
            StaffConflict.status == "open",
            StaffConflict.resource_id == staff.id,
        )
    ):
        if ids & set(conflict.appointment_ids):
            raise Conflict("an open conflict already covers some of these visits", conflict_id=conflict.id)


def report_conflict(
    db: Database, report: ConflictReport, *, actor: str, scope: LocationScope
) -> dict[str, Any]:
    """Record a staffing conflict over the visits the report names (all at one location) and open
    its item in the ``staffing`` queue. 404 for unknown staff or shift; 409 when it names no open
    visit of theirs, or visits at several locations."""
    with db.transaction() as session:
        staff = staff_member(session, report.staff)
        visits, shift_location = _reported_visits(session, report, staff)
        if not visits:
            raise Conflict(f"{staff.code} holds no open visit there: nothing to reassign")
        locations = {v.location_id for v in visits}
        if len(locations) > 1:
            raise Conflict("the visits are at several locations: report one conflict per location")
        if len(visits) > MAX_VISITS:
            raise Conflict(f"more than {MAX_VISITS} visits: report shorter spans")
        location_id = locations.pop()
        if not scope.allows(location_id) or (shift_location is not None and not scope.allows(shift_location)):
            raise NotFound(f"no member of staff {staff.code!r} at your locations")
        _not_in_open_conflict(session, staff, location_id, visits)
        location = session.get(Location, location_id)
        assert location is not None
        _affected(session, location, staff, visits)  # each visit has a role they fill
        conflict = StaffConflict(
            id=new_id(),
            resource_id=staff.id,
            location_id=location_id,
            kind=report.kind,
            shift_id=report.shift_id,
            appointment_ids=[v.id for v in visits],
            note=report.note,
            status="open",
            reported_by=actor,
        )
        session.add(conflict)
        session.flush()
        open_exception(
            session, QUEUE, [f"staff_conflict:{report.kind}"], actor=actor, location_id=location_id,
            dedupe_key=f"staff_conflict:{conflict.id}",
        )  # fmt: skip
        payload = {"staff": staff.code, "kind": report.kind, "visits": len(visits)}
        record_events(session, _event(EventType.STAFF_CONFLICT_REPORTED, conflict, actor, payload))
        return conflict_view(conflict, staff.code, visits)


def _load(
    session: Session, conflict_id: str, scope: LocationScope, lock: bool = False
) -> tuple[StaffConflict, Resource, Location]:
    """The conflict (locked with ``lock``), its absent member of staff and its location, in one query."""
    query = (
        select(StaffConflict, Resource, Location)
        .join(Resource, Resource.id == StaffConflict.resource_id)
        .join(Location, Location.id == StaffConflict.location_id)
        .where(StaffConflict.id == conflict_id)
    )
    found = (
        session.execute(query.with_for_update(of=StaffConflict) if lock else query).first()
        if is_id(conflict_id)
        else None
    )
    if found is None or not scope.allows(found[0].location_id):
        raise NotFound("no staffing conflict with this id")
    return found[0], found[1], found[2]


def _still_theirs(
    session: Session, conflict: StaffConflict, absent: Resource, lock: bool = False
) -> list[Appointment]:
    """The conflict's visits that are still open and still take the absent member of staff."""
    query = (
        select(Appointment)
        .where(Appointment.id.in_(conflict.appointment_ids))
        .order_by(Appointment.starts_at)
    )
    if lock:
        query = query.with_for_update()
    return [v for v in session.scalars(query) if v.status in OPEN and absent.code in v.resource_codes]


def candidates(db: Database, conflict_id: str, scope: LocationScope, limit: int = 10) -> dict[str, Any]:
    """The conflict with its best ``limit`` candidates and why the others cannot take it."""
    with db.sessions() as session:
        return candidates_in(session, conflict_id, limit, scope)


def candidates_in(
    session: Session, conflict_id: str, limit: int = 10, scope: LocationScope = EVERYWHERE
) -> dict[str, Any]:
    """``candidates`` in the caller's session (a workflow's proposal)."""
    conflict, absent, location = _load(session, conflict_id, scope)
    visits = _still_theirs(session, conflict, absent)
    view = conflict_view(conflict, absent.code, visits)
    if conflict.status != "open" or not visits:
        return {**view, "candidates": [], "unavailable": {}}
    found, rejected = rank(session, _affected(session, location, absent, visits))
    return {**view, "candidates": [c.view() for c in found[:limit]], "unavailable": rejected}


def reassign(
    db: Database, conflict_id: str, staff_code: str, *, actor: str, scope: LocationScope
) -> dict[str, Any]:
    """Give the conflict's visits to ``staff_code`` in one transaction, with ``staff.reassigned``
    for each and the conflict resolved. 409 when the conflict is closed, or they cannot take
    every visit (the reason given), or another reassignment took them a moment before."""
    try:
        with db.transaction() as session:
            conflict, absent, location = _load(session, conflict_id, scope, lock=True)
            if conflict.status != "open":
                raise Conflict(f"the conflict is {conflict.status}")
            lock_location(session, location.id)
            visits = _still_theirs(session, conflict, absent, lock=True)
            if visits:
                found, rejected = rank(session, _affected(session, location, absent, visits), only=staff_code)
                if not found:
                    staff_member(session, staff_code)  # 404 for nobody by that code
                    why = rejected.get(staff_code, "another role, or not at this location")
                    raise Conflict(f"{staff_code} cannot take these visits: {why}")
                _move(session, visits, absent, found[0].resource, conflict, actor)
            conflict.status, conflict.reassigned_to = "resolved", staff_code
            conflict.resolved_by, conflict.resolved_at = actor, utcnow()
            _close(session, conflict, f"reassigned to {staff_code}", actor)
            return conflict_view(conflict, absent.code, visits)
    except IntegrityError as exc:
        raise refused(exc) from exc


def _move(
    session: Session,
    visits: list[Appointment],
    absent: Resource,
    chosen: Resource,
    conflict: StaffConflict,
    actor: str,
) -> None:
    events = []
    for visit in visits:
        session.execute(
            delete(_bookings).where(
                _bookings.c.appointment_id == visit.id, _bookings.c.resource_id == absent.id
            )
        )
        hold(session, visit.id, [chosen.id], visit.held_from or visit.starts_at, visit.ends_at)
        visit.resource_codes = [chosen.code if code == absent.code else code for code in visit.resource_codes]
        visit.updated_at = utcnow()
        case = session.get(ServiceCase, visit.case_id)
        assert case is not None
        payload = {
            "appointment_id": visit.id,
            "starts_at": visit.starts_at.isoformat(),
            "from": absent.code,
            "to": chosen.code,
            "conflict_id": conflict.id,
        }
        events.append(
            Event.about_case_record(
                EventType.STAFF_REASSIGNED, "appointment", visit.id, case, actor=actor, payload=payload
            )
        )
    session.flush()
    record_events(session, *events)


def _close(session: Session, conflict: StaffConflict, outcome: str, actor: str) -> None:
    close_item_under(session, f"staff_conflict:{conflict.id}", outcome, actor=actor)
    payload = {"status": conflict.status, "outcome": outcome}
    record_events(session, _event(EventType.STAFF_CONFLICT_CLOSED, conflict, actor, payload))


def _event(kind: EventType, conflict: StaffConflict, actor: str, payload: dict[str, Any]) -> Event:
    return Event(
        kind, "staff_conflict", conflict.id, actor, location_id=conflict.location_id, payload=payload
    )


def withdraw(
    db: Database, conflict_id: str, *, actor: str, scope: LocationScope, reason: str = ""
) -> dict[str, Any]:
    """Close an open conflict without a reassignment (the member of staff is back after all)."""
    with db.transaction() as session:
        conflict, absent, _location = _load(session, conflict_id, scope, lock=True)
        if conflict.status != "open":
            raise Conflict(f"the conflict is {conflict.status}")
        conflict.status, conflict.resolved_by, conflict.resolved_at = "withdrawn", actor, utcnow()
        _close(session, conflict, f"withdrawn{': ' + reason[:200] if reason else ''}", actor)
        return conflict_view(conflict, absent.code, _still_theirs(session, conflict, absent))


def open_conflicts(
    db: Database, scope: LocationScope, location_slug: str | None = None
) -> list[dict[str, Any]]:
    """The open conflicts at the caller's locations (or one of them), oldest first."""
    with db.sessions() as session:
        query = (
            select(StaffConflict, Resource.code, Location.slug)
            .join(Resource, Resource.id == StaffConflict.resource_id)
            .join(Location, Location.id == StaffConflict.location_id)
            .where(StaffConflict.status == "open")
            .order_by(StaffConflict.created_at)
        )
        if location_slug is not None:
            query = query.where(Location.slug == location_slug)
        rows = session.execute(scope.restrict(query, StaffConflict.location_id)).all()
        return [
            {**conflict_view(conflict, code, []), "location": slug, "visits": len(conflict.appointment_ids)}
            for conflict, code, slug in rows
        ]
