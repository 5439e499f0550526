"""/api/v1/staffing: shifts, home-care service plans, staffing conflicts with their ranked
candidates, and reassignment."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import AwareDatetime, BaseModel, Field

from careops.api.contract import answers
from careops.api.deps import DbDep, RecordId, Zone, require
from careops.db import in_thread
from careops.domain.master_data import KeyText, Slug
from careops.domain.models import ID_PATTERN, PLAIN_TEXT
from careops.domain.staffing import ConflictKind
from careops.governance.principal import Principal
from careops.orchestration.service_plans import PlanRequest, create_plan, get_plan, plan_shift, shifts
from careops.orchestration.staffing import (
    ConflictReport,
    candidates,
    open_conflicts,
    reassign,
    report_conflict,
    withdraw,
)

router = APIRouter(prefix="/api/v1/staffing", tags=["staffing"])
Supervisor = Annotated[Principal, Depends(require("staff:reassign"))]
Note = Annotated[str, Field(min_length=1, max_length=500, pattern=PLAIN_TEXT)]


class ShiftIn(BaseModel):
    staff: KeyText
    location: Slug
    starts_at: AwareDatetime
    ends_at: AwareDatetime = Field(description="After the start, within 24 hours of it.")


class VisitTime(BaseModel):
    weekday: Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    time: str = Field(
        pattern=r"^([01]\d|2[0-3]):[0-5][05]$", description="Location time, on a 5-minute boundary."
    )


class PlanIn(BaseModel):
    case_id: str = Field(pattern=ID_PATTERN)
    zone: Zone = Field(description="The patient's address zone.")
    pattern: list[VisitTime] = Field(min_length=1, max_length=21)
    first_day: dt.date
    last_day: dt.date = Field(description="At most 92 days after the first.")
    staff: KeyText | None = Field(None, description="The member of staff to book first (continuity of care).")


class ConflictIn(BaseModel):
    staff: KeyText
    kind: ConflictKind
    shift_id: str | None = Field(None, pattern=ID_PATTERN, description="Every open visit in this shift.")
    appointment_ids: list[Annotated[str, Field(pattern=ID_PATTERN)]] = Field(
        default_factory=list, max_length=200, description="These visits (instead of a shift or a span)."
    )
    starts_at: AwareDatetime | None = Field(None, description="With `ends_at`: every open visit in the span.")
    ends_at: AwareDatetime | None = None
    day: dt.date | None = Field(
        None, description="Every open visit that day (the staff member's location time)."
    )
    note: Note | None = None


class ReassignIn(BaseModel):
    staff: KeyText = Field(description="The member of staff who takes the visits over.")


class WithdrawIn(BaseModel):
    reason: str = Field("", max_length=500, pattern=PLAIN_TEXT)


@router.post(
    "/shifts",
    status_code=201,
    summary="Plan a shift of a member of staff at a location",
    responses=answers(
        404, 409, 422, s409="It overlaps another shift of theirs.", s422="It ends before it starts."
    ),
)
async def new_shift(db: DbDep, principal: Supervisor, body: ShiftIn) -> dict[str, Any]:
    return await in_thread(
        lambda: plan_shift(
            db,
            body.staff,
            body.location,
            body.starts_at,
            body.ends_at,
            actor=principal.id,
            scope=principal.scope,
        )
    )


@router.get("/shifts", summary="The planned shifts at a location starting in a span", responses=answers(404))
async def list_shifts(
    db: DbDep,
    principal: Supervisor,
    location: Annotated[str, Query(min_length=1, max_length=64, pattern=PLAIN_TEXT)],
    start: Annotated[AwareDatetime, Query(alias="from")],
    end: Annotated[AwareDatetime, Query(alias="to")],
) -> dict[str, Any]:
    return {"items": await in_thread(shifts, db, location, start, end, principal.scope)}


@router.post(
    "/plans",
    status_code=201,
    summary="Book a home-care case's plan of visits (whole or not at all)",
    responses=answers(
        404, 409, 422, s409="The case is not ready to schedule, or a visit finds no free staff.",
        s422="No visit in the plan, or longer than 92 days.",
    ),
)  # fmt: skip
async def new_plan(db: DbDep, principal: Supervisor, body: PlanIn) -> dict[str, Any]:
    request = PlanRequest(
        body.case_id,
        body.zone,
        [(v.weekday, dt.time.fromisoformat(v.time)) for v in body.pattern],
        body.first_day,
        body.last_day,
        body.staff,
    )
    return await in_thread(lambda: create_plan(db, request, actor=principal.id, scope=principal.scope))


@router.get("/plans/{plan_id}", summary="A service plan and its visits", responses=answers(404))
async def read_plan(db: DbDep, principal: Supervisor, plan_id: RecordId) -> dict[str, Any]:
    return await in_thread(get_plan, db, plan_id, principal.scope)


@router.post(
    "/conflicts",
    status_code=201,
    summary="Report a staffing conflict over a shift's, a span's or named visits",
    responses=answers(
        404, 409, 422, s409="No open visit of theirs there, or visits at several locations.",
        s422="Neither visits, a shift nor a span.",
    ),
)  # fmt: skip
async def new_conflict(db: DbDep, principal: Supervisor, body: ConflictIn) -> dict[str, Any]:
    report = ConflictReport(
        body.staff,
        body.kind,
        body.shift_id,
        tuple(body.appointment_ids),
        body.starts_at,
        body.ends_at,
        body.day,
        body.note,
    )
    return await in_thread(lambda: report_conflict(db, report, actor=principal.id, scope=principal.scope))


@router.get("/conflicts", summary="The open staffing conflicts, oldest first")
async def list_conflicts(
    db: DbDep,
    principal: Supervisor,
    location: Annotated[str | None, Query(min_length=1, max_length=64, pattern=PLAIN_TEXT)] = None,
) -> dict[str, Any]:
    return {"items": await in_thread(open_conflicts, db, principal.scope, location)}


@router.get(
    "/conflicts/{conflict_id}/candidates",
    summary="The conflict's visits, its ranked candidates (with their scores) and why others cannot",
    responses=answers(404, 409),
)
async def ranked(
    db: DbDep, principal: Supervisor, conflict_id: RecordId, limit: int = Query(10, ge=1, le=100)
) -> dict[str, Any]:
    return await in_thread(candidates, db, conflict_id, principal.scope, limit)


@router.post(
    "/conflicts/{conflict_id}/reassign",
    summary="Give the conflict's visits to a member of staff (atomically, never double-booking)",
    responses=answers(404, 409, s409="Closed, or they cannot take every visit (the reason is given)."),
)
async def reassign_visits(
    db: DbDep, principal: Supervisor, conflict_id: RecordId, body: ReassignIn
) -> dict[str, Any]:
    return await in_thread(
        lambda: reassign(db, conflict_id, body.staff, actor=principal.id, scope=principal.scope)
    )


@router.post(
    "/conflicts/{conflict_id}/withdraw",
    summary="Close a conflict without reassigning its visits",
    responses=answers(404, 409, s409="Already closed."),
)
async def withdraw_conflict(
    db: DbDep, principal: Supervisor, conflict_id: RecordId, body: WithdrawIn
) -> dict[str, Any]:
    return await in_thread(
        lambda: withdraw(db, conflict_id, actor=principal.id, scope=principal.scope, reason=body.reason)
    )
