"""/console pages of the work after intake: the appointment board per resource, availability
search, authorisations expiring soon, results waiting for a case, cases held back from billing
(and the billing and invoice actions of a case), stock per location and replenishment requests."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response

from careops.db import in_thread
from careops.errors import CareopsError, Conflict, ValidationFailed
from careops.governance.users import ConsoleUser
from careops.orchestration.authorisations import expiring
from careops.orchestration.billing import (
    INVOICE_STEPS,
    advance_invoice,
    blocked_cases,
    check_case,
    request_invoice,
)
from careops.orchestration.inventory import stock
from careops.orchestration.replenishment import STEPS as REPLENISHMENT_STEPS
from careops.orchestration.replenishment import advance, from_thresholds, list_replenishments
from careops.orchestration.results import list_results, match_result
from careops.orchestration.scheduling import availability, board
from careops.web.pages import QueryText, go, member, posted_form, refused_page, render

router = APIRouter(prefix="/console", tags=["console"], include_in_schema=False)
Reader = Annotated[ConsoleUser, Depends(member("cases:read"))]
Scheduler = Annotated[ConsoleUser, Depends(member("cases:transition"))]
Billing = Annotated[ConsoleUser, Depends(member("billing:approve"))]


def _day(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text) if text else dt.date.today()
    except ValueError:
        raise ValidationFailed("the day as YYYY-MM-DD") from None


@router.get("/board")
async def board_page(
    request: Request,
    user: Reader,
    location: QueryText = "",
    day: QueryText = "",
    days: int = Query(1, ge=1, le=7),
) -> Response:
    """A day (or week) of a location's appointments, one row per resource."""
    if not location:
        return render(
            "board.html", user, title="Appointment board", board=None, day=day, days=days, location=""
        )
    try:
        first = _day(day)
        shown = await in_thread(board, request.app.state.db, location, first, days, user.principal.scope)
    except CareopsError as exc:
        return refused_page(user, exc)
    return render(
        "board.html",
        user,
        title="Appointment board",
        board=shown,
        day=first.isoformat(),
        days=days,
        location=location,
    )


@router.get("/availability")
async def availability_page(
    request: Request, user: Reader, service: QueryText = "", location: QueryText = "", day: QueryText = ""
) -> Response:
    """Bookable starts for a service at a location over the two weeks from a day."""
    context: dict[str, Any] = {"service": service, "location": location, "day": day, "offer": None}
    if service and location:
        try:
            first = _day(day)
            start = dt.datetime.combine(first, dt.time(), dt.UTC)
            context["offer"] = await in_thread(
                availability, request.app.state.db, service, location, start, start + dt.timedelta(days=14),
                user.principal.scope,
            )  # fmt: skip
        except CareopsError as exc:
            return render(
                "availability.html", user, exc.status, title="Availability", problem=exc.detail, **context
            )
    return render("availability.html", user, title="Availability", **context)


@router.get("/authorisations")
async def authorisations_page(
    request: Request, user: Reader, within: int = Query(14, ge=1, le=365)
) -> Response:
    """Approved authorisations of open cases that end within ``within`` days."""
    rows = await in_thread(expiring, request.app.state.db, within, user.principal.scope)
    return render("authorisations.html", user, title="Authorisations expiring", rows=rows, within=within)


@router.get("/results")
async def results_page(request: Request, user: Reader) -> Response:
    """Results that matched no case, newest first, each with a form to put it on its case."""
    rows = await in_thread(
        lambda: list_results(request.app.state.db, unmatched=True, scope=user.principal.scope)
    )
    return render("results.html", user, title="Results waiting for a case", rows=rows,
                  can_match=user.principal.can("cases:transition"))  # fmt: skip


@router.post("/results/{result_id}/match")
async def match_page(request: Request, result_id: str, user: Scheduler) -> Response:
    form = await posted_form(request, user)
    db = request.app.state.db
    try:
        matched = await in_thread(
            lambda: match_result(
                db,
                result_id,
                form.get("case_id", "").strip(),
                actor=user.principal.id,
                scope=user.principal.scope,
            )
        )
    except CareopsError as exc:
        return refused_page(user, exc)
    return go(f"/console/cases/{matched['case_id']}")


@router.get("/billing")
async def billing_page(request: Request, user: Billing) -> Response:
    """Completed cases held back from billing, with their discrepancies, oldest first."""
    rows = await in_thread(blocked_cases, request.app.state.db, user.principal.scope)
    return render("billing.html", user, title="Billing", rows=rows)


@router.post("/cases/{case_id}/billing-readiness")
async def readiness_page(request: Request, case_id: str, user: Billing) -> Response:
    await posted_form(request, user)
    db = request.app.state.db
    try:
        await in_thread(lambda: check_case(db, case_id, actor=user.principal.id, scope=user.principal.scope))
    except CareopsError as exc:
        return refused_page(user, exc)
    return go(f"/console/cases/{case_id}")


@router.post("/cases/{case_id}/invoices")
async def invoice_page(request: Request, case_id: str, user: Billing) -> Response:
    await posted_form(request, user)
    db = request.app.state.db
    try:
        await in_thread(
            lambda: request_invoice(db, case_id, actor=user.principal.id, scope=user.principal.scope)
        )
    except CareopsError as exc:
        return refused_page(user, exc)
    return go(f"/console/cases/{case_id}")


@router.post("/invoices/{invoice_id}/{step}")
async def invoice_step_page(request: Request, invoice_id: str, step: str, user: Billing) -> Response:
    form = await posted_form(request, user)
    if step not in INVOICE_STEPS:
        return refused_page(user, ValidationFailed("approve, send, pay or reject"))
    db = request.app.state.db
    reference = form.get("external_reference", "").strip()[:100] or None
    try:
        done = await in_thread(
            lambda: advance_invoice(
                db, invoice_id, step, actor=user.principal.id, scope=user.principal.scope,
                external_reference=reference,
            )
        )  # fmt: skip
    except CareopsError as exc:
        return refused_page(user, exc)
    return go(f"/console/cases/{done['case_id']}")


Stocker = Annotated[ConsoleUser, Depends(member("inventory:adjust"))]


@router.get("/stock")
async def stock_page(request: Request, user: Stocker, location: QueryText = "") -> Response:
    """A location's stock levels, those under their minimum first, and its replenishment requests."""
    db = request.app.state.db
    levels: list[dict[str, Any]] = []
    if location:
        try:
            levels = await in_thread(stock, db, location, user.principal.scope)
        except CareopsError as exc:
            return refused_page(user, exc)
    requests = await in_thread(list_replenishments, db, user.principal.scope)
    levels.sort(key=lambda level: (not level["below_minimum"], level["item"]))
    return render("stock.html", user, title="Stock", location=location, levels=levels, requests=requests,
                  steps=REPLENISHMENT_STEPS)  # fmt: skip


@router.post("/replenishments")
async def replenish_page(request: Request, user: Stocker) -> Response:
    """Draft a request for everything under its minimum at the location."""
    form = await posted_form(request, user)
    location = form.get("location", "")
    try:
        made = await in_thread(
            lambda: from_thresholds(
                request.app.state.db, location, actor=user.principal.id, scope=user.principal.scope
            )
        )
    except CareopsError as exc:
        return refused_page(user, exc)
    if made is None:
        return refused_page(user, Conflict("nothing at this location is under its minimum"))
    return go(f"/console/stock?location={location}")


@router.post("/replenishments/{replenishment_id}/{step}")
async def replenishment_step_page(
    request: Request, replenishment_id: str, step: str, user: Stocker
) -> Response:
    form = await posted_form(request, user)
    if step not in REPLENISHMENT_STEPS:
        return refused_page(user, ValidationFailed("submit, approve, order, receive or cancel"))
    db, settings, principal = request.app.state.db, request.app.state.settings, user.principal
    try:
        moved = await in_thread(
            lambda: advance(
                db, replenishment_id, step, actor=principal.id, scope=principal.scope,
                external_reference=form.get("external_reference", "").strip() or None,
                duties=settings.separation_of_duties,
            )
        )  # fmt: skip
    except CareopsError as exc:
        return refused_page(user, exc)
    return go(f"/console/stock?location={moved['location']}")
