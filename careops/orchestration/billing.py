"""Billing readiness and invoice requests: from a completed case to an invoice sent and paid.

A case is ready to bill when every check its service's and payer's checklists name passes, and
always when its service is completed, every authorisation it has was approved and is valid on
the service date, and no other exception item is open on it. The check runs in the transaction of
every change that can make a difference (a completion, a result, charges) and on demand; a case
that passes becomes ``billing_ready``, one that does not gets its named discrepancies in one
finance exception item, kept current until the case passes (then it is closed).

An invoice request carries the case's lines priced from the service's price list for the payer:
requested → approved → sent (the case becomes ``invoiced``) → paid (the case is closed), or
rejected. The billing system's reference is set when it is known.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from careops.db import Database
from careops.domain.cases import CaseAction, CaseStatus, transition
from careops.domain.events import Event, EventType, record_events
from careops.domain.models import (
    Appointment,
    CaseCharge,
    Document,
    ExceptionItem,
    IntakeItem,
    InvoiceRequest,
    Payer,
    PriorAuthorisation,
    Result,
    Service,
    ServiceCase,
    find,
    new_id,
    utcnow,
)
from careops.errors import Conflict, NotFound
from careops.governance.scoping import LocationScope
from careops.orchestration.exception_queue import close_item_under, open_exception

FINANCE_QUEUE = "finance"
# CPT (five digits, or four and F, T or U) and HCPCS level II (a letter A to V and four digits).
PROCEDURE_CODE = re.compile(r"^(\d{4}[0-9FTU]|[A-V]\d{4})$")
# ICD-10-CM: a letter (not U), a digit, a digit or A/B, then up to four more after an optional dot.
DIAGNOSIS_CODE = re.compile(r"^[A-TV-Z]\d[0-9AB](\.?[0-9A-Z]{1,4})?$")
INVOICE_STEPS = {
    # step: (from statuses, to status, event, the case's action)
    "approve": (("requested",), "approved", EventType.INVOICE_APPROVED, None),
    "send": (("approved",), "sent", EventType.INVOICE_SENT, CaseAction.INVOICE),
    "pay": (("sent",), "paid", EventType.INVOICE_PAID, CaseAction.CLOSE),
    "reject": (("requested", "approved", "sent"), "rejected", EventType.INVOICE_REJECTED, None),
}
_OPEN_INVOICE = ("requested", "approved", "sent")


def _service_date(session: Session, case: ServiceCase) -> dt.date | None:
    started = session.scalars(
        select(Appointment.starts_at)
        .where(Appointment.case_id == case.id, Appointment.status == "completed")
        .order_by(Appointment.starts_at.desc())
    ).first()
    return started.date() if started else None


def discrepancies(session: Session, case: ServiceCase) -> list[str]:
    """What stands between the case and an invoice, as reason codes (empty: ready).

    Three round trips for most cases: the service and payer, one row of what the case has
    (a final report, a referral letter, authorisations, other open work), and its charges when
    the checklist asks for codes; the authorisations themselves only when there are some."""
    service, payer = session.execute(
        select(Service, Payer)
        .outerjoin(Payer, Payer.id == case.payer_id)
        .where(Service.id == case.service_id)
    ).one()
    wanted = set(service.billing_checklist) | set(payer.billing_checklist if payer else [])
    report, letter, authorised, other_work = session.execute(_what_the_case_has(case)).one()
    found: list[str] = []
    if case.status not in (CaseStatus.COMPLETED, CaseStatus.BILLING_READY, CaseStatus.INVOICED):
        found.append("service_not_completed")
    if "signed_report" in wanted and not report:
        found.append("missing_signed_report")
    if "referral_letter" in wanted and not letter:
        found.append("missing_referral_letter")
    if wanted & {"procedure_code", "diagnosis_code"}:
        found.extend(_code_problems(session, case, service, wanted))
    if authorised or "authorisation" in wanted:
        found.extend(_authorisation_problems(session, case))
    if _price(service, payer) is None:
        found.append("no_price_for_payer")
    found.extend(f"open_exception:{queue}" for queue in sorted(set((other_work or "").split(","))) if queue)
    return found


def _what_the_case_has(case: ServiceCase) -> Select[bool, bool, bool, str | None]:
    """One row: a final report, a referral letter (an attachment of its intake), any
    authorisation, and the queues of its other open exception items (comma-separated)."""
    report = select(Result.id).where(Result.case_id == case.id, Result.status.in_(("final", "corrected")))
    letter = (
        select(Document.id)
        .join(IntakeItem, IntakeItem.id == Document.intake_item_id)
        .where(IntakeItem.case_id == case.id, Document.kind == "attachment")
    )
    authorisation = select(PriorAuthorisation.id).where(PriorAuthorisation.case_id == case.id)
    other_work = select(func.aggregate_strings(ExceptionItem.queue, ",")).where(
        ExceptionItem.case_id == case.id, ExceptionItem.status == "open", ExceptionItem.queue != FINANCE_QUEUE
    )
    return select(report.exists(), letter.exists(), authorisation.exists(), other_work.scalar_subquery())


def _code_problems(session: Session, case: ServiceCase, service: Service, wanted: set[str]) -> list[str]:
    """Procedure codes (the charges' and the service's: one CPT or HCPCS) and diagnosis codes (the
    case's and the charges': all ICD-10-CM), as the checklist asks."""
    charges = session.execute(
        select(CaseCharge.code, CaseCharge.diagnosis_codes).where(CaseCharge.case_id == case.id)
    ).all()
    found = []
    if "procedure_code" in wanted:
        codes = [code for code, _ in charges] + ([service.procedure_code] if service.procedure_code else [])
        if not codes:
            found.append("missing_procedure_code")
        elif not any(PROCEDURE_CODE.match(code) for code in codes):
            found.append("invalid_procedure_code")
    if "diagnosis_code" in wanted:
        codes = [*case.diagnosis_codes, *(code for _, diagnoses in charges for code in diagnoses)]
        if not codes:
            found.append("missing_diagnosis_code")
        elif not all(DIAGNOSIS_CODE.match(code) for code in codes):
            found.append("invalid_diagnosis_code")
    return found


def _authorisation_problems(session: Session, case: ServiceCase) -> list[str]:
    """A case with authorisations (or whose checklist wants one) needs one approved and valid on
    the service date."""
    records = session.scalars(select(PriorAuthorisation).where(PriorAuthorisation.case_id == case.id)).all()
    approved = [r for r in records if r.status in ("approved", "expired")]  # expired since: valid then
    if not approved:
        return ["authorisation_not_approved"]
    on = _service_date(session, case)
    if on is not None and not any(
        r.valid_from is not None and r.valid_to is not None and r.valid_from <= on <= r.valid_to
        for r in approved
    ):
        return ["authorisation_not_valid_on_service_date"]
    return []


def _price(service: Service, payer: Payer | None) -> float | None:
    price = service.prices.get(payer.code if payer else "SELF")
    return float(price) if price is not None else None


def check_readiness(session: Session, case: ServiceCase, *, actor: str) -> list[str]:
    """In the caller's transaction: a completed case that passes becomes ``billing_ready``; one
    that does not has its discrepancies in an open finance item. Other statuses are left alone."""
    if case.status != CaseStatus.COMPLETED:
        return discrepancies(session, case) if case.status != CaseStatus.BILLING_READY else []
    found = discrepancies(session, case)
    key = f"billing:{case.id}"
    if found:
        open_exception(session, FINANCE_QUEUE, found, actor=actor, case=case, dedupe_key=key)
        record_events(
            session,
            Event.about_case(
                EventType.BILLING_DISCREPANCIES_FOUND, case, actor=actor, payload={"reason_codes": found}
            ),
        )
        return found
    transition(session, case, CaseAction.MARK_BILLING_READY, actor=actor, reason_code="checklist_passed")
    close_item_under(session, key, "checklist_passed", actor=actor)
    return []


def check_case(db: Database, case_id: str, *, actor: str, scope: LocationScope) -> dict[str, Any]:
    """Run the readiness check on demand: what it found, and the case's status after it."""
    with db.transaction() as session:
        case = find(session, ServiceCase, case_id, for_update=True)
        if case is None or not scope.allows(case.location_id):
            raise NotFound("no case with this id")
        found = check_readiness(session, case, actor=actor)
        return {"case_id": case.id, "case_status": case.status, "ready": not found, "discrepancies": found}


def invoice_view(invoice: InvoiceRequest) -> dict[str, Any]:
    return {
        "id": invoice.id,
        "case_id": invoice.case_id,
        "status": invoice.status,
        "lines": invoice.lines,
        "total": invoice.total,
        "external_reference": invoice.external_reference,
    }


def _event(kind: EventType, invoice: InvoiceRequest, case: ServiceCase, actor: str) -> Event:
    payload = {"invoice_id": invoice.id, "status": invoice.status, "total": invoice.total}
    return Event.about_case_record(kind, "invoice", invoice.id, case, actor=actor, payload=payload)


def request_invoice(db: Database, case_id: str, *, actor: str, scope: LocationScope) -> dict[str, Any]:
    """An invoice request for a billing-ready case: the service at the payer's price, and each
    charge posted for the case as its own line. One open request per case."""
    with db.transaction() as session:
        case = find(session, ServiceCase, case_id, for_update=True)
        if case is None or not scope.allows(case.location_id):
            raise NotFound("no case with this id")
        return invoice_view(invoice_case(session, case, actor=actor))


def invoice_case(session: Session, case: ServiceCase, *, actor: str) -> InvoiceRequest:
    """In the caller's transaction: the invoice request of a billing-ready case (409 when it is
    not, or one is already open, or the service has no price for its payer)."""
    if case.status != CaseStatus.BILLING_READY:
        raise Conflict(f"the case is {case.status}, not billing_ready", case_status=case.status)
    open_one = session.scalars(
        select(InvoiceRequest.id).where(
            InvoiceRequest.case_id == case.id, InvoiceRequest.status.in_(_OPEN_INVOICE)
        )
    ).first()
    if open_one is not None:
        raise Conflict("an invoice of this case is already open", invoice_id=open_one)
    service = session.get(Service, case.service_id)
    payer = session.get(Payer, case.payer_id) if case.payer_id else None
    assert service is not None
    price = _price(service, payer)
    if price is None:
        raise Conflict("the service has no price for the case's payer")
    lines: list[dict[str, Any]] = [
        {
            "code": service.procedure_code or service.code,
            "quantity": 1,
            "unit_price": price,
            "amount": price,
        }
    ]
    for charge in session.scalars(select(CaseCharge).where(CaseCharge.case_id == case.id)):
        amount = charge.amount or 0.0
        lines.append({"code": charge.code, "quantity": charge.quantity, "unit_price": None, "amount": amount})
    total = round(math.fsum(line["amount"] for line in lines), 2)
    invoice = InvoiceRequest(
        id=new_id(),
        case_id=case.id,
        location_id=case.location_id,
        payer_id=case.payer_id,
        status="requested",
        lines=lines,
        total=total,
    )
    session.add(invoice)
    session.flush()
    record_events(session, _event(EventType.INVOICE_REQUESTED, invoice, case, actor))
    return invoice


def advance_invoice(
    db: Database,
    invoice_id: str,
    step: str,
    *,
    actor: str,
    scope: LocationScope,
    external_reference: str | None = None,
) -> dict[str, Any]:
    """Approve, send, record payment of or reject an invoice request; ``send`` makes the case
    ``invoiced`` and ``pay`` closes it. The billing system's reference can come with any step."""
    with db.transaction() as session:
        invoice = find(session, InvoiceRequest, invoice_id, for_update=True)
        case = session.get(ServiceCase, invoice.case_id) if invoice is not None else None
        if invoice is None or case is None or not scope.allows(case.location_id):
            raise NotFound("no invoice request with this id")
        return advance_invoice_in(
            session, invoice, case, step, actor=actor, external_reference=external_reference
        )


def advance_invoice_in(
    session: Session,
    invoice: InvoiceRequest,
    case: ServiceCase,
    step: str,
    *,
    actor: str,
    external_reference: str | None = None,
    events: list[Event] | None = None,
) -> dict[str, Any]:
    """``advance_invoice`` in the caller's transaction, on an invoice it has locked (as an
    approval's outcome does); its event goes to ``events`` when given."""
    allowed_from, status, event_type, action = INVOICE_STEPS[step]
    if invoice.status not in allowed_from:
        raise Conflict(f"cannot {step} an invoice that is {invoice.status}", invoice_status=invoice.status)
    invoice.status = status
    invoice.updated_at = utcnow()
    if external_reference:
        invoice.external_reference = external_reference[:100]
    if action is not None:
        transition(session, case, action, actor=actor, reason_code=f"invoice_{status}")
    made = _event(event_type, invoice, case, actor)
    if events is None:
        record_events(session, made)
    else:
        events.append(made)
    return invoice_view(invoice)


def case_invoices(session: Session, case_id: str) -> list[dict[str, Any]]:
    rows = session.scalars(
        select(InvoiceRequest).where(InvoiceRequest.case_id == case_id).order_by(InvoiceRequest.created_at)
    )
    return [invoice_view(r) for r in rows]


def blocked_cases(db: Database, scope: LocationScope, limit: int = 200) -> list[dict[str, Any]]:
    """Completed cases the billing check holds back: their open finance items, oldest first."""
    with db.sessions() as session:
        rows = session.execute(
            select(ExceptionItem, ServiceCase.status, Service.code)
            .join(ServiceCase, ServiceCase.id == ExceptionItem.case_id)
            .join(Service, Service.id == ServiceCase.service_id)
            .where(ExceptionItem.queue == FINANCE_QUEUE, ExceptionItem.status == "open")
            .order_by(ExceptionItem.created_at)
            .limit(limit)
        ).all()
        return [
            {
                "exception_id": item.id,
                "case_id": item.case_id,
                "case_status": status,
                "service": code,
                "discrepancies": list(item.reason_codes),
                "since": item.created_at.isoformat(),
            }
            for item, status, code in rows
            if scope.allows(item.location_id)
        ]
