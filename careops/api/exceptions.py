"""/api/v1/exceptions: the exception queues, oldest first, and their resolution."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from careops.api.contract import answers
from careops.api.deps import DbDep, RecordId, SettingsDep, require
from careops.db import in_thread
from careops.domain.models import PLAIN_TEXT
from careops.governance.principal import Principal
from careops.orchestration.exception_queue import (
    close_exception,
    get_exception,
    list_exceptions,
    resolve_intake_exception,
)
from careops.orchestration.mappings import waiting_codes

router = APIRouter(prefix="/api/v1/exceptions", tags=["exceptions"])


class ResolveIn(BaseModel):
    fields: dict[str, Annotated[str, Field(max_length=200)]] = Field(
        default_factory=dict,
        description="Values for the missing or invalid fields, by dotted name.",
        examples=[{"patient.birth_date": "1980-04-12", "service_code": "XRAY-CHEST"}],
    )


@router.get("", summary="An exception queue, oldest first, with each item's age")
async def exceptions(
    db: DbDep,
    principal: Annotated[Principal, Depends(require("exceptions:read"))],
    queue: str | None = Query("intake", max_length=64, pattern=PLAIN_TEXT),
    status: Literal["open", "resolved"] = "open",
    limit: int = Query(100, ge=1, le=500),
) -> dict[str, Any]:
    return {"items": await in_thread(list_exceptions, db, queue, status, limit, principal.scope)}


@router.get("/{exception_id}", summary="One exception item")
async def exception(
    db: DbDep, exception_id: RecordId, principal: Annotated[Principal, Depends(require("exceptions:read"))]
) -> dict[str, Any]:
    return await in_thread(get_exception, db, exception_id, principal.scope)


@router.post(
    "/{exception_id}/resolve",
    summary="Supply missing fields; the case is created exactly once",
    responses=answers(
        409,
        422,
        s409="The item is already resolved.",
        s422="The fields are not valid, or the referral is still incomplete (`reason_codes`).",
    ),
)
async def resolve(
    request: Request,
    db: DbDep,
    settings: SettingsDep,
    exception_id: RecordId,
    body: ResolveIn,
    principal: Annotated[Principal, Depends(require("exceptions:resolve"))],
) -> dict[str, Any]:
    return await in_thread(
        lambda: resolve_intake_exception(
            db,
            exception_id,
            body.fields,
            actor=principal.id,
            settings=settings,
            catalogue=request.app.state.catalogue,
            scope=principal.scope,
        )
    )


class CloseIn(BaseModel):
    outcome: str = Field(
        min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$", description="What was done, e.g. `merged`."
    )


@router.post(
    "/{exception_id}/close",
    summary="Close an item of a queue other than intake once it has been dealt with",
    responses=answers(404, 409, s409="The item is already resolved, or is an intake item (resolve it)."),
)
async def close(
    db: DbDep,
    exception_id: RecordId,
    body: CloseIn,
    principal: Annotated[Principal, Depends(require("exceptions:resolve"))],
) -> dict[str, Any]:
    return await in_thread(
        lambda: close_exception(db, exception_id, body.outcome, actor=principal.id, scope=principal.scope)
    )


@router.get(
    "/{exception_id}/suggestions",
    summary="The unknown codes an item waits on, each with likely targets and their confidence",
    responses=answers(404),
)
async def suggestions(
    db: DbDep, exception_id: RecordId, principal: Annotated[Principal, Depends(require("exceptions:read"))]
) -> dict[str, Any]:
    codes = await in_thread(waiting_codes, db, exception_id, principal.scope)
    return {"codes": [{**code, "suggestions": [vars(s) for s in code["suggestions"]]} for code in codes]}
