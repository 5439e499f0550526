"""Appointments kept by another system (HL7 SIU S12 to S26) as appointment records on their cases.

Such an appointment (``source`` ``hl7``) is found again by the other system's id (SCH-2 filler,
else SCH-1 placer). It takes none of careops' resources: the other system owns its rooms and
staff. Booking one schedules a case that is ready to schedule; a cancellation, deletion or missed
appointment frees the case again (``ready_to_schedule``) unless another appointment still holds it;
each writes its appointment event.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from careops.db import Database
from careops.domain.cases import CaseAction, CaseStatus, transition
from careops.domain.events import EventType
from careops.domain.models import Appointment, Base, Service, ServiceCase, new_id, utcnow
from careops.domain.referrals import PatientIn
from careops.orchestration.appointments import appointment_event
from careops.orchestration.intake import CatalogueCache, IntakeAnswer, IntakeRequest
from careops.orchestration.registrations import CaseMessage, apply_to_case, case_body, timestamp
from careops.orchestration.scheduling import DEFAULT_DURATION_MINUTES

SCHEDULING_QUEUE = "scheduling"
# Cases an external appointment can belong to.
_SCHEDULABLE = (CaseStatus.READY_TO_SCHEDULE, CaseStatus.SCHEDULED, CaseStatus.AWAITING_AUTHORISATION)
_EVENTS = {
    "booked": EventType.APPOINTMENT_BOOKED,
    "rescheduled": EventType.APPOINTMENT_RESCHEDULED,
    "modified": EventType.APPOINTMENT_MODIFIED,
    "cancelled": EventType.APPOINTMENT_CANCELLED,
    "no_show": EventType.APPOINTMENT_NO_SHOW,
}
_ENDED = {"cancelled": "cancelled", "no_show": "no_show"}


@dataclass
class AppointmentNotice:
    """An appointment booked, rescheduled, modified, cancelled or missed in another system."""

    event: str  # booked | rescheduled | modified | cancelled | no_show
    service_code: str | None
    start: str | None
    minutes: int | None
    placer_id: str | None
    filler_id: str | None
    order_numbers: tuple[str, ...] = ()

    @property
    def external_id(self) -> str | None:
        return self.filler_id or self.placer_id


def record_appointment(
    db: Database,
    request: IntakeRequest,
    patient_in: PatientIn,
    location: str | None,
    notice: AppointmentNotice,
    catalogue: CatalogueCache,
) -> IntakeAnswer:
    """Apply an SIU message to the appointment record it names (made on booking)."""
    message = CaseMessage(
        notice.order_numbers,
        patient_in,
        notice.service_code,
        location,
        [str(s) for s in _SCHEDULABLE],
        appointment=notice.external_id,
    )
    normalised = {"patient": patient_in.model_dump(exclude_none=True), "appointment": notice.__dict__}

    def apply(session: Session, case: ServiceCase, item_id: str) -> tuple[IntakeAnswer, list[Base]]:
        appointment = _apply(session, case, notice, request.principal_id)
        event = appointment_event(_EVENTS[notice.event], appointment, case, request.principal_id)
        event.payload["intake_item_id"] = item_id
        body = case_body("appointment_recorded", case, item_id, appointment_id=appointment.id)
        return IntakeAnswer(200, body, [event]), [appointment]

    return apply_to_case(
        db, request, message, normalised, catalogue, apply, ("unmatched_appointment", SCHEDULING_QUEUE)
    )


def _apply(session: Session, case: ServiceCase, notice: AppointmentNotice, actor: str) -> Appointment:
    existing = session.scalars(
        select(Appointment)
        .where(
            Appointment.case_id == case.id,
            Appointment.source == "hl7",
            Appointment.external_id == notice.external_id,
        )
        .order_by(Appointment.created_at.desc())
        .limit(1)
    ).first()
    start = timestamp(notice.start)
    if existing is None:
        service = session.get(Service, case.service_id)
        assert service is not None
        begins = start or utcnow()
        minutes = notice.minutes or service.duration_minutes or DEFAULT_DURATION_MINUTES
        existing = Appointment(
            id=new_id(),
            case_id=case.id,
            location_id=case.location_id,
            service_id=case.service_id,
            starts_at=begins,
            ends_at=begins + dt.timedelta(minutes=minutes),
            status="confirmed",
            resource_codes=[],
            source="hl7",
            external_id=notice.external_id,
        )
    elif start is not None and notice.event in ("booked", "rescheduled", "modified"):
        length = existing.ends_at - existing.starts_at
        existing.starts_at = start
        existing.ends_at = start + (dt.timedelta(minutes=notice.minutes) if notice.minutes else length)
    existing.updated_at = utcnow()
    if notice.event in _ENDED:
        existing.status = _ENDED[notice.event]
        if case.status == CaseStatus.SCHEDULED:
            transition(
                session, case, CaseAction.UNSCHEDULE, actor=actor, reason_code=f"external_{notice.event}"
            )
    else:
        existing.status = "confirmed"
        if case.status == CaseStatus.READY_TO_SCHEDULE:
            transition(session, case, CaseAction.SCHEDULE, actor=actor, reason_code="external_appointment")
    return existing


def _other_booking(session: Session, case: ServiceCase, appointment: Appointment) -> bool:
    """Whether the case has another confirmed appointment (then it stays scheduled)."""
    query = select(Appointment.id).where(Appointment.case_id == case.id, Appointment.status == "confirmed")
    if appointment.id is not None:
        query = query.where(Appointment.id != appointment.id)
    return session.scalars(query.limit(1)).first() is not None
