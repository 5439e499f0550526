"""Prior authorisations: a case waiting for one (``awaiting_authorisation``) gets it requested from
its payer, and leaves that status only when one is approved; a denial leaves it waiting (request
again, or cancel the case). Booking an appointment after the approval's validity opens an exception
item for a person to renew it. Each step writes its event in the transaction of the change.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from careops.db import Database
from careops.domain.cases import CaseAction, CaseStatus, transition
from careops.domain.events import Event, EventType, record_events
from careops.domain.models import PriorAuthorisation, ServiceCase, find, new_id, utcnow
from careops.errors import Conflict, NotFound, ValidationFailed
from careops.governance.scoping import LocationScope
from careops.orchestration.exception_queue import open_exception

AUTHORISATION_QUEUE = "authorisation"
EXPIRES_BEFORE_APPOINTMENT = "authorisation_expires_before_appointment"


def authorisation_view(record: PriorAuthorisation) -> dict[str, Any]:
    return {
        "id": record.id,
        "case_id": record.case_id,
        "status": record.status,
        "requested_units": record.requested_units,
        "approved_units": record.approved_units,
        "number": record.number,
        "valid_from": record.valid_from.isoformat() if record.valid_from else None,
        "valid_to": record.valid_to.isoformat() if record.valid_to else None,
    }


def _event(kind: EventType, record: PriorAuthorisation, case: ServiceCase, actor: str, **more: Any) -> Event:
    payload = {"authorisation_id": record.id, "status": record.status, **more}
    return Event.about_case_record(kind, "authorisation", record.id, case, actor=actor, payload=payload)


def request_authorisation(
    db: Database, case_id: str, units: int, *, actor: str, scope: LocationScope
) -> dict[str, Any]:
    """Ask the case's payer for an authorisation of its service (one open request at a time)."""
    if not 1 <= units <= 1000:
        raise ValidationFailed("units: 1 to 1000")
    with db.transaction() as session:
        case = find(session, ServiceCase, case_id, for_update=True)
        if case is None or not scope.allows(case.location_id):
            raise NotFound("no case with this id")
        if case.status != CaseStatus.AWAITING_AUTHORISATION:
            raise Conflict(f"the case is {case.status}, not awaiting_authorisation", case_status=case.status)
        open_request = session.scalars(
            select(PriorAuthorisation.id).where(
                PriorAuthorisation.case_id == case.id, PriorAuthorisation.status == "requested"
            )
        ).first()
        if open_request is not None:
            raise Conflict(
                "an authorisation of this case is already requested", authorisation_id=open_request
            )
        record = PriorAuthorisation(
            id=new_id(),
            case_id=case.id,
            payer_id=case.payer_id,
            service_id=case.service_id,
            status="requested",
            requested_units=units,
        )
        session.add(record)
        session.flush()
        record_events(session, _event(EventType.AUTHORISATION_REQUESTED, record, case, actor, units=units))
        return authorisation_view(record)


def decide_authorisation(
    db: Database,
    authorisation_id: str,
    *,
    approved: bool,
    actor: str,
    scope: LocationScope,
    number: str | None = None,
    valid_from: dt.date | None = None,
    valid_to: dt.date | None = None,
    units: int | None = None,
) -> dict[str, Any]:
    """Record the payer's answer. An approval needs its number and validity, and moves the case to
    ``ready_to_schedule``; a denial leaves the case waiting."""
    if approved and (not number or valid_from is None or valid_to is None or valid_to < valid_from):
        raise ValidationFailed(
            "an approval names its number, and a validity whose end is not before its start"
        )
    with db.transaction() as session:
        record = find(session, PriorAuthorisation, authorisation_id, for_update=True)
        case = session.get(ServiceCase, record.case_id) if record is not None else None
        if record is None or case is None or not scope.allows(case.location_id):
            raise NotFound("no authorisation with this id")
        if record.status != "requested":
            raise Conflict(f"the authorisation is {record.status}", authorisation_status=record.status)
        record.status = "approved" if approved else "denied"
        record.decided_by = actor[:100]
        record.updated_at = utcnow()
        if approved:
            record.number, record.valid_from, record.valid_to = number, valid_from, valid_to
            record.approved_units = units or record.requested_units
            if case.status == CaseStatus.AWAITING_AUTHORISATION:
                transition(
                    session, case, CaseAction.AUTHORISE, actor=actor, reason_code="authorisation_approved"
                )
        kind = EventType.AUTHORISATION_APPROVED if approved else EventType.AUTHORISATION_DENIED
        record_events(session, _event(kind, record, case, actor))
        return authorisation_view(record)


def check_validity(session: Session, case: ServiceCase, on: dt.date) -> None:
    """In the caller's transaction: an exception item when the case's approved authorisation is
    no longer valid on ``on`` (its appointment's date), for a person to renew it."""
    valid_to = session.scalars(
        select(PriorAuthorisation.valid_to)
        .where(PriorAuthorisation.case_id == case.id, PriorAuthorisation.status == "approved")
        .order_by(PriorAuthorisation.valid_to.desc())
    ).first()
    if valid_to is None or valid_to >= on:
        return
    open_exception(
        session,
        AUTHORISATION_QUEUE,
        [EXPIRES_BEFORE_APPOINTMENT],
        actor="scheduling",
        case=case,
        dedupe_key=f"{EXPIRES_BEFORE_APPOINTMENT}:{case.id}:{on.isoformat()}",
    )


def case_authorisations(session: Session, case_id: str) -> list[dict[str, Any]]:
    rows = session.scalars(
        select(PriorAuthorisation)
        .where(PriorAuthorisation.case_id == case_id)
        .order_by(PriorAuthorisation.created_at)
    )
    return [authorisation_view(r) for r in rows]


def expiring(
    db: Database, within_days: int, scope: LocationScope, today: dt.date | None = None
) -> list[dict[str, Any]]:
    """Approved authorisations of open cases whose validity ends in the next ``within_days`` days
    (or has ended while the case is still not billed), soonest first."""
    today = today or utcnow().date()
    with db.sessions() as session:
        rows = session.execute(
            select(PriorAuthorisation, ServiceCase.status, ServiceCase.location_id)
            .join(ServiceCase, ServiceCase.id == PriorAuthorisation.case_id)
            .where(
                PriorAuthorisation.status == "approved",
                PriorAuthorisation.valid_to <= today + dt.timedelta(days=within_days),
                ServiceCase.status.in_(("ready_to_schedule", "scheduled", "on_hold")),
            )
            .order_by(PriorAuthorisation.valid_to)
            .limit(500)
        ).all()
        return [
            {**authorisation_view(record), "case_status": status, "days_left": (record.valid_to - today).days}
            for record, status, location_id in rows
            if record.valid_to is not None and scope.allows(location_id)
        ]


EXPIRED = "authorisation_expired"


def expire_authorisations(db: Database, today: dt.date | None = None, batch: int = 500) -> int:
    """Approved authorisations whose validity has ended become ``expired`` (``authorisation.expired``);
    one of a case not yet delivered opens an item in the authorisation queue for a person to renew
    it. Up to ``batch`` in one transaction; how many (the worker runs it every hour)."""
    today = today or utcnow().date()
    with db.transaction() as session:
        rows = session.scalars(
            select(PriorAuthorisation)
            .where(PriorAuthorisation.status == "approved", PriorAuthorisation.valid_to < today)
            .order_by(PriorAuthorisation.valid_to)
            .limit(batch)
            .with_for_update(skip_locked=True)
        ).all()
        for record in rows:
            case = session.get(ServiceCase, record.case_id)
            assert case is not None
            record.status, record.updated_at = "expired", utcnow()
            record_events(session, _event(EventType.AUTHORISATION_EXPIRED, record, case, "careops"))
            if case.status in (CaseStatus.READY_TO_SCHEDULE, CaseStatus.SCHEDULED, CaseStatus.ON_HOLD):
                open_exception(
                    session, AUTHORISATION_QUEUE, [EXPIRED], actor="careops", case=case,
                    dedupe_key=f"{EXPIRED}:{record.id}",
                )  # fmt: skip
        return len(rows)
