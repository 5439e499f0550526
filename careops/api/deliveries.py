"""/api/v1/deliveries and /api/v1/connectors/health: what was delivered to each outbound
connector, what waits or failed and why, replay of dead letters (one, or a selection), and each
connector's health (breaker, success rate, p95 latency, backlog, dead letters)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from careops.api.contract import answers
from careops.api.deps import DbDep, RecordId, SettingsDep, require
from careops.db import in_thread
from careops.governance.principal import Principal
from careops.integrations.outbound.subscriptions import load_file
from careops.orchestration.deliveries import dead_letters, get_delivery, health, list_deliveries, replay

router = APIRouter(prefix="/api/v1", tags=["deliveries"])
Engineer = Annotated[Principal, Depends(require("integrations:manage"))]
Hours = Annotated[
    float | None, Query(gt=0, le=24 * 365, description="Only those older than this many hours.")
]


class ReplayIn(BaseModel):
    ids: list[Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]] = Field(
        default_factory=list, max_length=10_000
    )
    connector: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    older_than_hours: float | None = Field(None, gt=0, le=24 * 365)


@router.get("/deliveries", summary="Deliveries, newest first, by state, connector, event type and age")
async def deliveries(
    db: DbDep,
    principal: Engineer,
    status: Literal["pending", "delivered", "dead"] | None = None,
    connector: Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9_-]+$")] = None,
    event_type: Annotated[str | None, Query(max_length=64, pattern=r"^[a-z_]+\.[a-z_]+$")] = None,
    older_than_hours: Hours = None,
) -> dict[str, Any]:
    age = dt.timedelta(hours=older_than_hours) if older_than_hours else None
    items = await in_thread(
        lambda: list_deliveries(db, status=status, connector=connector, event_type=event_type, older_than=age,
                                locations=principal.scope.ids)
    )  # fmt: skip
    return {"items": items}


@router.get("/deliveries/{delivery_id}", summary="One delivery with its last error", responses=answers(404))
async def delivery(db: DbDep, principal: Engineer, delivery_id: RecordId) -> dict[str, Any]:
    return await in_thread(get_delivery, db, delivery_id, principal.scope.ids)


@router.post(
    "/deliveries/{delivery_id}/replay",
    summary="Send a dead letter again (its attempts start over)",
    responses=answers(404, 409, s409="It is not a dead letter."),
)
async def replay_one(db: DbDep, principal: Engineer, delivery_id: RecordId) -> dict[str, Any]:
    await in_thread(get_delivery, db, delivery_id, principal.scope.ids)
    return {"replayed": await in_thread(lambda: replay(db, [delivery_id], actor=principal.id))}


@router.post(
    "/delivery-replays", summary="Send a selection of dead letters again (ids, or connector and age)"
)
async def replay_many(db: DbDep, principal: Engineer, body: ReplayIn) -> dict[str, Any]:
    def run() -> int:
        age = dt.timedelta(hours=body.older_than_hours) if body.older_than_hours else None
        chosen = dead_letters(db, connector=body.connector, older_than=age, ids=body.ids or None,
                              locations=principal.scope.ids)  # fmt: skip
        return replay(db, chosen, actor=principal.id) if chosen else 0

    return {"replayed": await in_thread(run)}


@router.get(
    "/connectors/health", summary="Each subscribed connector: breaker, success rate, p95 latency, backlog"
)
async def connectors_health(db: DbDep, settings: SettingsDep, principal: Engineer) -> dict[str, Any]:
    names = [s.name for s in load_file(settings.connectors_file)]
    return {"items": await in_thread(health, db, names)}
