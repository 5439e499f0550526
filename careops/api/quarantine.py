"""/api/v1/quarantine: rejected payloads, kept whole with their reasons."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool

from careops.api.deps import DbDep, require
from careops.governance.tokens import Principal
from careops.orchestration.quarantine import get_quarantined, list_quarantined

router = APIRouter(prefix="/api/v1/quarantine", tags=["quarantine"])


@router.get("", summary="Quarantined payloads, newest first (without their bodies)")
async def quarantined(
    db: DbDep,
    principal: Annotated[Principal, Depends(require("quarantine:read"))],
    limit: int = Query(100, ge=1, le=500),
) -> dict[str, Any]:
    return {"items": await run_in_threadpool(list_quarantined, db, limit, principal.scope)}


@router.get("/{item_id}", summary="One quarantined payload with its raw body")
async def quarantined_item(
    db: DbDep, item_id: str, principal: Annotated[Principal, Depends(require("quarantine:read"))]
) -> dict[str, Any]:
    return await run_in_threadpool(get_quarantined, db, item_id, principal.scope)
