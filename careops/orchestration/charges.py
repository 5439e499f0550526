"""Charges another system posts for a case (HL7 DFT^P03): billing input on the case.

Each FT1 line becomes a charge on the case its order number (or patient and service) names; the
diagnoses they carry join the case's; ``charges.recorded`` is written and the case's billing
readiness checked again. Charges for no known case wait in the finance queue.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy.orm import Session

from careops.db import Database
from careops.domain.events import Event, EventType
from careops.domain.models import Base, CaseCharge, ServiceCase, new_id
from careops.domain.referrals import PatientIn
from careops.orchestration.billing import FINANCE_QUEUE, check_readiness
from careops.orchestration.intake import CatalogueCache, IntakeAnswer, IntakeRequest
from careops.orchestration.registrations import CaseMessage, apply_to_case, case_body


@dataclass(frozen=True)
class Charge:
    code: str
    quantity: int
    amount: float | None
    currency: str | None
    diagnosis_codes: tuple[str, ...]
    posted_on: str | None


def record_charges(
    db: Database,
    request: IntakeRequest,
    patient_in: PatientIn,
    location: str | None,
    order_numbers: tuple[str, ...],
    charges: list[Charge],
    diagnoses: list[str],
    catalogue: CatalogueCache,
) -> IntakeAnswer:
    """Put the charges on their case, or in the finance queue when none matches."""
    message = CaseMessage(order_numbers, patient_in, None, location)
    normalised = {
        "patient": patient_in.model_dump(exclude_none=True),
        "charges": [charge.__dict__ for charge in charges],
        "diagnoses": diagnoses,
    }

    def apply(session: Session, case: ServiceCase, item_id: str) -> tuple[IntakeAnswer, list[Base]]:
        rows: list[Base] = [
            CaseCharge(
                id=new_id(),
                case_id=case.id,
                intake_item_id=item_id,
                code=charge.code,
                quantity=charge.quantity,
                amount=charge.amount,
                currency=charge.currency,
                diagnosis_codes=list(charge.diagnosis_codes),
                posted_on=dt.date.fromisoformat(charge.posted_on) if charge.posted_on else None,
            )
            for charge in charges
        ]
        codes = [*diagnoses, *(code for charge in charges for code in charge.diagnosis_codes)]
        case.diagnosis_codes = list(dict.fromkeys([*case.diagnosis_codes, *codes]))[:50]
        total = round(sum(charge.amount or 0.0 for charge in charges), 2)
        recorded = Event.about_case(
            EventType.CHARGES_RECORDED,
            case,
            actor=request.principal_id,
            payload={"intake_item_id": item_id, "lines": len(charges), "total": total},
        )
        return IntakeAnswer(
            200, case_body("charges_recorded", case, item_id, lines=len(rows)), [recorded]
        ), rows

    return apply_to_case(
        db,
        request,
        message,
        normalised,
        catalogue,
        apply,
        ("unmatched_charges", FINANCE_QUEUE),
        after=lambda session, case: check_readiness(session, case, actor=request.principal_id),
    )
