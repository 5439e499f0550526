"""/console/approvals: the queue of approvals waiting for the signed-in user (as approver or
delegate), recent requests in their locations, and the metrics; a request's decision page with
the record, the policy that routed it, its chain and its trace; signed decision links, which
open a confirmation page (a GET never decides) and decide on a POST by their approver only."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from careops.approvals.links import decide_by_link, open_link
from careops.approvals.metrics import summary
from careops.approvals.requests import decide
from careops.approvals.service import detail, list_requests, waiting_for
from careops.db import in_thread
from careops.errors import CareopsError
from careops.governance.users import ConsoleUser
from careops.web.pages import PathText, go, member, posted_form, refused_page, render

router = APIRouter(prefix="/console/approvals", tags=["console"], include_in_schema=False)
Reader = Annotated[ConsoleUser, Depends(member("approvals:read"))]
Decider = Annotated[ConsoleUser, Depends(member("approvals:decide"))]


@router.get("")
async def approvals_page(request: Request, user: Reader) -> Response:
    db, principal = request.app.state.db, user.principal
    mine = await in_thread(waiting_for, db, principal)
    recent = await in_thread(list_requests, db, principal, None, 50)
    metrics = await in_thread(summary, db, principal.scope)
    return render("approvals.html", user, title="Approvals", mine=mine, recent=recent, metrics=metrics)


@router.get("/link/{token}")
async def link_page(request: Request, token: PathText, user: Decider) -> Response:
    try:
        shown = await in_thread(open_link, request.app.state.db, token, user.principal)
    except CareopsError as exc:
        return refused_page(user, exc)
    return render("approval.html", user, title="Decide an approval", request_=shown, link=token, people={})


@router.post("/link/{token}")
async def decide_with_link(request: Request, token: PathText, user: Decider) -> Response:
    form = await posted_form(request, user)
    try:
        done = await in_thread(
            decide_by_link,
            request.app.state.db,
            token,
            user.principal,
            form.get("decision", ""),
            form.get("comment"),
        )
    except CareopsError as exc:
        return refused_page(user, exc)
    return go(f"/console/approvals/{done['id']}")


@router.get("/{approval_id}")
async def approval_page(request: Request, approval_id: PathText, user: Reader) -> Response:
    try:
        shown = await in_thread(detail, request.app.state.db, approval_id, user.principal)
    except CareopsError as exc:
        return refused_page(user, exc)
    return render("approval.html", user, title=f"Approval {approval_id[-8:]}", request_=shown, link=None,
                  people=shown["people"])  # fmt: skip


@router.post("/{approval_id}/decision")
async def decide_on_page(request: Request, approval_id: PathText, user: Decider) -> Response:
    form = await posted_form(request, user)
    try:
        await in_thread(
            lambda: decide(request.app.state.db, approval_id, user.principal, form.get("decision", ""),
                           form.get("comment") or None, via="console")
        )  # fmt: skip
    except CareopsError as exc:
        return refused_page(user, exc)
    return go(f"/console/approvals/{approval_id}")
