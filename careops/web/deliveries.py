"""/console/deliveries: each subscribed connector's health (breaker, success rate, p95 latency,
backlog, dead letters), the dead letters with their last error and a replay button, and what is
waiting to be retried."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from careops.db import in_thread
from careops.errors import CareopsError
from careops.governance.users import ConsoleUser
from careops.integrations.outbound.subscriptions import load_file
from careops.orchestration.deliveries import health, list_deliveries, replay
from careops.web.pages import PathText, go, member, posted_form, refused_page, render

router = APIRouter(prefix="/console/deliveries", tags=["console"], include_in_schema=False)
Engineer = Annotated[ConsoleUser, Depends(member("integrations:manage"))]


@router.get("")
async def deliveries_page(request: Request, user: Engineer) -> Response:
    db, settings, places = request.app.state.db, request.app.state.settings, user.principal.scope.ids
    names = [s.name for s in load_file(settings.connectors_file)]
    connectors = await in_thread(health, db, names)
    dead = await in_thread(lambda: list_deliveries(db, status="dead", locations=places, limit=100))
    waiting = await in_thread(lambda: list_deliveries(db, status="pending", locations=places, limit=100))
    return render("deliveries.html", user, title="Deliveries", connectors=connectors, dead=dead,
                  waiting=[w for w in waiting if w["attempts"]])  # fmt: skip


@router.post("/{delivery_id}/replay")
async def replay_page(request: Request, delivery_id: PathText, user: Engineer) -> Response:
    await posted_form(request, user)
    try:
        await in_thread(lambda: replay(request.app.state.db, [delivery_id], actor=user.principal.id))
    except CareopsError as exc:
        return refused_page(user, exc)
    return go("/console/deliveries")
