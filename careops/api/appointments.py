"""/api/v1/availability and /api/v1/appointments: when a service can be booked, booking it for a
case (which schedules the case), and ending an appointment (cancel, no-show, complete)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import AwareDatetime, BaseModel, Field

from careops.api.contract import answers
from careops.api.deps import DbDep, RecordId, require
from careops.db import in_thread
from careops.domain.models import ID_PATTERN, PLAIN_TEXT
from careops.governance.principal import Principal
from careops.orchestration.scheduling import availability, book, end_appointment

router = APIRouter(prefix="/api/v1", tags=["scheduling"])
Reader = Annotated[Principal, Depends(require("cases:read"))]
Scheduler = Annotated[Principal, Depends(require("cases:transition"))]
Code = Annotated[str, Query(min_length=1, max_length=64, pattern=PLAIN_TEXT)]


class BookingIn(BaseModel):
    case_id: str = Field(pattern=ID_PATTERN)
    starts_at: AwareDatetime = Field(description="On a 5-minute boundary, with its time zone.")


class EndingIn(BaseModel):
    reason: str = Field("", max_length=500, pattern=PLAIN_TEXT)


@router.get(
    "/availability",
    summary="Bookable starts for a service at a location, each with the resources it would take",
    responses=answers(404),
)
async def slots(
    db: DbDep,
    principal: Reader,
    service: Code,
    location: Code,
    start: Annotated[AwareDatetime, Query(alias="from")],
    end: Annotated[AwareDatetime, Query(alias="to", description="At most 31 days after `from`.")],
    limit: int = Query(50, ge=1, le=500),
) -> dict[str, Any]:
    offer = await in_thread(availability, db, service, location, start, end, principal.scope, limit)
    return {
        "slots": [
            {
                "starts_at": s.starts_at.isoformat(),
                "ends_at": s.ends_at.isoformat(),
                "resources": list(s.resources),
            }
            for s in offer.slots
        ],
        "unavailable": offer.unavailable,
    }


@router.post(
    "/appointments",
    status_code=201,
    summary="Book the case's service at a start: the case becomes scheduled",
    responses=answers(404, 409, 422, s409="The case is not ready to schedule, or the slot is taken."),
)
async def create(db: DbDep, principal: Scheduler, body: BookingIn) -> dict[str, Any]:
    return await in_thread(
        lambda: book(db, body.case_id, body.starts_at, actor=principal.id, scope=principal.scope)
    )


@router.post(
    "/appointments/{appointment_id}/{ending}",
    summary="Cancel, record a no-show or complete an appointment; its case moves to match",
    responses=answers(404, 409, s409="The appointment is not confirmed."),
)
async def end(
    db: DbDep,
    principal: Scheduler,
    appointment_id: RecordId,
    ending: Literal["cancel", "no_show", "complete"],
    body: EndingIn | None = None,
) -> dict[str, Any]:
    reason = body.reason if body else ""
    return await in_thread(
        lambda: end_appointment(
            db, appointment_id, ending, actor=principal.id, scope=principal.scope, reason=reason
        )
    )
