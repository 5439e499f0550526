"""The one intake function every channel ends at.

``accept_referral`` runs one transaction: intake item + (case | exception item | duplicate link)
+ business events + outbox rows + the idempotency record. It never starts a durable workflow
itself; the dispatcher does that from the outbox after commit. The hot path uses compiled Core
statements and an in-memory catalogue: intake throughput is a product feature.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from careops.db import Database
from careops.domain.cases import CaseStatus
from careops.domain.duplicates import find_duplicate_case
from careops.domain.events import EventType, FollowUp, record_event
from careops.domain.models import (
    Base,
    ExceptionItem,
    IdempotencyRecord,
    IntakeItem,
    ServiceCase,
    new_id,
    utcnow,
)
from careops.domain.patients import find_or_register
from careops.domain.reference import Catalogue, ReferencedRecords
from careops.domain.referrals import NormalisedReferral, ReferralIn, missing_fields, normalise
from careops.errors import DuplicateRequest
from careops.settings import Settings

INTAKE_QUEUE = "intake"
_idempotency = Base.metadata.tables[IdempotencyRecord.__tablename__]
_intake_items = Base.metadata.tables[IntakeItem.__tablename__]
_cases = Base.metadata.tables[ServiceCase.__tablename__]
_exceptions = Base.metadata.tables[ExceptionItem.__tablename__]


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


class CatalogueCache:
    """The reference-data snapshot, reloaded when older than ``ttl_seconds`` (0: every call)."""

    def __init__(self, ttl_seconds: float) -> None:
        self._ttl = ttl_seconds
        self._catalogue: Catalogue | None = None
        self._loaded_at = 0.0
        self._lock = threading.Lock()

    def get(self, session: Session) -> Catalogue:
        now = time.monotonic()
        if self._catalogue is None or now - self._loaded_at >= self._ttl:
            catalogue = Catalogue.load(session)
            with self._lock:
                self._catalogue, self._loaded_at = catalogue, now
            return catalogue
        return self._catalogue


def evaluate(catalogue: Catalogue, referral_in: ReferralIn, settings: Settings) -> Evaluation:
    """Normalise, resolve codes against the catalogue and list every reason it is not yet a case."""
    referral = normalise(
        referral_in, phone_region=settings.default_phone_region, date_order=settings.date_order
    )
    references = catalogue.resolve(referral)
    required = list(references.service.required_fields) if references.service else []
    reasons = [*references.unknown_codes(referral), *referral.problems, *missing_fields(referral, required)]
    return Evaluation(referral, references, reasons)


def accept_referral(
    db: Database,
    request: IntakeRequest,
    referral_in: ReferralIn,
    settings: Settings,
    catalogue: CatalogueCache,
) -> IntakeAnswer:
    """Turn a parsed referral into a case, a duplicate link or an exception item, exactly once."""
    request_hash = hashlib.sha256(request.raw).hexdigest()
    try:
        with db.transaction() as session:
            connection = session.connection()
            if request.idempotency_key:
                earlier = _earlier_answer(connection, request, request_hash)
                if earlier is not None:
                    return earlier
            evaluation = evaluate(catalogue.get(session), referral_in, settings)
            answer = _accept(connection, request, request_hash, referral_in, evaluation, settings)
            if request.idempotency_key:
                connection.execute(
                    insert(_idempotency),
                    {
                        "principal_id": request.principal_id,
                        "key": request.idempotency_key,
                        "request_sha256": request_hash,
                        "status_code": answer.status_code,
                        "response_body": answer.body,
                        "created_at": utcnow(),
                    },
                )
            return answer
    except IntegrityError:
        # A concurrent request with the same Idempotency-Key committed first: answer as it did.
        if not request.idempotency_key:
            raise
        with db.transaction() as session:
            earlier = _earlier_answer(session.connection(), request, request_hash)
            if earlier is None:
                raise
            return earlier


def _earlier_answer(connection: Connection, request: IntakeRequest, request_hash: str) -> IntakeAnswer | None:
    row = connection.execute(
        select(_idempotency.c.request_sha256, _idempotency.c.status_code, _idempotency.c.response_body).where(
            _idempotency.c.principal_id == request.principal_id, _idempotency.c.key == request.idempotency_key
        )
    ).first()
    if row is None:
        return None
    if row.request_sha256 != request_hash:
        raise DuplicateRequest("this Idempotency-Key was already used with a different request body")
    return IntakeAnswer(row.status_code, row.response_body)


def _accept(
    connection: Connection,
    request: IntakeRequest,
    request_hash: str,
    referral_in: ReferralIn,
    evaluation: Evaluation,
    settings: Settings,
) -> IntakeAnswer:
    location = evaluation.references.location
    item_id = new_id()
    location_id = location.id if location else None
    context: dict[str, Any] = {"actor": request.principal_id, "correlation_id": request.correlation_id}
    record_event(
        connection,
        EventType.REFERRAL_RECEIVED,
        subject_type="intake_item",
        subject_id=item_id,
        location_id=location_id,
        payload={"channel": request.channel},
        **context,
    )
    if evaluation.reasons:
        status, case_id = "incomplete", None
    else:
        answer = create_case_or_link(connection, item_id, request.channel, evaluation, settings, context)
        status, case_id = (
            ("duplicate" if answer.body["outcome"] == "duplicate" else "accepted"),
            answer.body["case_id"],
        )
    connection.execute(
        insert(_intake_items),
        {
            "id": item_id,
            "channel": request.channel,
            "status": status,
            "reasons": evaluation.reasons,
            "content_type": request.content_type,
            "raw_payload": request.raw.decode("utf-8", errors="replace"),
            "payload_sha256": request_hash,
            "normalised": referral_in.model_dump(mode="json", exclude_none=True),
            "location_id": location_id,
            "case_id": case_id,
            "received_at": utcnow(),
        },
    )
    if evaluation.reasons:
        return _open_intake_exception(connection, item_id, location_id, evaluation.reasons, context)
    return answer


def _open_intake_exception(
    connection: Connection, item_id: str, location_id: str | None, reasons: list[str], context: dict[str, Any]
) -> IntakeAnswer:
    exception_id = new_id()
    connection.execute(
        insert(_exceptions),
        {
            "id": exception_id,
            "queue": INTAKE_QUEUE,
            "status": "open",
            "reason_codes": reasons,
            "intake_item_id": item_id,
            "location_id": location_id,
            "created_at": utcnow(),
        },
    )
    record_event(
        connection,
        EventType.REFERRAL_INCOMPLETE,
        subject_type="intake_item",
        subject_id=item_id,
        location_id=location_id,
        payload={"exception_id": exception_id, "reason_codes": reasons},
        **context,
    )
    return IntakeAnswer(
        202,
        {
            "outcome": "exception",
            "intake_item_id": item_id,
            "exception_id": exception_id,
            "reason_codes": reasons,
            "links": {"exception": f"/api/v1/exceptions/{exception_id}"},
        },
    )


def create_case_or_link(
    connection: Connection,
    item_id: str,
    channel: str,
    evaluation: Evaluation,
    settings: Settings,
    context: dict[str, Any],
) -> IntakeAnswer:
    """Register the patient, then link to a duplicate case or create a new one."""
    refs, referral = evaluation.references, evaluation.referral
    assert refs.location is not None and refs.service is not None  # guaranteed: no reasons left
    patient_id = find_or_register(connection, refs.location.organisation_id, referral)
    now = utcnow()
    referrer_id = refs.referrer.id if refs.referrer else None
    duplicate = find_duplicate_case(
        connection,
        patient_id=patient_id,
        service_id=refs.service.id,
        referrer_id=referrer_id,
        now=now,
        window=dt.timedelta(hours=settings.duplicate_window_hours),
    )
    if duplicate is not None:
        case_id, case_status, location_id = duplicate
        record_event(
            connection,
            EventType.REFERRAL_DUPLICATE_DETECTED,
            subject_type="intake_item",
            subject_id=item_id,
            case_id=case_id,
            location_id=location_id,
            payload={"channel": channel},
            **context,
        )
        return IntakeAnswer(200, _case_body("duplicate", case_id, case_status, item_id))
    needs_authorisation = refs.service.requires_authorisation and (
        refs.payer is None or refs.payer.requires_authorisation
    )
    case_id = new_id()
    status = str(CaseStatus.AWAITING_AUTHORISATION if needs_authorisation else CaseStatus.READY_TO_SCHEDULE)
    connection.execute(
        insert(_cases),
        {
            "id": case_id,
            "organisation_id": refs.location.organisation_id,
            "location_id": refs.location.id,
            "patient_id": patient_id,
            "service_id": refs.service.id,
            "referrer_id": referrer_id,
            "payer_id": refs.payer.id if refs.payer else None,
            "member_id": referral.member_id,
            "priority": referral.priority,
            "status": status,
            "held_from": None,
            "created_at": now,
            "updated_at": now,
        },
    )
    case_event: dict[str, Any] = {
        "subject_type": "case",
        "subject_id": case_id,
        "case_id": case_id,
        "location_id": refs.location.id,
    }
    record_event(
        connection,
        EventType.CASE_CREATED,
        **case_event,
        payload={"intake_item_id": item_id, "service": refs.service.code, "status": status},
        follow_ups=(FollowUp.AWAIT_TRIAGE,),
        **context,
    )
    if needs_authorisation:
        record_event(
            connection,
            EventType.AUTHORISATION_REQUIRED,
            **case_event,
            payload={"payer": refs.payer.code if refs.payer else None},
            **context,
        )
    return IntakeAnswer(201, _case_body("case_created", case_id, status, item_id))


def _case_body(outcome: str, case_id: str, status: str, item_id: str) -> dict[str, Any]:
    return {
        "outcome": outcome,
        "case_id": case_id,
        "intake_item_id": item_id,
        "status": status,
        "links": {"case": f"/api/v1/cases/{case_id}", "timeline": f"/api/v1/cases/{case_id}#timeline"},
    }
