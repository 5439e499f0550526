"""The one intake function every channel ends at.

``accept_referral`` runs one transaction: intake item (which is also the idempotency record) +
(case | exception item | duplicate link) + business events + outbox rows. It never starts a durable workflow
itself; the dispatcher does that from the outbox after commit. The hot path uses compiled Core
statements and an in-memory catalogue: intake throughput is a product feature.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from careops.db import Database, run
from careops.domain.cases import CaseStatus
from careops.domain.duplicates import find_duplicate_case
from careops.domain.events import Event, EventType, FollowUp, record_events
from careops.domain.models import (
    Base,
    Document,
    ExceptionItem,
    IntakeItem,
    ServiceCase,
    new_id,
    utcnow,
)
from careops.domain.patients import find_or_register
from careops.domain.reference import Catalogue, LocationRef, ReferencedRecords
from careops.domain.referrals import NormalisedReferral, ReferralIn, missing_fields, normalise
from careops.errors import DuplicateRequest, Forbidden, WriteConflict
from careops.governance.scoping import EVERYWHERE, LocationScope
from careops.observability import tracing
from careops.observability.tracing import current_correlation_id
from careops.orchestration.quarantine import stored_payload
from careops.settings import Settings

INTAKE_QUEUE = "intake"
# How often a write that clashed with a concurrent one is tried before the caller is asked to retry.
WRITE_ATTEMPTS = 3
_intake_items = Base.metadata.tables[IntakeItem.__tablename__]
_cases = Base.metadata.tables[ServiceCase.__tablename__]
_exceptions = Base.metadata.tables[ExceptionItem.__tablename__]
_documents = Base.metadata.tables[Document.__tablename__]
_ITEM_INSERT, _CASE_INSERT, _EXCEPTION_INSERT = insert(_intake_items), insert(_cases), insert(_exceptions)
_ITEM_STATUS = {
    "case_created": "accepted",
    "duplicate": "duplicate",
    "exception": "incomplete",
    "patient_recorded": "accepted",
    "appointment_recorded": "accepted",
    "result_recorded": "accepted",
    "charges_recorded": "accepted",
    "referral_updated": "accepted",
    "recorded": "recorded",
}


@dataclass
class IntakeAnswer:
    """What the channel answers (an HTTP-like status and a JSON body) and the events it implies."""

    status_code: int
    body: dict[str, Any]
    events: list[Event] = field(default_factory=list)

    @property
    def item_status(self) -> str:
        """The intake item's status for this outcome."""
        return _ITEM_STATUS[self.body["outcome"]]


@dataclass
class Evaluation:
    referral: NormalisedReferral
    references: ReferencedRecords
    reasons: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Attachment:
    """A file that came with a request; stored as a document of its intake item, in its transaction."""

    filename: str
    content_type: str
    content: bytes
    text: str | None = None


@dataclass
class IntakeRequest:
    raw: bytes
    content_type: str
    channel: str
    principal_id: str
    idempotency_key: str | None = None
    correlation_id: str | None = None
    scope: LocationScope = EVERYWHERE
    sender: str | None = None
    # A conditional create (FHIR If-None-Exist): what exists under the key is the answer, whatever
    # the body, instead of 409.
    conditional: bool = False
    attachments: tuple[Attachment, ...] = ()
    # Channels without an Idempotency-Key header (HL7, FHIR, email) key a request by what it
    # names (sender and message id) and its payload's digest: a resend is answered again and
    # changes nothing, while another message under a reused id is its own. ``content_digest``:
    # the digest of what makes two payloads the same message when that is not all of their bytes
    # (HL7: all but MSH-7, the time stamp an interface engine may renew when it resends).
    content_key: str | None = None
    content_digest: str | None = None

    def __post_init__(self) -> None:
        if self.content_key is not None:
            key = f"{self.content_key}|{(self.content_digest or self.sha256)[:32]}"
            self.idempotency_key = key if len(key) <= 255 else hashlib.sha256(key.encode()).hexdigest()

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()

    @property
    def context(self) -> dict[str, Any]:
        """Who and which conversation the request's events are recorded under."""
        return {"actor": self.principal_id, "correlation_id": self.correlation_id or current_correlation_id()}


class CatalogueCache:
    """The reference-data snapshot, reloaded when older than ``ttl_seconds`` (0: every call)."""

    def __init__(self, ttl_seconds: float) -> None:
        self._ttl = ttl_seconds
        self._catalogue: Catalogue | None = None
        self._loaded_at = 0.0

    def invalidate(self) -> None:
        """Reload at the next ``get`` (after this process changed reference data or mappings)."""
        self._catalogue = None

    def get(self, db: Database) -> Catalogue:
        now = time.monotonic()
        if self._catalogue is None or now - self._loaded_at >= self._ttl:
            with db.sessions() as session:
                self._catalogue, self._loaded_at = Catalogue.load(session), now
        return self._catalogue


def evaluate(
    catalogue: Catalogue, referral_in: ReferralIn, settings: Settings, sender: str | None = None
) -> Evaluation:
    """Normalise, resolve codes against the catalogue (and ``sender``'s code mappings) and list
    every reason it is not yet a case."""
    referral = normalise(
        referral_in, phone_region=settings.default_phone_region, date_order=settings.date_order
    )
    references = catalogue.resolve(referral, sender)
    required = list(references.service.required_fields) if references.service else []
    reasons = [*references.unknown_codes(referral), *referral.problems, *missing_fields(referral, required)]
    return Evaluation(referral, references, reasons)


def check_location(scope: LocationScope, place: LocationRef | None) -> None:
    """403 when a caller bound to some locations sends something for another one."""
    if place is not None and not scope.allows(place.id):
        raise Forbidden("this token may not submit referrals for this location")


def accept_referral(
    db: Database,
    request: IntakeRequest,
    referral_in: ReferralIn,
    settings: Settings,
    catalogue: CatalogueCache,
) -> IntakeAnswer:
    """Turn a parsed referral into a case, a duplicate link or an exception item, exactly once."""
    # Pure work happens before the transaction, so that SQLite's write lock is held for writes only.
    evaluation = evaluate(catalogue.get(db), referral_in, settings, request.sender)
    check_location(request.scope, evaluation.references.location)
    normalised = referral_in.model_dump(mode="json", exclude_none=True)

    def write() -> IntakeAnswer:
        with db.pipelined_writer() as connection:
            return _accept(connection, request, normalised, evaluation, settings)

    return answer_once(db, request, write)


def answer_once(db: Database, request: IntakeRequest, write: Callable[[], IntakeAnswer]) -> IntakeAnswer:
    """``write()`` (one transaction that inserts the intake item), or the answer already given.

    A retry with an ``Idempotency-Key`` already used is found by the unique index on the intake
    item, not by a look-up first: the common case (a new key) costs no extra statement, and a
    retry rolls back and answers as the first request did. Any other unique-key clash (two
    requests registering the same new patient at once) is a race that a fresh transaction sees
    settled: ``write()`` runs again, and after ``WRITE_ATTEMPTS`` the caller gets a 409 to retry.
    """
    with tracing.span("intake.transaction", channel=request.channel) as current:
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            current.set_attribute("attempts", attempt)
            try:
                answer = write()
            except IntegrityError:
                if request.idempotency_key is not None:
                    with db.engine.connect() as connection:
                        answer_before = _earlier_answer(connection, request)
                    if answer_before is not None:
                        current.set_attribute("outcome", "answered_before")
                        return answer_before
            else:
                current.set_attributes({"outcome": str(answer.body["outcome"]), "status": answer.status_code})
                return answer
        raise WriteConflict("the referral clashed with concurrent writes; send it again")


def _earlier_answer(connection: Connection, request: IntakeRequest) -> IntakeAnswer | None:
    row = connection.execute(
        select(
            _intake_items.c.payload_sha256, _intake_items.c.response_status, _intake_items.c.response_body
        ).where(
            _intake_items.c.principal_id == request.principal_id,
            _intake_items.c.idempotency_key == request.idempotency_key,
        )
    ).first()
    if row is None:
        return None
    # A content key already names the content: the same key is the same message.
    if row.payload_sha256 != request.sha256 and not request.conditional and request.content_key is None:
        raise DuplicateRequest("this Idempotency-Key was already used with a different request body")
    return IntakeAnswer(row.response_status, row.response_body)


def _accept(
    connection: Connection,
    request: IntakeRequest,
    normalised: dict[str, Any],
    evaluation: Evaluation,
    settings: Settings,
) -> IntakeAnswer:
    """Rows in foreign-key order (patient and case, intake item, exception item, documents), then
    the events.

    What has to be read (the patient, an earlier case) is read first (by ``run``: in the
    pipelined writer, see there); the writes, which need no answer, then go to PostgreSQL with the
    COMMIT, as one statement (``record_events`` with the rows ``together``).
    """
    location = evaluation.references.location
    item_id = new_id()
    location_id = location.id if location else None
    context = request.context
    case_row = exception_row = None
    if evaluation.reasons:
        answer, exception_row = intake_exception(item_id, location_id, evaluation.reasons, request)
    else:
        answer, case_row = case_or_link(connection, item_id, evaluation, settings, context, request.channel)
    item_row = intake_item_row(request, item_id, answer, evaluation.reasons, normalised, location_id)
    # The case, the item, its exception item, documents and the events: one statement on PostgreSQL.
    together = [
        (_cases, [case_row] if case_row else []),
        (_intake_items, [item_row]),
        (_exceptions, [exception_row] if exception_row else []),
        (_documents, document_rows(item_id, request.attachments)),
    ]
    received = received_event(request, item_id, location_id)
    record_events(connection, received, *answer.events, together=together)
    return answer


def received_event(request: IntakeRequest, item_id: str, location_id: str | None) -> Event:
    """``referral.received``: every intake item writes it, whatever became of it."""
    return Event(
        EventType.REFERRAL_RECEIVED,
        subject_type="intake_item",
        subject_id=item_id,
        location_id=location_id,
        payload={"channel": request.channel},
        **request.context,
    )


def insert_item(
    connection: Connection, item_row: dict[str, Any], exception_row: dict[str, Any] | None = None
) -> None:
    """The intake item (``intake_item_row``) and, for an incomplete one, its exception item."""
    run(connection, _ITEM_INSERT, item_row)
    if exception_row is not None:
        run(connection, _EXCEPTION_INSERT, exception_row)


def document_rows(item_id: str, attachments: tuple[Attachment, ...]) -> list[dict[str, Any]]:
    """The document rows of an intake item's attachments."""
    now = utcnow()
    return [
        {
            "id": new_id(),
            "intake_item_id": item_id,
            "filename": a.filename[:255],
            "content_type": a.content_type[:100],
            "size_bytes": len(a.content),
            "sha256": hashlib.sha256(a.content).hexdigest(),
            "content": a.content,
            "text": a.text,
            "created_at": now,
        }
        for a in attachments
    ]


def intake_item_row(
    request: IntakeRequest,
    item_id: str,
    answer: IntakeAnswer,
    reasons: list[str],
    normalised: dict[str, Any] | None,
    location_id: str | None,
) -> dict[str, Any]:
    """The intake item for a request and its answer (which it keeps when the request had a key)."""
    keyed = request.idempotency_key is not None
    return {
        "id": item_id,
        "channel": request.channel,
        "sender": request.sender,
        "status": answer.item_status,
        "reasons": reasons,
        "content_type": request.content_type,
        **stored_payload(request.raw),
        "payload_sha256": request.sha256,
        "normalised": normalised,
        "location_id": location_id,
        "case_id": answer.body.get("case_id"),
        "received_at": utcnow(),
        "principal_id": request.principal_id,
        "idempotency_key": request.idempotency_key,
        "response_status": answer.status_code if keyed else None,
        "response_body": answer.body if keyed else None,
    }


def intake_exception(
    item_id: str,
    location_id: str | None,
    reasons: list[str],
    request: IntakeRequest,
    queue: str = INTAKE_QUEUE,
) -> tuple[IntakeAnswer, dict[str, Any]]:
    """The answer for an incomplete referral (or a message that matched nothing) and the
    exception item row to insert after its item, in ``queue``."""
    exception_id = new_id()
    row = {
        "id": exception_id,
        "queue": queue,
        "status": "open",
        "reason_codes": reasons,
        "intake_item_id": item_id,
        "location_id": location_id,
        "created_at": utcnow(),
    }
    incomplete = Event(
        EventType.REFERRAL_INCOMPLETE,
        subject_type="intake_item",
        subject_id=item_id,
        location_id=location_id,
        payload={"exception_id": exception_id, "reason_codes": reasons, "channel": request.channel},
        **request.context,
    )
    body = {
        "outcome": "exception",
        "intake_item_id": item_id,
        "exception_id": exception_id,
        "reason_codes": reasons,
        "links": {"exception": f"/api/v1/exceptions/{exception_id}"},
    }
    return IntakeAnswer(202, body, [incomplete]), row


def insert_case(connection: Connection, case_row: dict[str, Any] | None) -> None:
    """Write the case ``case_or_link`` decided on (nothing for a link to a duplicate)."""
    if case_row is not None:
        run(connection, _CASE_INSERT, case_row)


def case_or_link(
    connection: Connection,
    item_id: str,
    evaluation: Evaluation,
    settings: Settings,
    context: dict[str, Any],
    channel: str,
    received_at: dt.datetime | None = None,
) -> tuple[IntakeAnswer, dict[str, Any] | None]:
    """Register the patient, then link to a duplicate case or decide on a new one.

    ``received_at``: when the intake item arrived, if not now (a case made when its exception
    item is resolved); ``case.created`` carries it, so the time from receipt to case is read from
    the event itself.

    The answer, with the events it implies for the caller to record with its own, and the case row
    to write (``insert_case``; None for a link) once whatever else had to be read was read.
    """
    refs, referral = evaluation.references, evaluation.referral
    assert refs.location is not None and refs.service is not None  # guaranteed: no reasons left
    patient_id, registered = find_or_register(connection, refs.location.organisation_id, referral)
    now = utcnow()
    referrer_id = refs.referrer.id if refs.referrer else None
    # A patient registered just now has no earlier case to repeat.
    duplicate = (
        None
        if registered
        else find_duplicate_case(
            connection,
            patient_id=patient_id,
            service_id=refs.service.id,
            referrer_id=referrer_id,
            now=now,
            window=dt.timedelta(hours=settings.duplicate_window_hours),
        )
    )
    if duplicate is not None:
        case_id, case_status, location_id = duplicate
        linked = Event(
            EventType.REFERRAL_DUPLICATE_DETECTED,
            subject_type="intake_item",
            subject_id=item_id,
            case_id=case_id,
            location_id=location_id,
            payload={"channel": channel},  # the timeline shows every source of the case
            **context,
        )
        return IntakeAnswer(200, _case_body("duplicate", case_id, case_status, item_id), [linked]), None
    needs_authorisation = refs.service.needs_authorisation(refs.payer)
    case_id = new_id()
    status = str(CaseStatus.AWAITING_AUTHORISATION if needs_authorisation else CaseStatus.READY_TO_SCHEDULE)
    case_row = {
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
        "order_number": referral.external_id[:64] if referral.external_id else None,
        "diagnosis_codes": referral.diagnosis_codes,
        "created_at": now,
        "updated_at": now,
    }
    about_case: dict[str, Any] = {
        "subject_type": "case",
        "subject_id": case_id,
        "case_id": case_id,
        **context,
    }
    events = [
        Event(
            EventType.CASE_CREATED,
            location_id=refs.location.id,
            payload={
                "intake_item_id": item_id,
                "service": refs.service.code,
                "status": status,
                "channel": channel,
                "received_at": (received_at or now).isoformat(),
            },
            follow_ups=(FollowUp.AWAIT_TRIAGE,),
            **about_case,
        )
    ]
    if needs_authorisation:
        events.append(
            Event(
                EventType.AUTHORISATION_REQUIRED,
                location_id=refs.location.id,
                payload={"payer": refs.payer.code if refs.payer else None},
                **about_case,
            )
        )
    return IntakeAnswer(201, _case_body("case_created", case_id, status, item_id), events), case_row


def _case_body(outcome: str, case_id: str, status: str, item_id: str) -> dict[str, Any]:
    return {
        "outcome": outcome,
        "case_id": case_id,
        "intake_item_id": item_id,
        "status": status,
        "links": {"case": f"/api/v1/cases/{case_id}", "timeline": f"/api/v1/cases/{case_id}#timeline"},
    }
