"""/api/v1/cases/{case_id}/billing-readiness, /api/v1/cases/{case_id}/invoices and
/api/v1/invoices: check a case against its billing checklist, request its invoice, and move the
invoice request through approved, sent (the case is invoiced), paid (the case is closed) or
rejected."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from careops.api.contract import answers
from careops.api.deps import DbDep, RecordId, require
from careops.db import in_thread
from careops.domain.models import PLAIN_TEXT
from careops.governance.principal import Principal
from careops.orchestration.billing import advance_invoice, check_case, request_invoice

router = APIRouter(prefix="/api/v1", tags=["billing"])
Billing = Annotated[Principal, Depends(require("billing:approve"))]


class StepIn(BaseModel):
    external_reference: str | None = Field(
        None, min_length=1, max_length=100, pattern=PLAIN_TEXT, description="The billing system's reference."
    )


@router.post(
    "/cases/{case_id}/billing-readiness",
    summary="Check the case against its billing checklist: billing_ready, or its discrepancies",
    responses=answers(404),
)
async def readiness(db: DbDep, case_id: RecordId, principal: Billing) -> dict[str, Any]:
    return await in_thread(lambda: check_case(db, case_id, actor=principal.id, scope=principal.scope))


@router.post(
    "/cases/{case_id}/invoices",
    status_code=201,
    summary="Request the invoice of a billing-ready case, priced for its payer",
    responses=answers(
        404, 409, s409="The case is not billing_ready, an invoice is already open, or there is no price."
    ),
)
async def invoice(db: DbDep, case_id: RecordId, principal: Billing) -> dict[str, Any]:
    return await in_thread(lambda: request_invoice(db, case_id, actor=principal.id, scope=principal.scope))


@router.post(
    "/invoices/{invoice_id}/{step}",
    summary="Approve, send, record the payment of, or reject an invoice request",
    responses=answers(404, 409, s409="The invoice is not in a status this step follows."),
)
async def step(
    db: DbDep,
    invoice_id: RecordId,
    step: Literal["approve", "send", "pay", "reject"],
    body: StepIn,
    principal: Billing,
) -> dict[str, Any]:
    return await in_thread(
        lambda: advance_invoice(
            db,
            invoice_id,
            step,
            actor=principal.id,
            scope=principal.scope,
            external_reference=body.external_reference,
        )
    )
