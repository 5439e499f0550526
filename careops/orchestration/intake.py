"""The one intake function every channel ends at.

``accept_referral`` runs one transaction: intake item + (case | exception item | duplicate link)
+ business events + outbox rows + the idempotency record. It never starts a durable workflow
itself; the dispatcher does that from the outbox after commit.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from careops.db import Database
from careops.domain.cases import CaseStatus
from careops.domain.duplicates import find_duplicate_case
from careops.domain.events import EventType, FollowUp, record_event
from careops.domain.models import ExceptionItem, IdempotencyRecord, IntakeItem, ServiceCase, new_id, utcnow
from careops.domain.patients import find_or_register
from careops.domain.reference import ReferencedRecords, resolve_references
from careops.domain.referrals import NormalisedReferral, ReferralIn, missing_fields, normalise
from careops.errors import DuplicateRequest
from careops.settings import Settings

INTAKE_QUEUE = "intake"


@dataclass
class IntakeAnswer:
    """What the channel answers: an HTTP-like status and a JSON body."""

    status_code: int
    body: dict[str, Any]


@dataclass
class Evaluation:
    referral: NormalisedReferral
    references: ReferencedRecords
    reasons: list[str] = field(default_factory=list)


@dataclass
class IntakeRequest:
    raw: bytes
    content_type: str
    channel: str
    principal_id: str
    idempotency_key: str | None = None
    correlation_id: str | None = None


def evaluate(session: Session, referral_in: ReferralIn, settings: Settings) -> Evaluation:
    """Normalise, resolve codes against the catalogue and list every reason it is not yet a case."""
    referral = normalise(
        referral_in, phone_region=settings.default_phone_region, date_order=settings.date_order
    )
    references = resolve_references(session, referral)
    required = references.service.required_fields if references.service else []
    reasons = [*references.unknown_codes(referral), *referral.problems, *missing_fields(referral, required)]
    return Evaluation(referral, references, reasons)


def accept_referral(
    db: Database, request: IntakeRequest, referral_in: ReferralIn, settings: Settings
) -> IntakeAnswer:
    """Turn a parsed referral into a case, a duplicate link or an exception item, exactly once."""
    request_hash = hashlib.sha256(request.raw).hexdigest()
    try:
        with db.transaction() as session:
            if request.idempotency_key:
                earlier = _earlier_answer(session, request, request_hash)
                if earlier is not None:
                    return earlier
            answer = _accept(session, request, request_hash, referral_in, settings)
            if request.idempotency_key:
                session.add(
                    IdempotencyRecord(
                        principal_id=request.principal_id,
                        key=request.idempotency_key,
                        request_sha256=request_hash,
                        status_code=answer.status_code,
                        response_body=answer.body,
                    )
                )
            return answer
    except IntegrityError:
        # A concurrent request with the same Idempotency-Key committed first: answer as it did.
        if not request.idempotency_key:
            raise
        with db.transaction() as session:
            earlier = _earlier_answer(session, request, request_hash)
            if earlier is None:
                raise
            return earlier


def _earlier_answer(session: Session, request: IntakeRequest, request_hash: str) -> IntakeAnswer | None:
    record = session.get(IdempotencyRecord, (request.principal_id, request.idempotency_key))
    if record is None:
        return None
    if record.request_sha256 != request_hash:
        raise DuplicateRequest("this Idempotency-Key was already used with a different request body")
    return IntakeAnswer(record.status_code, record.response_body)


def _accept(
    session: Session, request: IntakeRequest, request_hash: str, referral_in: ReferralIn, settings: Settings
) -> IntakeAnswer:
    evaluation = evaluate(session, referral_in, settings)
    location = evaluation.references.location
    item = IntakeItem(
        id=new_id(),
        channel=request.channel,
        status="received",
        content_type=request.content_type,
        raw_payload=request.raw.decode("utf-8", errors="replace"),
        payload_sha256=request_hash,
        normalised=referral_in.model_dump(mode="json", exclude_none=True),
        location_id=location.id if location else None,
        received_at=utcnow(),
    )
    session.add(item)
    event_context: dict[str, Any] = {"actor": request.principal_id, "correlation_id": request.correlation_id}
    session.flush()
    record_event(
        session,
        EventType.REFERRAL_RECEIVED,
        subject_type="intake_item",
        subject_id=item.id,
        location_id=item.location_id,
        payload={"channel": request.channel},
        **event_context,
    )
    if evaluation.reasons:
        return _open_intake_exception(session, item, evaluation.reasons, event_context)
    return create_case_or_link(session, item, evaluation, settings, event_context)


def _open_intake_exception(
    session: Session, item: IntakeItem, reasons: list[str], event_context: dict[str, Any]
) -> IntakeAnswer:
    item.status = "incomplete"
    item.reasons = reasons
    exception = ExceptionItem(
        id=new_id(),
        queue=INTAKE_QUEUE,
        reason_codes=reasons,
        intake_item_id=item.id,
        location_id=item.location_id,
        created_at=utcnow(),
    )
    session.add(exception)
    session.flush()
    record_event(
        session,
        EventType.REFERRAL_INCOMPLETE,
        subject_type="intake_item",
        subject_id=item.id,
        location_id=item.location_id,
        payload={"exception_id": exception.id, "reason_codes": reasons},
        **event_context,
    )
    return IntakeAnswer(
        202,
        {
            "outcome": "exception",
            "intake_item_id": item.id,
            "exception_id": exception.id,
            "reason_codes": reasons,
            "links": {"exception": f"/api/v1/exceptions/{exception.id}"},
        },
    )


def create_case_or_link(
    session: Session,
    item: IntakeItem,
    evaluation: Evaluation,
    settings: Settings,
    event_context: dict[str, Any],
) -> IntakeAnswer:
    """Register the patient, then link to a duplicate case or create a new one."""
    refs, referral = evaluation.references, evaluation.referral
    assert refs.location is not None and refs.service is not None  # guaranteed: no reasons left
    patient = find_or_register(session, refs.location.organisation_id, referral)
    session.flush()
    now = utcnow()
    duplicate = find_duplicate_case(
        session,
        patient_id=patient.id,
        service_id=refs.service.id,
        referrer_id=refs.referrer.id if refs.referrer else None,
        now=now,
        window=dt.timedelta(hours=settings.duplicate_window_hours),
    )
    if duplicate is not None:
        item.status = "duplicate"
        item.case_id = duplicate.id
        record_event(
            session,
            EventType.REFERRAL_DUPLICATE_DETECTED,
            subject_type="intake_item",
            subject_id=item.id,
            case_id=duplicate.id,
            location_id=duplicate.location_id,
            payload={"channel": item.channel},
            **event_context,
        )
        return IntakeAnswer(200, _case_body("duplicate", duplicate, item))
    needs_authorisation = refs.service.requires_authorisation and (
        refs.payer is None or refs.payer.requires_authorisation
    )
    case = ServiceCase(
        id=new_id(),
        organisation_id=refs.location.organisation_id,
        location_id=refs.location.id,
        patient_id=patient.id,
        service_id=refs.service.id,
        referrer_id=refs.referrer.id if refs.referrer else None,
        payer_id=refs.payer.id if refs.payer else None,
        member_id=referral.member_id,
        priority=referral.priority,
        status=str(
            CaseStatus.AWAITING_AUTHORISATION if needs_authorisation else CaseStatus.READY_TO_SCHEDULE
        ),
        created_at=now,
        updated_at=now,
    )
    session.add(case)
    session.flush()
    item.status = "accepted"
    item.case_id = case.id
    record_event(
        session,
        EventType.CASE_CREATED,
        subject_type="case",
        subject_id=case.id,
        case_id=case.id,
        location_id=case.location_id,
        payload={"intake_item_id": item.id, "service": refs.service.code, "status": case.status},
        follow_ups=(FollowUp.AWAIT_TRIAGE,),
        **event_context,
    )
    if needs_authorisation:
        record_event(
            session,
            EventType.AUTHORISATION_REQUIRED,
            subject_type="case",
            subject_id=case.id,
            case_id=case.id,
            location_id=case.location_id,
            payload={"payer": refs.payer.code if refs.payer else None},
            **event_context,
        )
    return IntakeAnswer(201, _case_body("case_created", case, item))


def _case_body(outcome: str, case: ServiceCase, item: IntakeItem) -> dict[str, Any]:
    return {
        "outcome": outcome,
        "case_id": case.id,
        "intake_item_id": item.id,
        "status": case.status,
        "links": {"case": f"/api/v1/cases/{case.id}", "timeline": f"/api/v1/cases/{case.id}#timeline"},
    }
