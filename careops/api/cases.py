"""/api/v1/cases: read cases with their timelines, move them through their states, record triage."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, BeforeValidator, Field

from careops.api.contract import answers
from careops.api.deps import DbDep, RecordId, require
from careops.db import in_thread
from careops.domain.cases import CaseAction, CaseStatus
from careops.domain.models import ID_PATTERN, PLAIN_TEXT
from careops.governance.principal import Principal
from careops.orchestration.cases import (
    EXPORT_COLUMNS,
    MAX_EXPORT,
    CaseFilter,
    export_cases,
    get_case,
    list_cases,
    record_triage,
    reveal_case,
    transition_case,
)

router = APIRouter(prefix="/api/v1/cases", tags=["cases"])


class TransitionIn(BaseModel):
    action: CaseAction
    reason_code: str | None = Field(
        None, pattern=r"^[a-z0-9_.:-]{1,64}$", description="A short code, not free text."
    )


class RevealIn(BaseModel):
    reason: str = Field(
        ..., min_length=10, max_length=500, description="Why the PHI is needed; kept in the audit log."
    )


class TriageIn(BaseModel):
    urgency: Literal["routine", "urgent", "stat"]


_RFC3339 = re.compile(r"\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)")


def _rfc3339(value: object) -> object:
    """Only what the document promises (RFC 3339), not every date pydantic could read."""
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise ValueError("an RFC 3339 date-time with its offset, e.g. 2026-12-01T08:00:00Z")
    return value


Timestamp = Annotated[dt.datetime, BeforeValidator(_rfc3339)]


async def case_filter(
    status: CaseStatus | None = None,
    location: str | None = Query(None, max_length=64, pattern=PLAIN_TEXT, description="Location slug"),
    service: str | None = Query(None, max_length=64, pattern=PLAIN_TEXT, description="Service code"),
    created_from: Timestamp | None = None,
    created_to: Timestamp | None = None,
) -> CaseFilter:
    return CaseFilter(status, location, service, created_from, created_to)


Filters = Annotated[CaseFilter, Depends(case_filter)]
Reader = Annotated[Principal, Depends(require("cases:read"))]


@router.get("", summary="List cases (newest first, cursor pagination)")
async def cases(
    db: DbDep,
    principal: Reader,
    filters: Filters,
    cursor: str | None = Query(None, pattern=ID_PATTERN),
    limit: int = Query(50, ge=1, le=200),
) -> dict[str, Any]:
    return await in_thread(list_cases, db, filters, cursor, limit, principal)


@router.get(
    "/export",
    summary="Cases as CSV, masked for the caller (audited)",
    response_class=Response,
    responses={"200": {"description": "The CSV", "content": {"text/csv": {"schema": {"type": "string"}}}}},
)
async def export(
    db: DbDep, principal: Reader, filters: Filters, limit: int = Query(MAX_EXPORT, ge=1, le=MAX_EXPORT)
) -> Response:
    rows = await in_thread(export_cases, db, filters, principal, limit)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=EXPORT_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    headers = {"Content-Disposition": 'attachment; filename="cases.csv"'}
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8", headers=headers)


@router.get("/{case_id}", summary="A case with its timeline of business events")
async def case(db: DbDep, case_id: RecordId, principal: Reader) -> dict[str, Any]:
    return await in_thread(get_case, db, case_id, principal)


@router.post("/{case_id}/reveal", summary="The case's PHI in clear, with a stated reason (audited)")
async def reveal(
    db: DbDep,
    case_id: RecordId,
    body: RevealIn,
    principal: Annotated[Principal, Depends(require("phi:reveal"))],
) -> dict[str, Any]:
    return await in_thread(reveal_case, db, case_id, body.reason, principal)


@router.post(
    "/{case_id}/transitions",
    summary="Apply an action; 409 lists the allowed ones",
    responses=answers(
        409, s409="The action is not allowed in the case's state; `allowed` lists those that are."
    ),
)
async def transition(
    db: DbDep,
    case_id: RecordId,
    body: TransitionIn,
    principal: Annotated[Principal, Depends(require("cases:transition"))],
) -> dict[str, Any]:
    return await in_thread(
        lambda: transition_case(db, case_id, body.action, by=principal, reason_code=body.reason_code)
    )


@router.post(
    "/{case_id}/triage",
    summary="Record triage; ends the case's triage wait",
    responses=answers(409, s409="The case is no longer open."),
)
async def triage(
    db: DbDep,
    case_id: RecordId,
    body: TriageIn,
    principal: Annotated[Principal, Depends(require("cases:transition"))],
) -> dict[str, Any]:
    return await in_thread(
        lambda: record_triage(db, case_id, body.urgency, actor=principal.id, scope=principal.scope)
    )
