"""What other systems tell us about patients, cases and appointments (HL7 ADT, SIU, ORU, DFT, REF
updates), recorded once.

Like a referral, every message becomes an intake item (its idempotency record) in the transaction
that applies it; what cannot be applied (an unknown location, a message for no known case) becomes
an exception item for a human, never a silent drop. ``apply_to_case`` is that pattern for every
message about a case: find the case (by the sender's order number, else by patient and service),
apply the message, or queue it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from careops.db import Database
from careops.domain.cases import CaseStatus
from careops.domain.encryption import keys_of
from careops.domain.events import Event, EventType, record_events
from careops.domain.models import Appointment, Base, Patient, ServiceCase, new_id
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

PATIENTS_QUEUE = "patients"

OPEN = tuple(s for s in CaseStatus if s not in (CaseStatus.CLOSED, CaseStatus.CANCELLED))


@dataclass(frozen=True)
class CaseMessage:
    """What a message about a case says to find it: the sender's order numbers, the patient (by
    MRN), the service code, where; and the statuses the case may be in."""

    order_numbers: Sequence[str]
    patient: PatientIn
    service_code: str | None
    location: str | None
    statuses: Sequence[str] = OPEN
    appointment: str | None = None  # the other system's appointment id (an SIU's)


# Applies a message to its case: the answer and the records to add once the item is written.
Apply = Callable[[Session, ServiceCase, str], tuple[IntakeAnswer, list[Base]]]
# For a message that matched no case: the reason, the queue, and records to keep all the same.
Unmatched = Callable[[str], list[Base]]


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


def _place(
    locations: dict[str, LocationRef], slug: str | None, request: IntakeRequest
) -> tuple[LocationRef | None, str | None]:
    """The location a message names (None if unknown) and its id, if the caller may write there."""
    place = locations.get(slug or "")
    check_location(request.scope, place)
    return place, place.id if place else None


def apply_to_case(
    db: Database,
    request: IntakeRequest,
    message: CaseMessage,
    normalised: dict[str, Any],
    catalogue: CatalogueCache,
    apply: Apply,
    unmatched: tuple[str, str],
    keep_unmatched: Unmatched | None = None,
    after: Callable[[Session, ServiceCase], object] | None = None,
) -> IntakeAnswer:
    """Write the message's intake item and apply it to its case, in one transaction; a message
    for no case becomes an exception item (``unmatched``: its reason code and queue).

    ``after`` runs last, once the records ``apply`` made are written (e.g. completing the case)."""
    snapshot = catalogue.get(db)
    place, place_id = _place(snapshot.locations, message.location, request)

    def write() -> IntakeAnswer:
        with db.transaction() as session:
            connection = session.connection()
            item_id = new_id()
            case = find_case(session, message, place, snapshot.services)
            if case is None:
                reason, queue = unmatched
                answer, exception_row = intake_exception(item_id, place_id, [reason], request, queue)
                row = intake_item_row(request, item_id, answer, [reason], normalised, place_id)
                insert_item(connection, row, exception_row)
                session.add_all(keep_unmatched(item_id) if keep_unmatched else [])
            else:
                answer, records = apply(session, case, item_id)
                insert_item(
                    connection, intake_item_row(request, item_id, answer, [], normalised, case.location_id)
                )
                session.add_all(records)
            session.flush()
            record_events(connection, received_event(request, item_id, place_id), *answer.events)
            if case is not None and after is not None:
                after(session, case)
            return answer

    return answer_once(db, request, write)


def find_case(
    session: Session,
    message: CaseMessage,
    place: LocationRef | None,
    services: dict[tuple[str, str], Any],
) -> ServiceCase | None:
    """The case a message is about: the newest with one of its order numbers, else the patient's
    newest case for the service (at the place, when the message names one), in an allowed status."""
    statuses = [str(s) for s in message.statuses]
    if message.appointment:
        found = session.scalars(
            select(ServiceCase)
            .join(Appointment, Appointment.case_id == ServiceCase.id)
            .where(Appointment.external_id == message.appointment, ServiceCase.status.in_(statuses))
            .order_by(Appointment.created_at.desc())
            .limit(1)
        ).first()
        if found is not None:
            return found
    if message.order_numbers:
        query = select(ServiceCase).where(
            ServiceCase.order_number.in_(list(message.order_numbers)), ServiceCase.status.in_(statuses)
        )
        if place is not None:
            query = query.where(ServiceCase.organisation_id == place.organisation_id)
        found = session.scalars(query.order_by(ServiceCase.created_at.desc()).limit(1)).first()
        if found is not None:
            return found
    if not message.patient.mrn:
        return None
    query = (
        select(ServiceCase)
        .join(Patient, Patient.id == ServiceCase.patient_id)
        .where(
            Patient.mrn_index == keys_of(session.get_bind().dialect).blind_index(message.patient.mrn),
            ServiceCase.status.in_(statuses),
        )
        .order_by(ServiceCase.created_at.desc())
    )
    if place is not None:
        query = query.where(ServiceCase.location_id == place.id)
        service = services.get((place.organisation_id, normalise_code(message.service_code) or ""))
        if service is not None:
            query = query.where(ServiceCase.service_id == service.id)
    return session.scalars(query.limit(1)).first()


def case_body(outcome: str, case: ServiceCase, item_id: str, **more: Any) -> dict[str, Any]:
    """The answer to a message applied to a case."""
    return {
        "outcome": outcome,
        "intake_item_id": item_id,
        "case_id": case.id,
        "case_status": case.status,
        "links": {"case": f"/api/v1/cases/{case.id}"},
        **more,
    }


def record_message(
    db: Database, request: IntakeRequest, location: str | None, catalogue: CatalogueCache
) -> IntakeAnswer:
    """Keep a message careops only records (its disposition is ``record``) and acknowledge it."""
    _, place_id = _place(catalogue.get(db).locations, location, request)

    def write() -> IntakeAnswer:
        with db.transaction() as session:
            connection = session.connection()
            item_id = new_id()
            answer = IntakeAnswer(200, {"outcome": "recorded", "intake_item_id": item_id})
            insert_item(connection, intake_item_row(request, item_id, answer, [], None, place_id))
            record_events(connection, received_event(request, item_id, place_id))
            return answer

    return answer_once(db, request, write)


def request_merge(
    db: Database,
    request: IntakeRequest,
    patient_in: PatientIn,
    prior_identifier: str,
    location: str | None,
    catalogue: CatalogueCache,
) -> IntakeAnswer:
    """ADT^A40: never merged by itself; a person confirms it from the ``patients`` queue, where
    the item names both identifiers (kept on the intake item, not in the event)."""
    _, place_id = _place(catalogue.get(db).locations, location, request)
    normalised = {"patient": patient_in.model_dump(exclude_none=True), "merge_from": prior_identifier}

    def write() -> IntakeAnswer:
        with db.transaction() as session:
            connection = session.connection()
            item_id = new_id()
            answer, exception_row = intake_exception(
                item_id, place_id, ["patient_merge_requested"], request, PATIENTS_QUEUE
            )
            answer.events.append(
                Event(
                    EventType.PATIENT_MERGE_REQUESTED,
                    subject_type="intake_item",
                    subject_id=item_id,
                    location_id=place_id,
                    payload={"exception_id": exception_row["id"]},
                    **request.context,
                )
            )
            row = intake_item_row(request, item_id, answer, ["patient_merge_requested"], normalised, place_id)
            insert_item(connection, row, exception_row)
            record_events(connection, received_event(request, item_id, place_id), *answer.events)
            return answer

    return answer_once(db, request, write)


def timestamp(text: str | None) -> dt.datetime | None:
    """An ISO 8601 time from a message (UTC when it names no zone), or None."""
    if not text:
        return None
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
