"""Reading and moving service cases: the services behind /api/v1/cases."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload

from careops.db import Database
from careops.domain.cases import BY_RECORD, CaseAction, CaseStatus, allowed_actions, transition
from careops.domain.events import Event, EventType, record_events
from careops.domain.models import Appointment, BusinessEvent, Location, Patient, Service, ServiceCase, find
from careops.domain.phi import phi_fields
from careops.errors import Conflict, InvalidTransition, NotFound
from careops.governance.masking import CLEAR, MaskingPolicy
from careops.governance.phi_access import checked_reason, record_phi_read, record_reveal
from careops.governance.principal import Principal
from careops.governance.scoping import LocationScope
from careops.orchestration.authorisations import case_authorisations
from careops.orchestration.billing import case_invoices
from careops.orchestration.results import case_results
from careops.orchestration.scheduling import appointment_view

MAX_PAGE = 200


@dataclass
class CaseFilter:
    status: CaseStatus | None = None
    location: str | None = None
    service: str | None = None
    created_from: dt.datetime | None = None
    created_to: dt.datetime | None = None


PATIENT_PHI = phi_fields(Patient)
CASE_PHI = phi_fields(ServiceCase)


PATIENT_KEYS = ("id", "mrn", "given_name", "family_name", "birth_date", "sex", "phone", "email")


def patient_view(patient: Patient, masking: MaskingPolicy) -> dict[str, Any]:
    return masking.project(patient, PATIENT_KEYS, PATIENT_PHI)


CASE_KEYS = (
    "id",
    "status",
    "priority",
    "location_id",
    "service_id",
    "patient_id",
    "referrer_id",
    "payer_id",
    "member_id",
    "order_number",
)


def case_summary(case: ServiceCase, masking: MaskingPolicy) -> dict[str, Any]:
    """The case as its reader may see it: PHI masked by the reader's policy."""
    summary = masking.project(case, CASE_KEYS, CASE_PHI)
    summary["created_at"] = case.created_at.isoformat()
    summary["updated_at"] = case.updated_at.isoformat()
    summary["allowed_actions"] = [
        str(a) for a in allowed_actions(CaseStatus(case.status)) if a not in BY_RECORD
    ]
    summary["patient"] = patient_view(case.patient, masking)
    return summary


def event_view(event: BusinessEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "type": event.type,
        "occurred_at": event.occurred_at.isoformat(),
        "actor": event.actor,
        "correlation_id": event.correlation_id,
        "payload": event.payload,
    }


def _load(session: Session, case_id: str, scope: LocationScope) -> ServiceCase:
    case = find(session, ServiceCase, case_id)
    if case is None:
        raise NotFound("no case with this id")
    scope.check(case.location_id, "case")
    return case


def get_case(db: Database, case_id: str, reader: Principal) -> dict[str, Any]:
    """A case with its timeline: every business event about it, oldest first. Audited as
    ``phi.read`` when the reader sees any of its PHI in clear."""
    with db.sessions() as session:
        view = _detail(session, _load(session, case_id, reader.scope), reader.masking)
    record_phi_read(db, reader, "case", [view])
    return view


def _detail(session: Session, case: ServiceCase, masking: MaskingPolicy) -> dict[str, Any]:
    events = session.scalars(
        select(BusinessEvent).where(BusinessEvent.case_id == case.id).order_by(BusinessEvent.id)
    ).all()
    appointments = session.scalars(
        select(Appointment).where(Appointment.case_id == case.id).order_by(Appointment.starts_at)
    ).all()
    return {
        **case_summary(case, masking),
        "timeline": [event_view(e) for e in events],
        "appointments": [appointment_view(a) for a in appointments],
        "authorisations": case_authorisations(session, case.id),
        "results": case_results(session, case.id),
        "invoices": case_invoices(session, case.id),
        "diagnosis_codes": list(case.diagnosis_codes),
    }


def reveal_case(db: Database, case_id: str, reason: str, reader: Principal) -> dict[str, Any]:
    """The case with its PHI in clear, for a reader with ``phi:reveal`` who says why (audited)."""
    reason = checked_reason(reason)
    with db.transaction() as session:
        case = _load(session, case_id, reader.scope)
        masked = case_summary(case, reader.masking)
        fields = masked.get("masked", []) + [f"patient.{f}" for f in masked["patient"].get("masked", [])]
        record_reveal(session, reader, case.id, case.location_id, reason, fields)
        session.flush()
        return {**_detail(session, case, CLEAR), "revealed": fields}


def list_cases(
    db: Database, filters: CaseFilter, cursor: str | None, limit: int, reader: Principal
) -> dict[str, Any]:
    """One page of the cases in the reader's scope, newest first, masked by the reader's policy;
    ``next_cursor`` continues after the last one."""
    limit = max(1, min(limit, MAX_PAGE))
    query = reader.scope.restrict(
        select(ServiceCase).options(joinedload(ServiceCase.patient)), ServiceCase.location_id
    )
    if filters.status:
        query = query.where(ServiceCase.status == str(filters.status))
    if filters.location:
        query = query.join(Location, Location.id == ServiceCase.location_id).where(
            Location.slug == filters.location.lower()
        )
    if filters.service:
        query = query.join(Service, Service.id == ServiceCase.service_id).where(
            Service.code == filters.service.upper()
        )
    if filters.created_from:
        query = query.where(ServiceCase.created_at >= filters.created_from)
    if filters.created_to:
        query = query.where(ServiceCase.created_at < filters.created_to)
    if cursor:
        query = query.where(ServiceCase.id < cursor)
    with db.sessions() as session:
        rows = session.scalars(query.order_by(ServiceCase.id.desc()).limit(limit + 1)).all()
        page = rows[:limit]
        items = [case_summary(c, reader.masking) for c in page]
    record_phi_read(db, reader, "case", items)
    return {"items": items, "next_cursor": page[-1].id if len(rows) > limit else None}


EXPORT_COLUMNS = (
    "id", "status", "priority", "location_id", "service_id", "created_at", "member_id",
    "patient.mrn", "patient.given_name", "patient.family_name", "patient.birth_date",
)  # fmt: skip
MAX_EXPORT = 10_000


def _export_row(case: dict[str, Any]) -> dict[str, Any]:
    patient = case["patient"]
    return {c: patient.get(c[8:]) if c.startswith("patient.") else case.get(c) for c in EXPORT_COLUMNS}


def export_cases(db: Database, filters: CaseFilter, reader: Principal, limit: int) -> list[dict[str, Any]]:
    """Rows for an export: the cases in the reader's scope, masked by its policy, newest first.
    Audited as ``cases.exported`` (how many, with which filters); PHI in clear also as ``phi.read``."""
    rows: list[dict[str, Any]] = []
    cursor = None
    while len(rows) < limit:
        page = list_cases(db, filters, cursor, min(MAX_PAGE, limit - len(rows)), reader)
        rows += [_export_row(case) for case in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    filters_used = {k: str(v) for k, v in vars(filters).items() if v is not None}
    payload = {"rows": len(rows), "filters": filters_used}
    event = Event(EventType.CASES_EXPORTED, "principal", reader.id, actor=reader.id, payload=payload)
    with db.transaction() as session:
        record_events(session, event)
    return rows


def transition_case(
    db: Database, case_id: str, action: CaseAction, *, by: Principal, reason_code: str | None
) -> dict[str, Any]:
    """Move a case by hand; scheduling and completing go through its appointment instead."""
    if action in BY_RECORD:
        raise Conflict(
            f"a case is not moved by {action} by hand: book, cancel or complete its appointment "
            "(POST /api/v1/appointments, /api/v1/appointments/{id}/cancel|no_show|complete), "
            "record its prior authorisation (POST /api/v1/cases/{id}/authorisations), check its "
            "billing readiness (POST /api/v1/cases/{id}/billing-readiness) or send its invoice "
            "(POST /api/v1/invoices/{id}/send)",
            allowed=[],
        )
    with db.transaction() as session:
        case = _load(session, case_id, by.scope)
        try:
            transition(session, case, action, actor=by.id, reason_code=reason_code)
        except InvalidTransition as exc:  # name only what may be done by hand
            exc.extra["allowed"] = [a for a in exc.extra.get("allowed", []) if a not in BY_RECORD]
            raise
        return case_summary(case, by.masking)


def record_triage(
    db: Database, case_id: str, urgency: str, *, actor: str, scope: LocationScope
) -> dict[str, Any]:
    """Record a triage decision; the case's triage wait finds it at its deadline and stands down."""
    with db.transaction() as session:
        case = _load(session, case_id, scope)
        case.priority = urgency
        record_events(
            session, Event.about_case(EventType.CASE_TRIAGED, case, actor=actor, payload={"urgency": urgency})
        )
        return {"case_id": case.id, "urgency": urgency}
