"""The system of record: typed SQLAlchemy models.

Times are stored as timezone-aware UTC. Public ids are 32-character, time-ordered hex strings
(so they sort by creation and serve as pagination cursors); events and outbox rows use integer
ids because the dispatcher drains them in order.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import time
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

from careops.domain.encryption import EncryptedBytes, EncryptedJSON, EncryptedText
from careops.domain.phi import PhiCategory, phi

JSONType = JSON().with_variant(JSONB(), "postgresql")
_Record = TypeVar("_Record")
AutoId = BigInteger().with_variant(Integer(), "sqlite")


def new_id() -> str:
    """48 bits of milliseconds then 80 random bits, as hex: unique and ordered by creation."""
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"


# What ``new_id`` makes: any other text names no record (and may not even be storable: a NUL).
ID_PATTERN = "^[0-9a-f]{32}$"
_ID = re.compile(ID_PATTERN)
# Text from a URL (a slug, a code, a name): no control characters.
PLAIN_TEXT = r"^[^\x00-\x1f\x7f]*$"


def is_id(text: str) -> bool:
    return _ID.match(text) is not None


def find(session: Session, model: type[_Record], id_: str, *, for_update: bool = False) -> _Record | None:
    """The record with this id, or None; text that is no id is not even sent to the database."""
    return session.get(model, id_, with_for_update=for_update) if is_id(id_) else None


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC in and out, on SQLite (which keeps no zone) as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given where UTC is required")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    type_annotation_map = {
        dt.datetime: UTCDateTime,
        dict[str, Any]: JSONType,
        list[str]: JSONType,
        list[dict[str, Any]]: JSONType,
    }


class Organisation(Base):
    __tablename__ = "organisation"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))


class Location(Base):
    __tablename__ = "location"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    organisation_id: Mapped[str] = mapped_column(ForeignKey("organisation.id"))
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    # Groups of locations (a region, a line of business) that workflow overlays name.
    groups: Mapped[list[str]] = mapped_column(default=list)
    # Days it is closed, local dates: [{"first": "2026-12-24", "last": "2026-12-26"}].
    closures: Mapped[list[dict[str, Any]]] = mapped_column(default=list)
    # Minutes a member of staff needs between home visits in different zones.
    travel_minutes: Mapped[int] = mapped_column(Integer, default=30)
    # Master data in use is retired, never deleted: intake no longer resolves it.
    retired_at: Mapped[dt.datetime | None] = mapped_column()


class Patient(Base):
    __tablename__ = "patient"
    __table_args__ = (
        Index("ix_patient_mrn_index", "organisation_id", "mrn_index", unique=True),
        # Only patients without an MRN are matched by name and birth date.
        Index(
            "ix_patient_name_birth",
            "organisation_id",
            "family_name",
            "birth_date",
            postgresql_where=text("mrn IS NULL"),
            sqlite_where=text("mrn IS NULL"),
        ),
        # Patient search by the start of a family name (a range on it: see patient_search).
        Index("ix_patient_family_lower", text("lower(family_name)")),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    organisation_id: Mapped[str] = mapped_column(ForeignKey("organisation.id"))
    mrn: Mapped[str | None] = mapped_column(EncryptedText("patient.mrn"), info=phi(PhiCategory.IDENTIFIER))
    # HMAC of the MRN (see domain.encryption): exact lookups without the MRN in clear.
    mrn_index: Mapped[str | None] = mapped_column(String(64))
    given_name: Mapped[str] = mapped_column(String(100), info=phi(PhiCategory.NAME))
    family_name: Mapped[str] = mapped_column(String(100), info=phi(PhiCategory.NAME))
    birth_date: Mapped[dt.date | None] = mapped_column(Date, info=phi(PhiCategory.BIRTH_DATE))
    sex: Mapped[str | None] = mapped_column(String(16))
    phone: Mapped[str | None] = mapped_column(String(32), info=phi(PhiCategory.PHONE))
    email: Mapped[str | None] = mapped_column(String(254), info=phi(PhiCategory.EMAIL))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Referrer(Base):
    __tablename__ = "referrer"
    __table_args__ = (UniqueConstraint("organisation_id", "code"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    organisation_id: Mapped[str] = mapped_column(ForeignKey("organisation.id"))
    code: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    organisation: Mapped[str | None] = mapped_column(String(200))  # the referring organisation
    retired_at: Mapped[dt.datetime | None] = mapped_column()


class Payer(Base):
    __tablename__ = "payer"
    __table_args__ = (UniqueConstraint("organisation_id", "code"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    organisation_id: Mapped[str] = mapped_column(ForeignKey("organisation.id"))
    code: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    requires_authorisation: Mapped[bool] = mapped_column(Boolean, default=False)
    category: Mapped[str | None] = mapped_column(String(64))  # public, private, self-pay, ...
    # What this payer's invoices need besides the service's own (``master_data.CHECKS``).
    billing_checklist: Mapped[list[str]] = mapped_column(default=list)
    retired_at: Mapped[dt.datetime | None] = mapped_column()


class Service(Base):
    """An entry of the service catalogue: what a referral may ask for and what it must carry."""

    __tablename__ = "service"
    __table_args__ = (UniqueConstraint("organisation_id", "code"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    organisation_id: Mapped[str] = mapped_column(ForeignKey("organisation.id"))
    code: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    aliases: Mapped[list[str]] = mapped_column(default=list)
    required_fields: Mapped[list[str]] = mapped_column(default=list)
    requires_authorisation: Mapped[bool] = mapped_column(Boolean, default=False)
    duration_minutes: Mapped[int | None] = mapped_column(Integer)
    resources: Mapped[list[str]] = mapped_column(default=list)  # kinds of resource it books
    # Per payer code: whether that payer needs authorisation (overrides requires_authorisation).
    authorisation: Mapped[dict[str, Any]] = mapped_column(default=dict)
    prices: Mapped[dict[str, Any]] = mapped_column(default=dict)  # payer code -> price
    materials: Mapped[dict[str, Any]] = mapped_column(default=dict)  # bill of materials: item -> quantity
    procedure_code: Mapped[str | None] = mapped_column(String(16))  # CPT or HCPCS, what is billed
    requires_result: Mapped[bool] = mapped_column(Boolean, default=False)  # complete only with a result
    # Minutes its resources are held before the start (setting up a room, a contrast injection).
    preparation_minutes: Mapped[int | None] = mapped_column(Integer)
    home_visit: Mapped[bool] = mapped_column(Boolean, default=False)  # at the patient's, in a zone
    # What an invoice for this service needs (``master_data.CHECKS``), for every payer.
    billing_checklist: Mapped[list[str]] = mapped_column(default=list)
    retired_at: Mapped[dt.datetime | None] = mapped_column()


class Resource(Base):
    """Something an appointment books at a location: a room, a device (an MRI scanner), a member of
    staff. ``kinds`` say what it is for (the kinds a service's ``resources`` name); ``hours`` its
    working hours per weekday (``{"mon": ["08:00-12:00", "13:00-18:00"], ...}``, in the
    location's time zone)."""

    __tablename__ = "resource"
    __table_args__ = (
        Index("ix_resource_location", "location"),
        Index("ix_resource_also_at", "also_at", postgresql_using="gin"),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    location: Mapped[str] = mapped_column(String(64))  # the location's slug
    name: Mapped[str] = mapped_column(String(200))
    kinds: Mapped[list[str]] = mapped_column(default=list)
    hours: Mapped[dict[str, Any]] = mapped_column(default=dict)
    closures: Mapped[list[dict[str, Any]]] = mapped_column(default=list)  # as a location's
    # A member of staff is booked only for services a credential of theirs names, valid that day
    # (checked by the database on every booking: migration 0018's trigger).
    staff: Mapped[bool] = mapped_column(Boolean, default=False)
    # [{"type", "number", "issuer", "valid_from", "expires", "services": [codes]}]
    credentials: Mapped[list[dict[str, Any]]] = mapped_column(default=list)
    also_at: Mapped[list[str]] = mapped_column(default=list)  # other locations staff are assigned to
    weekly_hours: Mapped[int | None] = mapped_column(Integer)  # staff's contracted hours a week
    retired_at: Mapped[dt.datetime | None] = mapped_column()


class Appointment(Base):
    """A case's appointment: when, where, with which resources, and where it stands
    (proposed, confirmed, cancelled, no_show, completed). A proposed one holds its resources
    until it is confirmed (the case is then scheduled) or cancelled."""

    __tablename__ = "appointment"
    __table_args__ = (Index("ix_appointment_location_start", "location_id", "starts_at"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    case_id: Mapped[str] = mapped_column(ForeignKey("service_case.id"), index=True)
    location_id: Mapped[str] = mapped_column(ForeignKey("location.id"))
    service_id: Mapped[str] = mapped_column(ForeignKey("service.id"))
    starts_at: Mapped[dt.datetime] = mapped_column()
    ends_at: Mapped[dt.datetime] = mapped_column()
    status: Mapped[str] = mapped_column(String(16))
    resource_codes: Mapped[list[str]] = mapped_column(default=list)
    # Booked in another system (an HL7 SIU feed): its id there (SCH-2 filler, else SCH-1 placer).
    # Such an appointment takes none of careops' resources: the other system owns them.
    source: Mapped[str] = mapped_column(String(16), default="careops")
    external_id: Mapped[str | None] = mapped_column(String(64), index=True)
    zone: Mapped[str | None] = mapped_column(String(64))  # a home visit's address zone
    # When its resources are held from (before ``starts_at`` by the service's preparation time).
    held_from: Mapped[dt.datetime | None] = mapped_column()
    plan_id: Mapped[str | None] = mapped_column(String(32), index=True)  # a service plan's visit
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class PriorAuthorisation(Base):
    """A payer's prior authorisation for a case's service: requested, then approved (with its
    number, units and validity) or denied. A case waiting for one leaves ``awaiting_authorisation``
    only when one is approved."""

    __tablename__ = "prior_authorisation"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    case_id: Mapped[str] = mapped_column(ForeignKey("service_case.id"), index=True)
    payer_id: Mapped[str | None] = mapped_column(ForeignKey("payer.id"))
    service_id: Mapped[str] = mapped_column(ForeignKey("service.id"))
    status: Mapped[str] = mapped_column(String(16))  # requested, approved, denied, expired
    requested_units: Mapped[int] = mapped_column(Integer, default=1)
    approved_units: Mapped[int | None] = mapped_column(Integer)
    number: Mapped[str | None] = mapped_column(String(64))
    valid_from: Mapped[dt.date | None] = mapped_column(Date)
    valid_to: Mapped[dt.date | None] = mapped_column(Date)
    decided_by: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ResourceBooking(Base):
    """One slot (``SLOT_MINUTES`` long) of a resource taken by an appointment. The primary key is
    the invariant: no resource is booked twice for the same slot, on SQLite as on PostgreSQL,
    whatever the process or the race."""

    __tablename__ = "resource_booking"
    resource_id: Mapped[str] = mapped_column(ForeignKey("resource.id"), primary_key=True)
    slot_start: Mapped[dt.datetime] = mapped_column(primary_key=True)
    appointment_id: Mapped[str] = mapped_column(ForeignKey("appointment.id"), index=True)


class CodeMapping(Base):
    """A sender's code for one of careops' records: ``sender`` (an HL7 ``APP|FACILITY`` or facility,
    a FHIR client, an email domain; ``*`` for every sender) calls ``target`` (a location slug, a
    service, referrer or payer code) ``code``. Retired, never deleted; a new version replaces one."""

    __tablename__ = "code_mapping"
    __table_args__ = (
        Index(
            "ux_code_mapping_live",
            "sender",
            "kind",
            "code",
            unique=True,
            postgresql_where=text("retired_at IS NULL"),
            sqlite_where=text("retired_at IS NULL"),
        ),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    sender: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    code: Mapped[str] = mapped_column(String(200))
    target: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    retired_at: Mapped[dt.datetime | None] = mapped_column()


class FieldOwner(Base):
    """Which system owns a field of a kind of master data (careops, erp, ehr, ...): an import or a
    connector from another source does not overwrite it, it opens an exception item instead."""

    __tablename__ = "field_owner"
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    field: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64))


class IntakeItem(Base):
    """Everything that arrived, whatever became of it: accepted, incomplete, duplicate or quarantined.

    An item that came with an ``Idempotency-Key`` is also that key's record: a retry with the same
    key and body gets ``response_status``/``response_body`` again (unique per caller and key).
    """

    __tablename__ = "intake_item"
    __table_args__ = (
        Index("ux_intake_idempotency", "principal_id", "idempotency_key", unique=True),
        # Only quarantined items are listed by status; the others need no index entry.
        Index(
            "ix_intake_quarantined",
            "id",
            postgresql_where=text("status = 'quarantined'"),
            sqlite_where=text("status = 'quarantined'"),
        ),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    channel: Mapped[str] = mapped_column(String(32))
    sender: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(32))
    reasons: Mapped[list[str]] = mapped_column(default=list)
    content_type: Mapped[str | None] = mapped_column(String(100))
    raw_payload: Mapped[str] = mapped_column(
        EncryptedText("intake_item.raw_payload"), info=phi(PhiCategory.CLINICAL_NOTE)
    )
    # The payload's exact bytes when ``raw_payload`` (text) cannot hold them: not UTF-8, or NUL.
    raw_bytes: Mapped[bytes | None] = mapped_column(
        EncryptedBytes("intake_item.raw_bytes"), info=phi(PhiCategory.CLINICAL_NOTE)
    )
    payload_sha256: Mapped[str] = mapped_column(String(64))
    normalised: Mapped[dict[str, Any] | None] = mapped_column(
        EncryptedJSON("intake_item.normalised"), info=phi(PhiCategory.CLINICAL_NOTE)
    )
    location_id: Mapped[str | None] = mapped_column(ForeignKey("location.id"))
    case_id: Mapped[str | None] = mapped_column(ForeignKey("service_case.id"))
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    principal_id: Mapped[str | None] = mapped_column(String(32))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_body: Mapped[dict[str, Any] | None] = mapped_column()


class ServiceCase(Base):
    __tablename__ = "service_case"
    __table_args__ = (
        Index("ix_case_duplicate", "patient_id", "service_id", "referrer_id", "created_at"),
        Index("ix_case_status", "status", "id"),
        Index("ix_case_location", "location_id", "id"),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    organisation_id: Mapped[str] = mapped_column(ForeignKey("organisation.id"))
    location_id: Mapped[str] = mapped_column(ForeignKey("location.id"))
    patient_id: Mapped[str] = mapped_column(ForeignKey("patient.id"))
    service_id: Mapped[str] = mapped_column(ForeignKey("service.id"))
    referrer_id: Mapped[str | None] = mapped_column(ForeignKey("referrer.id"))
    payer_id: Mapped[str | None] = mapped_column(ForeignKey("payer.id"))
    member_id: Mapped[str | None] = mapped_column(
        EncryptedText("service_case.member_id"), info=phi(PhiCategory.IDENTIFIER)
    )
    priority: Mapped[str] = mapped_column(String(16), default="routine")
    status: Mapped[str] = mapped_column(String(32))
    held_from: Mapped[str | None] = mapped_column(String(32))
    # The sender's order or referral number (HL7 ORC-2 / OBR-2 / RF1-6, FHIR identifier): what
    # results, charges and referral updates name the case by.
    order_number: Mapped[str | None] = mapped_column(String(64), index=True)
    diagnosis_codes: Mapped[list[str]] = mapped_column(default=list)  # ICD-10-CM, from referral and charges
    patient: Mapped[Patient] = relationship(Patient, lazy="select", viewonly=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Document(Base):
    """A file that came with an intake item (an email attachment, a form upload, a FHIR
    DocumentReference): kept whole, with its text when it could be extracted (PDF, plain text)."""

    __tablename__ = "document"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    intake_item_id: Mapped[str] = mapped_column(ForeignKey("intake_item.id"), index=True)
    filename: Mapped[str] = mapped_column(String(255), info=phi(PhiCategory.ATTACHMENT))
    content_type: Mapped[str] = mapped_column(String(100))
    size_bytes: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    content: Mapped[bytes] = mapped_column(
        EncryptedBytes("document.content"), info=phi(PhiCategory.ATTACHMENT)
    )
    text: Mapped[str | None] = mapped_column(
        EncryptedText("document.text"), info=phi(PhiCategory.CLINICAL_NOTE)
    )
    kind: Mapped[str] = mapped_column(String(16), default="attachment")  # attachment | report
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Result(Base):
    """A result or report (HL7 ORU^R01, FHIR DiagnosticReport) and the case it was matched to; an
    unmatched one (``case_id`` empty) waits in the results queue for a person to match it."""

    __tablename__ = "result"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    case_id: Mapped[str | None] = mapped_column(ForeignKey("service_case.id"), index=True)
    intake_item_id: Mapped[str] = mapped_column(ForeignKey("intake_item.id"))
    document_id: Mapped[str | None] = mapped_column(ForeignKey("document.id"))
    location_id: Mapped[str | None] = mapped_column(ForeignKey("location.id"))
    order_number: Mapped[str | None] = mapped_column(String(64))
    service_code: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # final | preliminary | corrected | cancelled
    matched_by: Mapped[str | None] = mapped_column(String(16))  # order_number | patient | person
    observed_at: Mapped[dt.datetime | None] = mapped_column()
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class CaseCharge(Base):
    """A charge another system posted for a case (HL7 DFT^P03 FT1): billing input."""

    __tablename__ = "case_charge"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    case_id: Mapped[str] = mapped_column(ForeignKey("service_case.id"), index=True)
    intake_item_id: Mapped[str] = mapped_column(ForeignKey("intake_item.id"))
    code: Mapped[str] = mapped_column(String(64))  # the transaction / procedure code
    quantity: Mapped[int] = mapped_column(Integer, default=1)
    amount: Mapped[float | None] = mapped_column(Float)
    currency: Mapped[str | None] = mapped_column(String(8))
    diagnosis_codes: Mapped[list[str]] = mapped_column(default=list)
    posted_on: Mapped[dt.date | None] = mapped_column(Date)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class InvoiceRequest(Base):
    """An invoice asked of billing for a billable case: its lines (from the payer's price list),
    requested, approved, sent (with the billing system's reference), paid or rejected."""

    __tablename__ = "invoice_request"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    case_id: Mapped[str] = mapped_column(ForeignKey("service_case.id"), index=True)
    location_id: Mapped[str] = mapped_column(ForeignKey("location.id"))
    payer_id: Mapped[str | None] = mapped_column(ForeignKey("payer.id"))
    status: Mapped[str] = mapped_column(String(16))
    lines: Mapped[list[dict[str, Any]]] = mapped_column(default=list)
    total: Mapped[float] = mapped_column(Float)
    external_reference: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Task(Base):
    __tablename__ = "task"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    case_id: Mapped[str] = mapped_column(ForeignKey("service_case.id"), index=True)
    kind: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(32), default="open")
    assignee: Mapped[str | None] = mapped_column(String(100))
    due_at: Mapped[dt.datetime | None] = mapped_column()
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ExceptionItem(Base):
    """Work for a human: an item in a queue with machine-readable reasons and a resolution."""

    __tablename__ = "exception_item"
    __table_args__ = (Index("ix_exception_queue", "queue", "status", "created_at"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    queue: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="open")
    reason_codes: Mapped[list[str]] = mapped_column(default=list)
    intake_item_id: Mapped[str | None] = mapped_column(ForeignKey("intake_item.id"))
    case_id: Mapped[str | None] = mapped_column(ForeignKey("service_case.id"))
    location_id: Mapped[str | None] = mapped_column(ForeignKey("location.id"))
    assignee: Mapped[str | None] = mapped_column(String(100))
    due_at: Mapped[dt.datetime | None] = mapped_column()
    resolution: Mapped[dict[str, Any] | None] = mapped_column()
    resolved_at: Mapped[dt.datetime | None] = mapped_column()
    dedupe_key: Mapped[str | None] = mapped_column(String(128), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class BusinessEvent(Base):
    """A state change or security-relevant action; together they are the tamper-evident audit log.

    Written unsealed in the transaction of the change; the worker's sealer then gives each its
    place in the hash chain (``seq``, ``prev_hash``, ``hash``; see governance/audit.py).
    """

    __tablename__ = "business_event"
    __table_args__ = (
        Index(
            "ix_event_case",
            "case_id",
            "id",
            postgresql_where=text("case_id IS NOT NULL"),
            sqlite_where=text("case_id IS NOT NULL"),
        ),
        # Partial: an event is written unsealed, so only the sealer adds its entry here.
        Index(
            "ux_event_seq",
            "seq",
            unique=True,
            postgresql_where=text("seq IS NOT NULL"),
            sqlite_where=text("seq IS NOT NULL"),
        ),
        Index(
            "ix_event_unsealed",
            "id",
            postgresql_where=text("seq IS NULL"),
            sqlite_where=text("seq IS NULL"),
        ),
        # An approval's trace (only approval events pay for this index).
        Index(
            "ix_event_approval",
            "subject_id",
            "id",
            postgresql_where=text("subject_type = 'approval'"),
            sqlite_where=text("subject_type = 'approval'"),
        ),
    )
    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    type: Mapped[str] = mapped_column(String(64))
    subject_type: Mapped[str] = mapped_column(String(32))
    subject_id: Mapped[str] = mapped_column(String(32))
    case_id: Mapped[str | None] = mapped_column(String(32))
    location_id: Mapped[str | None] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(100))
    correlation_id: Mapped[str | None] = mapped_column(String(64))
    # Plain JSON, not JSONB, on PostgreSQL too: the text is kept as written (canonical, see
    # db.canonical_json), so the audit chain can be verified without parsing every payload.
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    occurred_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    seq: Mapped[int | None] = mapped_column(BigInteger)
    prev_hash: Mapped[str | None] = mapped_column(String(64))
    hash: Mapped[str | None] = mapped_column(String(64))


class AuditCheckpoint(Base):
    """A signed head of the audit chain: HMAC-SHA256 under the secret key of ``seq:hash``.

    Whoever rewrites the chain after a checkpoint cannot re-sign it without the key; exported
    checkpoints (``careops audit checkpoint``) also catch a rewrite by someone who has the key.
    """

    __tablename__ = "audit_checkpoint"
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class OutboxMessage(Base):
    """Something that must happen after a committed event; drained by the dispatcher."""

    __tablename__ = "outbox_message"
    __table_args__ = (
        Index("ix_outbox_pending", "status", "id"),
        # Rows enter it when claimed, not when written on the request path.
        Index(
            "ix_outbox_workflow",
            "workflow_id",
            postgresql_where=text("workflow_id IS NOT NULL"),
            sqlite_where=text("workflow_id IS NOT NULL"),
        ),
    )
    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("business_event.id"))
    destination: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(String(500))
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    claimed_at: Mapped[dt.datetime | None] = mapped_column()
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    dispatched_at: Mapped[dt.datetime | None] = mapped_column()
    # The durable workflow this row was handed to, fixed at its first claim so that a re-claim
    # after a crash starts the same workflow (a no-op) rather than another.
    workflow_id: Mapped[str | None] = mapped_column(String(64))
    # The W3C traceparent of the work that wrote the row (when traced): its dispatch joins that trace.
    trace_parent: Mapped[str | None] = mapped_column(String(55))


class ApiToken(Base):
    __tablename__ = "api_token"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(default=list)
    # Location ids the token sees; None: all locations.
    locations: Mapped[list[str] | None] = mapped_column()
    # A personal token's user: it acts as that person where a person is needed (approvals).
    user_id: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime | None] = mapped_column()
    revoked_at: Mapped[dt.datetime | None] = mapped_column()
    last_used_at: Mapped[dt.datetime | None] = mapped_column()


class Role(Base):
    """An administrator's version of a role: it wins over the shipped default of the same name."""

    __tablename__ = "role"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    description: Mapped[str] = mapped_column(String(200))
    permissions: Mapped[list[str]] = mapped_column(default=list)
    # PHI category → clear | partial | hidden
    masking: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class User(Base):
    """A person who logs in to the console; the password is kept only as an argon2id hash."""

    __tablename__ = "app_user"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    display_name: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str] = mapped_column(String(200))
    roles: Mapped[list[str]] = mapped_column(default=list)
    # Location ids the user sees; None: all locations.
    locations: Mapped[list[str] | None] = mapped_column()
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[dt.datetime | None] = mapped_column()
    disabled_at: Mapped[dt.datetime | None] = mapped_column()
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    password_changed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class UserSession(Base):
    """A console login: the cookie's secret stored as SHA-256, with its CSRF token and expiry."""

    __tablename__ = "user_session"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("app_user.id"), index=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column()
    last_seen_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column()


class FieldKey(Base):
    """A data key (or the blind-index key), stored wrapped under the master key (never in clear)."""

    __tablename__ = "field_key"
    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(16))  # data | index
    wrapped: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    retired_at: Mapped[dt.datetime | None] = mapped_column()


class Connector(Base):
    """A system careops exchanges signed webhooks with: inbound (it posts to us) or outbound."""

    __tablename__ = "connector"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    direction: Mapped[str] = mapped_column(String(16))
    url: Mapped[str | None] = mapped_column(String(500))
    # Outbound: the role whose PHI masking applies to what is sent (data minimisation).
    sees_as: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    secrets: Mapped[list[ConnectorSecret]] = relationship(
        lazy="selectin", order_by="ConnectorSecret.created_at", cascade="all, delete-orphan"
    )


class ConnectorSecret(Base):
    """A signing secret (stored encrypted); several are live while one is rotated."""

    __tablename__ = "connector_secret"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    connector_name: Mapped[str] = mapped_column(ForeignKey("connector.name"), index=True)
    secret: Mapped[str] = mapped_column(EncryptedText("connector_secret.secret"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime | None] = mapped_column()


class WebhookReceipt(Base):
    """A signed inbound request already taken: the same signature again is a replay."""

    __tablename__ = "webhook_receipt"
    signature_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    connector: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)


class KpiRollup(Base):
    """One KPI's tally for a day, a location and a dimension (a channel, an outcome, a status, a
    histogram bucket ``le:<seconds>``; ``""`` for none): how many events and the sum of their
    values. Kept current from the sealed event log (``observability.rollup``), rebuildable from it."""

    __tablename__ = "kpi_rollup"
    kpi: Mapped[str] = mapped_column(String(64), primary_key=True)
    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    location_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    dimension: Mapped[str] = mapped_column(String(100), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, default=0)
    total: Mapped[float] = mapped_column(Float, default=0.0)


class KpiCursor(Base):
    """The last audit-chain entry (``seq``) the KPI roll-up has counted: each event counts once."""

    __tablename__ = "kpi_cursor"
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, default=0)


class VersionColumns:
    """The columns of a table of versioned documents (a mixin of its model): one row per version
    as loaded (its text), the active one of its name, who activated it, when and why."""

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(100))
    version: Mapped[str] = mapped_column(String(32))  # the document's own version label
    content_hash: Mapped[str] = mapped_column(String(64))
    content: Mapped[str] = mapped_column(Text)
    owner: Mapped[str] = mapped_column(String(100))
    active: Mapped[bool] = mapped_column(default=False)
    activated_by: Mapped[str | None] = mapped_column(String(100))
    reason: Mapped[str | None] = mapped_column(String(500))
    activated_at: Mapped[dt.datetime | None] = mapped_column()
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


# The stock records have their own module; importing it here registers their tables with
# ``Base.metadata`` wherever the models are loaded (migrations, the app, the tests).
from careops.domain import approvals as _approvals  # noqa: E402, F401 - registers the approval tables
from careops.domain import automation as _automation  # noqa: E402, F401 - registers the automation tables
from careops.domain import deliveries as _deliveries  # noqa: E402, F401 - registers the delivery tables
from careops.domain import staffing as _staffing  # noqa: E402, F401 - registers the staffing tables
from careops.domain import stock as _stock  # noqa: E402, F401 - registers the stock tables
