"""Reading and moving service cases: the services behind /api/v1/cases."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from careops.db import Database
from careops.domain.cases import CaseAction, CaseStatus, allowed_actions, transition
from careops.domain.events import Event, EventType, record_events
from careops.domain.models import BusinessEvent, Location, Service, ServiceCase
from careops.errors import NotFound
from careops.governance.scoping import LocationScope

MAX_PAGE = 200


@dataclass
class CaseFilter:
    status: CaseStatus | None = None
    location: str | None = None
    service: str | None = None
    created_from: dt.datetime | None = None
    created_to: dt.datetime | None = None


def case_summary(case: ServiceCase) -> dict[str, Any]:
    return {
        "id": case.id,
        "status": case.status,
        "priority": case.priority,
        "location_id": case.location_id,
        "service_id": case.service_id,
        "patient_id": case.patient_id,
        "referrer_id": case.referrer_id,
        "payer_id": case.payer_id,
        "created_at": case.created_at.isoformat(),
        "updated_at": case.updated_at.isoformat(),
        "allowed_actions": [str(a) for a in allowed_actions(CaseStatus(case.status))],
    }


def event_view(event: BusinessEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "type": event.type,
        "occurred_at": event.occurred_at.isoformat(),
        "actor": event.actor,
        "payload": event.payload,
    }


def _load(session: Session, case_id: str, scope: LocationScope) -> ServiceCase:
    case = session.get(ServiceCase, case_id)
    if case is None:
        raise NotFound("no case with this id")
    scope.check(case.location_id, "case")
    return case


def get_case(db: Database, case_id: str, scope: LocationScope) -> dict[str, Any]:
    """A case with its timeline: every business event about it, oldest first."""
    with db.sessions() as session:
        case = _load(session, case_id, scope)
        events = session.scalars(
            select(BusinessEvent).where(BusinessEvent.case_id == case_id).order_by(BusinessEvent.id)
        ).all()
        return {**case_summary(case), "timeline": [event_view(e) for e in events]}


def list_cases(
    db: Database, filters: CaseFilter, cursor: str | None, limit: int, scope: LocationScope
) -> dict[str, Any]:
    """One page of the cases in scope, newest first; ``next_cursor`` continues after the last one."""
    limit = max(1, min(limit, MAX_PAGE))
    query = scope.restrict(select(ServiceCase), ServiceCase.location_id)
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
    return {
        "items": [case_summary(c) for c in page],
        "next_cursor": page[-1].id if len(rows) > limit else None,
    }


def transition_case(
    db: Database,
    case_id: str,
    action: CaseAction,
    *,
    actor: str,
    reason_code: str | None,
    scope: LocationScope,
) -> dict[str, Any]:
    with db.transaction() as session:
        case = _load(session, case_id, scope)
        transition(session, case, action, actor=actor, reason_code=reason_code)
        return case_summary(case)


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
