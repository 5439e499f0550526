"""/api/v1/stock and /api/v1/replenishments: stock levels per location, stock moves (receipt,
consumption, transfer, adjustment), and replenishment requests through to their purchase order
and receipt."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import AfterValidator, BaseModel, Field, WithJsonSchema

from careops.api.contract import answers
from careops.api.deps import DbDep, RecordId, SettingsDep, require
from careops.db import in_thread
from careops.domain.master_data import KeyText, Slug
from careops.domain.models import PLAIN_TEXT
from careops.errors import Conflict
from careops.governance.principal import Principal
from careops.orchestration.inventory import Move, move_stock, move_stocks, stock
from careops.orchestration.replenishment import advance, draft, from_thresholds, list_replenishments

router = APIRouter(prefix="/api/v1", tags=["inventory"])
Stocker = Annotated[Principal, Depends(require("inventory:adjust"))]
Text = Annotated[str, Field(min_length=1, max_length=200, pattern=PLAIN_TEXT)]


Quantity = Annotated[int, Field(ge=1, le=1_000_000)]


class ReceiptIn(BaseModel):
    kind: Literal["receipt", "consumption"]
    location: Slug
    item: KeyText
    quantity: Quantity
    reason: Text | None = None


class TransferIn(BaseModel):
    kind: Literal["transfer"]
    location: Slug
    item: KeyText
    quantity: Quantity
    to_location: Slug = Field(description="Where it goes (another location).")
    reason: Text | None = None


def _not_zero(value: int) -> int:
    if value == 0:
        raise ValueError("an adjustment changes the level: a quantity other than 0")
    return value


class AdjustmentIn(BaseModel):
    kind: Literal["adjustment"]
    location: Slug
    item: KeyText
    quantity: Annotated[
        int,
        AfterValidator(_not_zero),
        WithJsonSchema({"type": "integer", "minimum": -1_000_000, "maximum": 1_000_000, "not": {"const": 0}}),
    ] = Field(description="Signed: what it adds to the level (a count's difference, a write-off).")
    reason: Text = Field(description="Why: a count, a write-off, a breakage.")


MoveIn = Annotated[ReceiptIn | TransferIn | AdjustmentIn, Field(discriminator="kind")]


class LineIn(BaseModel):
    item: KeyText
    quantity: int = Field(ge=1, le=1_000_000)


class ReplenishmentIn(BaseModel):
    location: Slug
    lines: list[LineIn] = Field(
        default_factory=list, max_length=200, description="Empty: from the thresholds."
    )
    supplier: KeyText | None = None
    urgency: Literal["routine", "urgent"] = "routine"


class StepIn(BaseModel):
    external_reference: Text | None = Field(None, description="The purchase order's number (with `order`).")


@router.get("/stock", summary="A location's stock levels by item", responses=answers(404))
async def levels(
    db: DbDep,
    principal: Annotated[Principal, Depends(require("inventory:adjust"))],
    location: Annotated[str, Query(min_length=1, max_length=64, pattern=PLAIN_TEXT)],
    below: bool = Query(False, description="Only the items under their minimum."),
) -> dict[str, Any]:
    return {"items": await in_thread(stock, db, location, principal.scope, below)}


@router.post(
    "/stock/moves",
    status_code=201,
    summary="Receive, consume, transfer or adjust stock; the levels it changed",
    responses=answers(
        404, 409, 422, s409="More than is on hand, or a transfer to the same location.", s422="Not a move."
    ),
)
async def move(db: DbDep, principal: Stocker, body: MoveIn) -> dict[str, Any]:
    request = _move(body)
    return {
        "levels": await in_thread(lambda: move_stock(db, request, actor=principal.id, scope=principal.scope))
    }


def _move(body: ReceiptIn | TransferIn | AdjustmentIn) -> Move:
    return Move(
        body.location, body.item, body.kind, body.quantity, body.reason, getattr(body, "to_location", None)
    )


class MovesIn(BaseModel):
    moves: list[MoveIn] = Field(min_length=1, max_length=500)


@router.post(
    "/stock/moves/batch",
    status_code=201,
    summary="Apply up to 500 moves in order, all or none (a handheld's scans, a count sheet)",
    responses=answers(
        404, 409, 422, s409="A move would take more than is on hand (named by its place): none is applied.",
        s422="Not a list of moves.",
    ),
)  # fmt: skip
async def move_batch(db: DbDep, principal: Stocker, body: MovesIn) -> dict[str, Any]:
    requests = [_move(m) for m in body.moves]
    levels = await in_thread(lambda: move_stocks(db, requests, actor=principal.id, scope=principal.scope))
    return {"applied": len(levels), "levels": levels}


@router.get("/replenishments", summary="Replenishment requests, newest first")
async def replenishments(
    db: DbDep,
    principal: Stocker,
    status: Literal["draft", "requested", "approved", "ordered", "received", "cancelled"] | None = None,
) -> dict[str, Any]:
    return {"items": await in_thread(list_replenishments, db, principal.scope, status)}


@router.post(
    "/replenishments",
    status_code=201,
    summary="Draft a replenishment request (from the thresholds when no lines are given)",
    responses=answers(404, 409, s409="No line given and nothing is under its minimum."),
)
async def create(db: DbDep, principal: Stocker, body: ReplenishmentIn) -> dict[str, Any]:
    who, scope = principal.id, principal.scope
    if body.lines:
        lines = [(line.item, line.quantity) for line in body.lines]
        return await in_thread(
            lambda: draft(
                db, body.location, lines, actor=who, scope=scope, supplier=body.supplier, urgency=body.urgency
            )
        )
    made = await in_thread(lambda: from_thresholds(db, body.location, actor=who, scope=scope))
    if made is None:
        raise Conflict("nothing at this location is under its minimum: name the lines")
    return made


@router.post(
    "/replenishments/{replenishment_id}/{step}",
    summary="Submit, approve, order, receive (into stock) or cancel a replenishment request",
    responses=answers(
        403, 404, 409, s403="The requester may not approve it.", s409="Not in a status the step follows."
    ),
)
async def step(
    db: DbDep,
    settings: SettingsDep,
    replenishment_id: RecordId,
    step: Literal["submit", "approve", "order", "receive", "cancel"],
    body: StepIn,
    principal: Annotated[Principal, Depends(require("inventory:adjust"))],
) -> dict[str, Any]:
    return await in_thread(
        lambda: advance(
            db, replenishment_id, step, actor=principal.id, scope=principal.scope,
            external_reference=body.external_reference, duties=settings.separation_of_duties,
        )
    )  # fmt: skip
