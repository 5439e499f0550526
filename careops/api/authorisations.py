"""/api/v1/cases/{case_id}/authorisations and /api/v1/authorisations: request a case's prior
authorisation from its payer, and record the payer's approval (which lets the case be scheduled) or
denial."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from careops.api.contract import answers
from careops.api.deps import DbDep, RecordId, require
from careops.db import in_thread
from careops.domain.models import PLAIN_TEXT
from careops.governance.principal import Principal
from careops.orchestration.authorisations import decide_authorisation, request_authorisation

router = APIRouter(prefix="/api/v1", tags=["authorisations"])
Decider = Annotated[Principal, Depends(require("approvals:decide"))]


class RequestIn(BaseModel):
    units: int = Field(1, ge=1, le=1000, description="How many of the service are asked for.")


class ApprovalIn(BaseModel):
    number: str = Field(min_length=1, max_length=64, pattern=PLAIN_TEXT, description="The payer's number.")
    valid_from: dt.date
    valid_days: int = Field(ge=1, le=3660, description="How many days it is valid, from valid_from.")
    units: int | None = Field(None, ge=1, le=1000, description="Approved units (default: those asked).")


@router.post(
    "/cases/{case_id}/authorisations",
    status_code=201,
    summary="Request the case's prior authorisation from its payer",
    responses=answers(
        404, 409, s409="The case is not awaiting an authorisation, or one is already requested."
    ),
)
async def request(
    db: DbDep,
    case_id: RecordId,
    body: RequestIn,
    principal: Annotated[Principal, Depends(require("cases:transition"))],
) -> dict[str, Any]:
    return await in_thread(
        lambda: request_authorisation(db, case_id, body.units, actor=principal.id, scope=principal.scope)
    )


@router.post(
    "/authorisations/{authorisation_id}/approve",
    summary="Record the payer's approval: the case becomes ready to schedule",
    responses=answers(404, 409, s409="The authorisation is not requested (already decided)."),
)
async def approve(
    db: DbDep, authorisation_id: RecordId, body: ApprovalIn, principal: Decider
) -> dict[str, Any]:
    valid_to = body.valid_from + dt.timedelta(days=body.valid_days - 1)
    return await in_thread(
        lambda: decide_authorisation(
            db, authorisation_id, approved=True, actor=principal.id, scope=principal.scope,
            number=body.number, valid_from=body.valid_from, valid_to=valid_to, units=body.units,
        )
    )  # fmt: skip


@router.post(
    "/authorisations/{authorisation_id}/deny",
    summary="Record the payer's denial: the case keeps waiting (request again, or cancel it)",
    responses=answers(404, 409, s409="The authorisation is not requested (already decided)."),
)
async def deny(db: DbDep, authorisation_id: RecordId, principal: Decider) -> dict[str, Any]:
    return await in_thread(
        lambda: decide_authorisation(
            db, authorisation_id, approved=False, actor=principal.id, scope=principal.scope
        )
    )
