"""A referral changed or withdrawn by its sender (HL7 REF^I13, REF^I14), applied to its case.

A modification updates the case's priority and adds the diagnoses it names
(``referral.modified`` names the fields that changed, never their values); a cancellation cancels
the case and any appointment it has (freeing their resources). A case already completed or beyond
is not cancelled by its sender: the message waits in the ``referral_updates`` queue for a person,
as does one for no known case.
"""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from careops.db import Database
from careops.domain.cases import CaseAction, CaseStatus, transition
from careops.domain.events import Event, EventType
from careops.domain.models import Appointment, Base, ResourceBooking, ServiceCase, utcnow
from careops.domain.referrals import PatientIn
from careops.orchestration.appointments import appointment_event
from careops.orchestration.intake import CatalogueCache, IntakeAnswer, IntakeRequest
from careops.orchestration.registrations import CaseMessage, apply_to_case, case_body

UPDATES_QUEUE = "referral_updates"
# A sender may withdraw a referral until the service is delivered.
CANCELLABLE = (
    CaseStatus.RECEIVED,
    CaseStatus.VALIDATED,
    CaseStatus.AWAITING_AUTHORISATION,
    CaseStatus.READY_TO_SCHEDULE,
    CaseStatus.SCHEDULED,
    CaseStatus.ON_HOLD,
)


def modify_referral(
    db: Database,
    request: IntakeRequest,
    patient_in: PatientIn,
    location: str | None,
    order_numbers: tuple[str, ...],
    service_code: str | None,
    priority: str | None,
    diagnoses: list[str],
    catalogue: CatalogueCache,
) -> IntakeAnswer:
    message = CaseMessage(order_numbers, patient_in, service_code, location)
    normalised = {
        "patient": patient_in.model_dump(exclude_none=True),
        "priority": priority,
        "diagnoses": diagnoses,
    }

    def apply(session: Session, case: ServiceCase, item_id: str) -> tuple[IntakeAnswer, list[Base]]:
        changed: list[str] = []
        if priority and priority != case.priority:
            case.priority, changed = priority, [*changed, "priority"]
        added = [code for code in diagnoses if code not in case.diagnosis_codes]
        if added:
            case.diagnosis_codes = [*case.diagnosis_codes, *added][:50]
            changed.append("diagnosis_codes")
        case.updated_at = utcnow()
        modified = Event.about_case(
            EventType.REFERRAL_MODIFIED,
            case,
            actor=request.principal_id,
            payload={"intake_item_id": item_id, "changed": changed},
        )
        return IntakeAnswer(
            200, case_body("referral_updated", case, item_id, changed=changed), [modified]
        ), []

    return apply_to_case(
        db, request, message, normalised, catalogue, apply, ("unmatched_referral_update", UPDATES_QUEUE)
    )


def cancel_referral(
    db: Database,
    request: IntakeRequest,
    patient_in: PatientIn,
    location: str | None,
    order_numbers: tuple[str, ...],
    service_code: str | None,
    catalogue: CatalogueCache,
) -> IntakeAnswer:
    message = CaseMessage(order_numbers, patient_in, service_code, location, [str(s) for s in CANCELLABLE])
    normalised = {"patient": patient_in.model_dump(exclude_none=True), "cancel": True}
    actor = request.principal_id

    def apply(session: Session, case: ServiceCase, item_id: str) -> tuple[IntakeAnswer, list[Base]]:
        events = []
        booked = session.scalars(
            select(Appointment).where(Appointment.case_id == case.id, Appointment.status == "confirmed")
        ).all()
        for appointment in booked:
            appointment.status, appointment.updated_at = "cancelled", utcnow()
            session.execute(delete(ResourceBooking).where(ResourceBooking.appointment_id == appointment.id))
            events.append(
                appointment_event(
                    EventType.APPOINTMENT_CANCELLED, appointment, case, actor, reason="referral_cancelled"
                )
            )
        transition(session, case, CaseAction.CANCEL, actor=actor, reason_code="referral_cancelled")
        return IntakeAnswer(200, case_body("referral_updated", case, item_id, changed=["status"]), events), []

    return apply_to_case(
        db, request, message, normalised, catalogue, apply, ("unmatched_referral_cancellation", UPDATES_QUEUE)
    )
