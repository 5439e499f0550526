"""What every console page is made with: the signed-in user (``member``), the CSRF-checked form
(``posted_form``, which also refuses a NUL), text taken from the URL (``QueryText``,
``PathText``: no control characters), the navigation the user's roles allow (``NAV``) and the
rendered template (``render``; ``templates`` is the one Jinja environment, the partner form's
too).

A page is one route, one template and one line in the authorisation matrix
(tests/governance/test_authorisation_matrix.py)::

    @router.get("/exceptions")
    async def exceptions(
        request: Request, user: Annotated[ConsoleUser, Depends(member("exceptions:read"))]
    ) -> Response:
        items = await in_thread(list_exceptions, request.app.state.db, ...)
        return render("exceptions.html", user, title="Exceptions", items=items)

``member`` answers instead of the page when it must: the login page for a visitor without a
session, a 403 page naming the missing permission for a user without it (``Refusal``, turned into
its response by the handler ``install`` adds).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import fastapi
from fastapi import FastAPI, Query, Request, Response
from fastapi.responses import RedirectResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from careops.db import in_thread
from careops.domain.models import PLAIN_TEXT
from careops.errors import CareopsError, Forbidden, Unauthorised, ValidationFailed
from careops.governance.users import ConsoleUser, session_user

TEMPLATES = Path(__file__).parent / "templates"
SESSION_COOKIE = "careops_session"
templates = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))


@dataclass(frozen=True)
class NavItem:
    label: str
    href: str
    permission: str | None  # shown to users whose roles grant it (None: to every user)


NAV = (
    NavItem("My work", "/console/work", None),
    NavItem("Dashboard", "/console/dashboard", "metrics:read"),
    NavItem("Process flow", "/console/flow", "metrics:read"),
    NavItem("Cases", "/console/cases", "cases:read"),
    NavItem("Patients", "/console/patients", "cases:read"),
    NavItem("Board", "/console/board", "cases:read"),
    NavItem("Availability", "/console/availability", "cases:read"),
    NavItem("Authorisations", "/console/authorisations", "cases:read"),
    NavItem("Results", "/console/results", "cases:read"),
    NavItem("Billing", "/console/billing", "billing:approve"),
    NavItem("Stock", "/console/stock", "inventory:adjust"),
    NavItem("Staffing", "/console/staffing", "staff:reassign"),
    NavItem("Approvals", "/console/approvals", "approvals:read"),
    NavItem("Automation", "/console/automation", "workflows:read"),
    NavItem("Exceptions", "/console/exceptions", "exceptions:read"),
    NavItem("Quarantine", "/console/quarantine", "quarantine:read"),
    NavItem("API tokens", "/console/admin/tokens", "admin"),
    NavItem("Users", "/console/admin/users", "admin"),
    NavItem("Reference data", "/console/admin/reference", "reference:read"),
    NavItem("Connectors", "/console/admin/connectors", "integrations:manage"),
    NavItem("Deliveries", "/console/deliveries", "integrations:manage"),
    NavItem("Audit log", "/console/admin/audit", "audit:read"),
)


class Refusal(Exception):
    """A page's answer in place of the page (the login page, or why the user may not see it)."""

    def __init__(self, response: Response) -> None:
        super().__init__("page refused")
        self.response = response


# Text a page takes from its URL (a filter, a slug, a name): bounded, with no control characters.
QueryText = Annotated[str, Query(max_length=100, pattern=PLAIN_TEXT)]
PathText = Annotated[str, fastapi.Path(max_length=100, pattern=PLAIN_TEXT)]


def install(app: FastAPI) -> None:
    async def refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Refusal)
        return exc.response

    app.add_exception_handler(Refusal, refused)


def render(template: str, user: ConsoleUser | None, status: int = 200, **context: Any) -> Response:
    """The template under templates/console, with the user and the navigation their roles allow."""
    nav = [item for item in NAV if user and (item.permission is None or user.principal.can(item.permission))]
    html = templates.get_template(f"console/{template}").render(user=user, nav=nav, **context)
    return Response(html, status_code=status, media_type="text/html; charset=utf-8")


def refused_page(user: ConsoleUser, exc: CareopsError) -> Response:
    """The page that says why not: the error's status and its sentence (never PHI)."""
    return render("base.html", user, exc.status, title="Not available", problem=exc.detail)


def to_login() -> Response:
    return RedirectResponse("/console/login", status_code=303)


async def signed_in(request: Request) -> ConsoleUser | None:
    """The user of the request's session cookie, or None."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    try:
        return await in_thread(session_user, request.app.state.db, cookie)
    except Unauthorised:
        return None


def member(permission: str | None = None) -> Callable[[Request], Awaitable[ConsoleUser]]:
    """A dependency: the signed-in user, if their roles grant ``permission`` (any user for None)."""

    async def check(request: Request) -> ConsoleUser:
        user = await signed_in(request)
        if user is None:
            raise Refusal(to_login())
        if permission is not None and not user.principal.can(permission):
            raise Refusal(refused_page(user, Forbidden(f"your roles do not include {permission}")))
        return user

    return check


async def posted_form(request: Request, user: ConsoleUser, max_fields: int = 40) -> dict[str, str]:
    """The form a page posted, if it carries the session's CSRF token (else a 403 page)."""
    form = await request.form(max_files=0, max_fields=max_fields)
    sent = str(form.get("csrf_token") or "")
    if not hmac.compare_digest(sent, user.csrf_token):
        detail = "the form was not sent from this console page; reload it and try again"
        raise Refusal(refused_page(user, Forbidden(detail)))
    fields = {key: str(value) for key, value in form.items() if key != "csrf_token"}
    if any("\x00" in text for field in fields.items() for text in field):
        raise Refusal(refused_page(user, ValidationFailed("the form holds a NUL character: retype it")))
    return fields


def go(url: str) -> Response:
    """After a form did its work: to the page that shows the result (303, so a reload does not
    post again)."""
    return RedirectResponse(url, status_code=303)
