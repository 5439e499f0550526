"""/api/v1/quarantine: rejected payloads, kept whole with their reasons."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from careops.api.contract import answers
from careops.api.deps import DbDep, RecordId, require
from careops.db import in_thread
from careops.governance.principal import Principal
from careops.integrations.inbound.channels import Inbound
from careops.integrations.inbound.replay import discard, replay
from careops.orchestration.quarantine import get_quarantined, list_quarantined

router = APIRouter(prefix="/api/v1/quarantine", tags=["quarantine"])


@router.get("", summary="Quarantined payloads, newest first (without their bodies)")
async def quarantined(
    db: DbDep,
    principal: Annotated[Principal, Depends(require("quarantine:read"))],
    limit: int = Query(100, ge=1, le=500),
) -> dict[str, Any]:
    return {"items": await in_thread(list_quarantined, db, limit, principal.scope)}


@router.get("/{item_id}", summary="One quarantined payload with its raw body")
async def quarantined_item(
    db: DbDep, item_id: RecordId, principal: Annotated[Principal, Depends(require("quarantine:read"))]
) -> dict[str, Any]:
    return await in_thread(get_quarantined, db, item_id, principal)


class DiscardIn(BaseModel):
    reason: str = Field(min_length=1, max_length=500, description="Why the payload is given up (audited).")


@router.post(
    "/{item_id}/replay",
    summary="Run a quarantined payload through its channel again",
    responses=answers(
        409,
        422,
        s409="Already replayed or discarded.",
        s422="Still refused: it stays in quarantine with the new `reason_codes`.",
    ),
)
async def replay_item(
    request: Request,
    item_id: RecordId,
    principal: Annotated[Principal, Depends(require("quarantine:replay"))],
) -> dict[str, Any]:
    inbound: Inbound = request.app.state.inbound
    return await in_thread(lambda: replay(inbound, item_id, actor=principal.id, scope=principal.scope))


@router.post(
    "/{item_id}/discard",
    summary="Give up on a quarantined payload, saying why",
    responses=answers(409, s409="No longer in quarantine."),
)
async def discard_item(
    db: DbDep,
    item_id: RecordId,
    body: DiscardIn,
    principal: Annotated[Principal, Depends(require("quarantine:replay"))],
) -> dict[str, Any]:
    return await in_thread(
        lambda: discard(db, item_id, body.reason, actor=principal.id, scope=principal.scope)
    )
