"""/api/v1/results: results and reports received (HL7 ORU^R01), those waiting for a case, and
matching one to its case by hand."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from careops.api.contract import answers
from careops.api.deps import DbDep, RecordId, require
from careops.db import in_thread
from careops.domain.models import ID_PATTERN
from careops.governance.principal import Principal
from careops.orchestration.results import list_results, match_result

router = APIRouter(prefix="/api/v1/results", tags=["results"])


class MatchIn(BaseModel):
    case_id: str = Field(pattern=ID_PATTERN, description="The case the result belongs to.")


@router.get("", summary="Results, newest first; unmatched=true: those waiting for a case")
async def results(
    db: DbDep,
    principal: Annotated[Principal, Depends(require("cases:read"))],
    unmatched: bool = Query(False),
    limit: int = Query(100, ge=1, le=500),
) -> dict[str, Any]:
    return {
        "items": await in_thread(
            lambda: list_results(db, unmatched=unmatched, scope=principal.scope, limit=limit)
        )
    }


@router.post(
    "/{result_id}/match",
    summary="Put an unmatched result on its case (which completes it when its appointment is done)",
    responses=answers(404, 409, s409="The result is already on a case, or the case takes no result."),
)
async def match(
    db: DbDep,
    result_id: RecordId,
    body: MatchIn,
    principal: Annotated[Principal, Depends(require("cases:transition"))],
) -> dict[str, Any]:
    return await in_thread(
        lambda: match_result(db, result_id, body.case_id, actor=principal.id, scope=principal.scope)
    )
