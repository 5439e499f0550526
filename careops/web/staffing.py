"""/console/staffing: the open staffing conflicts and the credentials expiring soon, a form to
report a conflict over a member of staff's day, and a conflict's page with its ranked candidates,
a button to reassign to each, and one to withdraw it."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from careops.db import in_thread
from careops.domain.staffing import CONFLICT_KINDS
from careops.errors import CareopsError, ValidationFailed
from careops.governance.users import ConsoleUser
from careops.orchestration.credentials import expiring_credentials
from careops.orchestration.staffing import (
    ConflictReport,
    candidates,
    open_conflicts,
    reassign,
    report_conflict,
    withdraw,
)
from careops.web.pages import go, member, posted_form, refused_page, render

router = APIRouter(prefix="/console/staffing", tags=["console"], include_in_schema=False)
Supervisor = Annotated[ConsoleUser, Depends(member("staff:reassign"))]


@router.get("")
async def staffing_page(request: Request, user: Supervisor) -> Response:
    """Open conflicts, oldest first; credentials expiring within the warning period."""
    db, settings = request.app.state.db, request.app.state.settings
    conflicts = await in_thread(open_conflicts, db, user.principal.scope)
    credentials = await in_thread(
        expiring_credentials, db, settings.credential_warning_days, user.principal.scope
    )
    return render("staffing.html", user, title="Staffing", conflicts=conflicts, credentials=credentials,
                  kinds=CONFLICT_KINDS, today=dt.date.today().isoformat(),
                  within=settings.credential_warning_days)  # fmt: skip


@router.post("/conflicts")
async def report_page(request: Request, user: Supervisor) -> Response:
    """Report a conflict over every open visit of a member of staff on a day."""
    form = await posted_form(request, user)
    try:
        kind = form.get("kind", "")
        if kind not in CONFLICT_KINDS:
            raise ValidationFailed(f"the kind: one of {', '.join(CONFLICT_KINDS)}")
        try:
            day = dt.date.fromisoformat(form.get("day", ""))
        except ValueError:
            raise ValidationFailed("the day as YYYY-MM-DD") from None
        report = ConflictReport(
            form.get("staff", "").strip(), kind, day=day, note=form.get("note", "").strip() or None
        )
        made = await in_thread(
            lambda: report_conflict(
                request.app.state.db, report, actor=user.principal.id, scope=user.principal.scope
            )
        )
    except CareopsError as exc:
        return refused_page(user, exc)
    return go(f"/console/staffing/conflicts/{made['id']}")


@router.get("/conflicts/{conflict_id}")
async def conflict_page(request: Request, conflict_id: str, user: Supervisor) -> Response:
    """The conflict's visits, its ranked candidates and why the others cannot."""
    try:
        found = await in_thread(candidates, request.app.state.db, conflict_id, user.principal.scope)
    except CareopsError as exc:
        return refused_page(user, exc)
    return render("staffing_conflict.html", user, title="Staffing conflict", conflict=found)


@router.post("/conflicts/{conflict_id}/{action}")
async def conflict_action_page(request: Request, conflict_id: str, action: str, user: Supervisor) -> Response:
    """Reassign the visits to the chosen member of staff, or withdraw the conflict."""
    form = await posted_form(request, user)
    db, principal = request.app.state.db, user.principal
    try:
        if action == "reassign":
            staff = form.get("staff", "").strip()
            await in_thread(
                lambda: reassign(db, conflict_id, staff, actor=principal.id, scope=principal.scope)
            )
        elif action == "withdraw":
            reason = form.get("reason", "").strip()
            await in_thread(
                lambda: withdraw(db, conflict_id, actor=principal.id, scope=principal.scope, reason=reason)
            )
        else:
            raise ValidationFailed("reassign or withdraw")
    except CareopsError as exc:
        return refused_page(user, exc)
    return go(f"/console/staffing/conflicts/{conflict_id}")
