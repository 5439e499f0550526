"""/api/v1/availability and /api/v1/appointments: when a service can be booked, booking it for a
case (confirmed, which schedules the case, or proposed), confirming, moving and ending an
appointment (cancel, no-show, complete)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import AwareDatetime, BaseModel, Field, WithJsonSchema

from careops.api.contract import answers
from careops.api.deps import DbDep, RecordId, Zone, require
from careops.db import in_thread
from careops.domain.models import ID_PATTERN, PLAIN_TEXT
from careops.governance.principal import Principal
from careops.orchestration.appointments import book, confirm, end_appointment, reschedule
from careops.orchestration.scheduling import availability

router = APIRouter(prefix="/api/v1", tags=["scheduling"])
Reader = Annotated[Principal, Depends(require("cases:read"))]
Scheduler = Annotated[Principal, Depends(require("cases:transition"))]
Code = Annotated[str, Query(min_length=1, max_length=64, pattern=PLAIN_TEXT)]


# A start on the 5-minute grid the resources are booked in, with a zone offset that keeps it there.
OnTheGrid = Annotated[
    AwareDatetime,
    WithJsonSchema(
        {
            "type": "string",
            "format": "date-time",
            "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:[0-5][05]:00(\.0+)?(Z|[+-]\d{2}:[0-5][05])$",
        }
    ),
]


class BookingIn(BaseModel):
    case_id: str = Field(pattern=ID_PATTERN)
    starts_at: OnTheGrid = Field(description="On a 5-minute boundary, with its time zone.")
    propose: bool = Field(False, description="Hold the resources until the patient confirms.")
    zone: Zone | None = Field(None, description="A home visit's address zone (required for one).")


class MoveIn(BaseModel):
    starts_at: OnTheGrid = Field(description="The new start, on a 5-minute boundary.")


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
    zone: Annotated[str | None, Query(min_length=1, max_length=64, pattern=PLAIN_TEXT)] = None,
) -> dict[str, Any]:
    offer = await in_thread(availability, db, service, location, start, end, principal.scope, limit, zone)
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
    summary="Book the case's service at a start: confirmed (the case becomes scheduled) or proposed",
    responses=answers(
        404,
        409,
        422,
        s409="The case is not ready to schedule or has an open appointment, the slot is taken, or "
        "staff it would take lack the credential.",
        s422="The start is off the 5-minute grid, or a home visit names no zone.",
    ),
)
async def create(db: DbDep, principal: Scheduler, body: BookingIn) -> dict[str, Any]:
    return await in_thread(
        lambda: book(
            db, body.case_id, body.starts_at, actor=principal.id, scope=principal.scope,
            propose=body.propose, zone=body.zone,
        )
    )  # fmt: skip


@router.patch(
    "/appointments/{appointment_id}",
    summary="Reschedule a proposed or confirmed appointment to another start",
    responses=answers(
        404, 409, 422, s409="It is not open, or no resources are free then (it stays where it was)."
    ),
)
async def move(db: DbDep, principal: Scheduler, appointment_id: RecordId, body: MoveIn) -> dict[str, Any]:
    return await in_thread(
        lambda: reschedule(db, appointment_id, body.starts_at, actor=principal.id, scope=principal.scope)
    )


@router.post(
    "/appointments/{appointment_id}/{step}",
    summary="Confirm a proposal (the case is scheduled); cancel, record a no-show or complete",
    responses=answers(404, 409, s409="The appointment is not in a status the step follows."),
)
async def end(
    db: DbDep,
    principal: Scheduler,
    appointment_id: RecordId,
    step: Literal["confirm", "cancel", "no_show", "complete"],
    body: EndingIn | None = None,
) -> dict[str, Any]:
    if step == "confirm":
        return await in_thread(lambda: confirm(db, appointment_id, actor=principal.id, scope=principal.scope))
    reason = body.reason if body else ""
    return await in_thread(
        lambda: end_appointment(
            db, appointment_id, step, actor=principal.id, scope=principal.scope, reason=reason
        )
    )
