"""The records an approval decides on: how each is found, where it is, the facts a policy routes
it by, the fingerprint of what is decided (a decision on a changed record is refused) and what a
final approval does to it (a replenishment or an invoice request moves to ``approved``); asking
for one submits a replenishment still in draft."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from careops.domain.events import Event
from careops.domain.models import Base, InvoiceRequest, Location, Payer, Service, ServiceCase, find
from careops.domain.staffing import StaffConflict
from careops.domain.stock import Replenishment
from careops.errors import NotFound
from careops.orchestration.billing import advance_invoice_in
from careops.orchestration.replenishment import advance_in


@dataclass(frozen=True)
class Subject:
    model: type[Base]
    facts: Callable[[Session, Any], dict[str, Any]]  # inputs derived from the record
    decided: Callable[[Any], dict[str, Any]]  # what the approval is about (its fingerprint)
    case_id: Callable[[Any], str | None]
    on_approved: Callable[[Session, Any, str, list[Event]], None] | None = None
    on_requested: Callable[[Session, Any, str], None] | None = None  # a draft is submitted


def _code(session: Session, model: type[Payer] | type[Service], id_: str | None) -> str | None:
    row = session.get(model, id_) if id_ else None
    return str(getattr(row, "code")) if row is not None else None  # noqa: B009 - Payer or Service


def _case_facts(session: Session, case: ServiceCase) -> dict[str, Any]:
    return {
        "service": _code(session, Service, case.service_id),
        "payer": _code(session, Payer, case.payer_id),
        "urgency": case.priority,
    }


def _invoice_facts(session: Session, invoice: InvoiceRequest) -> dict[str, Any]:
    return {"amount": invoice.total, "payer": _code(session, Payer, invoice.payer_id)}


def _submit_replenishment(session: Session, record: Replenishment, actor: str) -> None:
    if record.status == "draft":
        advance_in(session, record, "submit", actor=actor)


def _approve_replenishment(session: Session, record: Replenishment, actor: str, events: list[Event]) -> None:
    if record.status == "requested":
        advance_in(session, record, "approve", actor=actor, events=events)


def _approve_invoice(session: Session, invoice: InvoiceRequest, actor: str, events: list[Event]) -> None:
    case = session.get(ServiceCase, invoice.case_id)
    if invoice.status == "requested" and case is not None:
        advance_invoice_in(session, invoice, case, "approve", actor=actor, events=events)


SUBJECTS: dict[str, Subject] = {
    "case": Subject(
        ServiceCase,
        _case_facts,
        lambda c: {"service": c.service_id, "payer": c.payer_id, "priority": c.priority, "at": c.location_id},
        lambda c: c.id,
    ),
    "replenishment": Subject(
        Replenishment,
        lambda _, r: {"amount": r.value, "urgency": r.urgency, "supplier": r.supplier},
        lambda r: {"lines": r.lines, "value": r.value, "urgency": r.urgency, "supplier": r.supplier},
        lambda r: None,
        _approve_replenishment,
        _submit_replenishment,
    ),
    "invoice": Subject(
        InvoiceRequest,
        _invoice_facts,
        lambda i: {"lines": i.lines, "total": i.total},
        lambda i: i.case_id,
        _approve_invoice,
    ),
    "staff_conflict": Subject(
        StaffConflict,
        lambda _, c: {"kind": c.kind, "urgency": "urgent" if c.kind == "sickness" else "routine"},
        lambda c: {"resource": c.resource_id, "appointments": c.appointment_ids, "kind": c.kind},
        lambda c: None,
    ),
}


def fingerprint(subject_type: str, record: Any) -> str:
    decided = SUBJECTS[subject_type].decided(record)
    return hashlib.sha256(json.dumps(decided, sort_keys=True, default=str).encode()).hexdigest()


def load(session: Session, subject_type: str, subject_id: str, *, lock: bool = False) -> Any:
    subject = SUBJECTS.get(subject_type)
    record = find(session, subject.model, subject_id, for_update=lock) if subject else None
    if record is None:
        raise NotFound(f"no {subject_type} with this id")
    return record


def facts_of(session: Session, subject_type: str, record: Any, given: dict[str, Any]) -> dict[str, Any]:
    """The policy's inputs: what the caller gave (a risk score, an amount for a case), then what
    the record says (which wins: a caller cannot re-route a record by claiming other facts)."""
    location = session.get(Location, record.location_id)
    derived = SUBJECTS[subject_type].facts(session, record)
    return {
        **given,
        **{k: v for k, v in derived.items() if v is not None},
        "location": location.slug if location else None,
    }
