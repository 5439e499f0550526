"""Results and reports (HL7 ORU^R01, FHIR DiagnosticReport): matched to their case, kept as a
document, and what completes a case whose service needs one.

A result names its case by the sender's order number, else by patient, service and the open
cases they have. A matched result writes ``result.received``; when the case's appointment is
already completed, the case is completed with it and its billing readiness is checked. A result
that matches no case is kept all the same (a result record without a case, its report a document
of its intake item) and waits in the ``results`` queue until a person matches it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from careops.db import Database
from careops.domain.cases import CaseAction, CaseStatus, transition
from careops.domain.events import Event, EventType, record_events
from careops.domain.models import (
    Appointment,
    Base,
    Document,
    ExceptionItem,
    IntakeItem,
    Result,
    Service,
    ServiceCase,
    find,
    new_id,
)
from careops.domain.referrals import PatientIn
from careops.errors import Conflict, NotFound
from careops.governance.scoping import LocationScope
from careops.orchestration.billing import check_readiness
from careops.orchestration.exception_queue import close_exception_item
from careops.orchestration.intake import CatalogueCache, IntakeAnswer, IntakeRequest
from careops.orchestration.registrations import CaseMessage, apply_to_case, case_body, timestamp

RESULTS_QUEUE = "results"
UNMATCHED = "unmatched_result"
# Cases a result can be for: booked or done (a result may come before the appointment is closed).
_RESULTABLE = (CaseStatus.SCHEDULED, CaseStatus.COMPLETED, CaseStatus.BILLING_READY, CaseStatus.INVOICED)


@dataclass(frozen=True)
class ResultNotice:
    """A result as a channel read it: the orders it answers, service, status, time and report."""

    order_numbers: tuple[str, ...]
    service_code: str | None
    status: str  # final | preliminary | corrected | cancelled
    observed_at: str | None
    report: str
    report_type: str = "text/plain"


def record_result(
    db: Database,
    request: IntakeRequest,
    patient_in: PatientIn,
    location: str | None,
    notice: ResultNotice,
    catalogue: CatalogueCache,
) -> IntakeAnswer:
    """Keep the result and its report, on its case if one matches, else in the results queue."""
    message = CaseMessage(notice.order_numbers, patient_in, notice.service_code, location, _RESULTABLE)
    normalised = {
        "patient": patient_in.model_dump(exclude_none=True),
        "result": {k: v for k, v in notice.__dict__.items() if k != "report"},
    }

    def records(item_id: str, case: ServiceCase | None, matched_by: str | None) -> tuple[Result, Document]:
        content = notice.report.encode()
        document = Document(
            id=new_id(),
            intake_item_id=item_id,
            filename=f"report-{item_id}.txt",
            content_type=notice.report_type,
            size_bytes=len(content),
            sha256=hashlib.sha256(content).hexdigest(),
            content=content,
            text=notice.report,
            kind="report",
        )
        result = Result(
            id=new_id(),
            case_id=case.id if case else None,
            intake_item_id=item_id,
            document_id=document.id,
            location_id=case.location_id if case else None,
            order_number=notice.order_numbers[0] if notice.order_numbers else None,
            service_code=notice.service_code,
            status=notice.status,
            matched_by=matched_by,
            observed_at=timestamp(notice.observed_at),
        )
        return result, document

    def apply(session: Session, case: ServiceCase, item_id: str) -> tuple[IntakeAnswer, list[Base]]:
        matched_by = "order_number" if case.order_number in notice.order_numbers else "patient"
        result, document = records(item_id, case, matched_by)
        body = case_body("result_recorded", case, item_id, result_id=result.id)
        return IntakeAnswer(200, body, [_received(case, result, request.principal_id)]), [document, result]

    def keep(item_id: str) -> list[Base]:
        result, document = records(item_id, None, None)
        return [document, result]

    return apply_to_case(
        db,
        request,
        message,
        normalised,
        catalogue,
        apply,
        (UNMATCHED, RESULTS_QUEUE),
        keep,
        after=lambda session, case: complete_with(session, case, request.principal_id),
    )


def _received(case: ServiceCase, result: Result, actor: str) -> Event:
    payload = {"result_id": result.id, "status": result.status, "matched_by": result.matched_by}
    return Event.about_case_record(
        EventType.RESULT_RECEIVED, "result", result.id, case, actor=actor, payload=payload
    )


def complete_with(session: Session, case: ServiceCase, actor: str) -> None:
    """In the caller's transaction, once the case has its result: complete a case whose
    appointment already is, then check its billing readiness."""
    if (
        case.status == CaseStatus.SCHEDULED
        and _appointment_done(session, case)
        and not awaiting_result(session, case)
    ):
        transition(session, case, CaseAction.COMPLETE, actor=actor, reason_code="result_received")
        check_readiness(session, case, actor=actor)


def _appointment_done(session: Session, case: ServiceCase) -> bool:
    return (
        session.scalars(
            select(Appointment.id).where(Appointment.case_id == case.id, Appointment.status == "completed")
        ).first()
        is not None
    )


def awaiting_result(session: Session, case: ServiceCase) -> bool:
    """Whether the case's service completes only with a result and it has no final one yet."""
    service = session.get(Service, case.service_id)
    if service is None or not service.requires_result:
        return False
    final = session.scalars(
        select(Result.id).where(Result.case_id == case.id, Result.status.in_(("final", "corrected")))
    ).first()
    return final is None


def result_view(result: Result) -> dict[str, Any]:
    return {
        "id": result.id,
        "case_id": result.case_id,
        "status": result.status,
        "service_code": result.service_code,
        "matched_by": result.matched_by,
        "observed_at": result.observed_at.isoformat() if result.observed_at else None,
        "received_at": result.created_at.isoformat(),
        "links": {"document": f"/api/v1/documents/{result.document_id}/content"},
    }


def list_results(
    db: Database, *, unmatched: bool, scope: LocationScope, limit: int = 100
) -> list[dict[str, Any]]:
    """Results, newest first; ``unmatched``: only those waiting for a case (at the reader's
    locations, or at no known location)."""
    with db.sessions() as session:
        query = select(Result).order_by(Result.id.desc()).limit(limit)
        if unmatched:
            query = query.where(Result.case_id.is_(None))
        rows = session.scalars(query).all()
        return [result_view(r) for r in rows if r.location_id is None or scope.allows(r.location_id)]


def case_results(session: Session, case_id: str) -> list[dict[str, Any]]:
    rows = session.scalars(select(Result).where(Result.case_id == case_id).order_by(Result.created_at))
    return [result_view(r) for r in rows]


def match_result(
    db: Database, result_id: str, case_id: str, *, actor: str, scope: LocationScope
) -> dict[str, Any]:
    """A person puts an unmatched result on its case: ``result.received`` is written then, and its
    results-queue item is closed."""
    with db.transaction() as session:
        result = find(session, Result, result_id, for_update=True)
        if result is None or (result.location_id is not None and not scope.allows(result.location_id)):
            raise NotFound("no result with this id")
        if result.case_id is not None:
            raise Conflict("this result is already on a case", case_id=result.case_id)
        case = find(session, ServiceCase, case_id, for_update=True)
        if case is None or not scope.allows(case.location_id):
            raise NotFound("no case with this id")
        if case.status not in _RESULTABLE:
            raise Conflict(
                f"the case is {case.status}: a result is for a scheduled or completed case",
                case_status=case.status,
            )
        result.case_id, result.location_id, result.matched_by = case.id, case.location_id, "person"
        item = session.get(IntakeItem, result.intake_item_id)
        if item is not None:
            item.case_id = case.id
        session.flush()
        record_events(session, _received(case, result, actor))
        complete_with(session, case, actor)
        waiting = session.scalars(
            select(ExceptionItem).where(
                ExceptionItem.intake_item_id == result.intake_item_id, ExceptionItem.status == "open"
            )
        ).first()
        if waiting is not None:
            waiting.case_id = case.id
            close_exception_item(session, waiting, "result_matched", actor=actor)
        return result_view(result)
