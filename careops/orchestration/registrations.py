"""What other systems tell us about patients and appointments (HL7 ADT and SIU), recorded once.

Like a referral, every message becomes an intake item (its idempotency record) in the transaction
that applies it; what cannot be applied (an unknown location, an appointment for no known case)
becomes an exception item for a human, never a silent drop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from careops.db import Database
from careops.domain.cases import CaseAction, CaseStatus, transition
from careops.domain.encryption import keys_of
from careops.domain.events import Event, EventType, record_events
from careops.domain.models import ExceptionItem, Patient, ServiceCase, new_id
from careops.domain.patients import find_or_register
from careops.domain.reference import LocationRef
from careops.domain.referrals import PatientIn, ReferralIn, normalise_code
from careops.orchestration.intake import (
    CatalogueCache,
    IntakeAnswer,
    IntakeRequest,
    answer_once,
    check_location,
    evaluate,
    insert_item,
    intake_exception,
    intake_item_row,
    received_event,
)
from careops.settings import Settings

# Cases an external scheduler's appointment can belong to, most likely first.
_SCHEDULABLE = (CaseStatus.READY_TO_SCHEDULE, CaseStatus.SCHEDULED, CaseStatus.AWAITING_AUTHORISATION)


@dataclass
class AppointmentNotice:
    """An appointment booked, modified or cancelled in another system (HL7 SIU)."""

    event: str  # booked | modified | cancelled
    service_code: str | None
    start: str | None
    placer_id: str | None
    filler_id: str | None


def record_patient(
    db: Database,
    request: IntakeRequest,
    patient_in: PatientIn,
    location: str | None,
    event: str,
    settings: Settings,
    catalogue: CatalogueCache,
) -> IntakeAnswer:
    """Register or update a patient from a registration message; ``event`` is registered|updated."""
    referral_in = ReferralIn(location=location, patient=patient_in)
    evaluation = evaluate(catalogue.get(db), referral_in, settings)
    place = evaluation.references.location
    check_location(request.scope, place)
    place_id = place.id if place else None
    # A registration names no service; every other reason stands.
    reasons = [reason for reason in evaluation.reasons if reason != "missing_field:service_code"]
    normalised = referral_in.model_dump(mode="json", exclude_none=True)

    def write() -> IntakeAnswer:
        with db.transaction() as session:
            connection = session.connection()
            item_id = new_id()
            context = request.context
            if reasons or place is None:  # (no place is always a reason: the check is for mypy)
                answer, exception_row = intake_exception(item_id, place_id, reasons, request)
                row = intake_item_row(request, item_id, answer, reasons, normalised, place_id)
                insert_item(connection, row, exception_row)
            else:
                patient_id, _ = find_or_register(connection, place.organisation_id, evaluation.referral)
                body = {"outcome": "patient_recorded", "intake_item_id": item_id, "patient_id": patient_id}
                recorded = Event(
                    EventType.PATIENT_REGISTERED if event == "registered" else EventType.PATIENT_UPDATED,
                    subject_type="patient",
                    subject_id=patient_id,
                    location_id=place.id,
                    payload={"channel": request.channel, "intake_item_id": item_id},
                    **context,
                )
                answer = IntakeAnswer(200, body, [recorded])
                insert_item(connection, intake_item_row(request, item_id, answer, [], normalised, place.id))
            record_events(connection, received_event(request, item_id, place_id), *answer.events)
            return answer

    return answer_once(db, request, write)


def record_appointment(
    db: Database,
    request: IntakeRequest,
    patient_in: PatientIn,
    location: str | None,
    notice: AppointmentNotice,
    catalogue: CatalogueCache,
) -> IntakeAnswer:
    """Put an external appointment on its case: booked schedules a case that is ready to schedule.

    The case is the patient's most recent open case for the service (at the location, when the
    message names one); without one, or after a cancellation, a human gets an exception item.
    """
    snapshot = catalogue.get(db)
    place = snapshot.locations.get(location or "")
    check_location(request.scope, place)
    place_id = place.id if place else None
    normalised = {"patient": patient_in.model_dump(exclude_none=True), "appointment": notice.__dict__}

    def write() -> IntakeAnswer:
        with db.transaction() as session:
            connection = session.connection()
            item_id = new_id()
            case = _appointment_case(session, patient_in, notice, place, snapshot.services)
            if case is None:
                reasons = ["unmatched_appointment"]
                answer, exception_row = intake_exception(item_id, place_id, reasons, request)
                row = intake_item_row(request, item_id, answer, reasons, normalised, None)
                insert_item(connection, row, exception_row)
                record_events(connection, received_event(request, item_id, place_id), *answer.events)
                return answer
            answer = _apply_notice(session, case, notice, item_id, request)
            row = intake_item_row(request, item_id, answer, [], normalised, case.location_id)
            insert_item(connection, row)
            record_events(connection, received_event(request, item_id, place_id), *answer.events)
            return answer

    return answer_once(db, request, write)


def _apply_notice(
    session: Session, case: ServiceCase, notice: AppointmentNotice, item_id: str, request: IntakeRequest
) -> IntakeAnswer:
    actor = request.principal_id
    if notice.event == "booked" and case.status == CaseStatus.READY_TO_SCHEDULE:
        transition(session, case, CaseAction.SCHEDULE, actor=actor, reason_code="external_appointment")
    payload = {key: value for key, value in notice.__dict__.items() if value is not None and key != "event"}
    event_type = {
        "booked": EventType.APPOINTMENT_BOOKED,
        "modified": EventType.APPOINTMENT_MODIFIED,
        "cancelled": EventType.APPOINTMENT_CANCELLED,
    }[notice.event]
    events = [Event.about_case(event_type, case, actor=actor, payload={**payload, "intake_item_id": item_id})]
    body: dict[str, Any] = {
        "outcome": "appointment_recorded",
        "intake_item_id": item_id,
        "case_id": case.id,
        "case_status": case.status,
        "links": {"case": f"/api/v1/cases/{case.id}"},
    }
    if notice.event == "cancelled":
        # The case stays where it is; someone has to book it again or cancel it.
        exception = ExceptionItem(
            id=new_id(),
            queue="scheduling",
            status="open",
            reason_codes=["appointment_cancelled"],
            case_id=case.id,
            location_id=case.location_id,
        )
        session.add(exception)
        session.flush()
        events.append(
            Event.about_exception(
                EventType.EXCEPTION_OPENED,
                exception,
                actor=actor,
                payload={"reason_codes": exception.reason_codes},
            )
        )
        body["exception_id"] = exception.id
    return IntakeAnswer(200, body, events)


def _appointment_case(
    session: Session,
    patient_in: PatientIn,
    notice: AppointmentNotice,
    place: LocationRef | None,
    services: dict[tuple[str, str], Any],
) -> ServiceCase | None:
    if not patient_in.mrn:
        return None
    query = (
        select(ServiceCase)
        .join(Patient, Patient.id == ServiceCase.patient_id)
        .where(
            Patient.mrn_index == keys_of(session.get_bind().dialect).blind_index(patient_in.mrn),
            ServiceCase.status.in_([str(s) for s in _SCHEDULABLE]),
        )
        .order_by(ServiceCase.created_at.desc())
    )
    if place is not None:
        query = query.where(ServiceCase.location_id == place.id)
        service = services.get((place.organisation_id, normalise_code(notice.service_code) or ""))
        if service is not None:
            query = query.where(ServiceCase.service_id == service.id)
    return session.scalars(query.limit(1)).first()
