"""/console: log in and out, cases (list, detail with its actions and timeline, reveal).

Login sets a session cookie (HttpOnly, SameSite=Strict, Secure over TLS, path /console); every
form carries a CSRF token (before login a signed token tied to a cookie, after login the
session's own token). Pages show PHI through the reader's masking policy, like the API; revealing
it needs ``phi:reveal`` and a reason, and is audited.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import RedirectResponse

from careops.db import in_thread
from careops.domain.cases import CaseAction
from careops.domain.models import is_id
from careops.errors import CareopsError, Conflict, Forbidden, Unauthorised, ValidationFailed
from careops.governance.abuse import CsrfTokens, RateLimiter
from careops.governance.oidc import OidcClient, seal, unseal
from careops.governance.permissions import PHI_REVEAL
from careops.governance.users import ConsoleUser, LoginResult, log_in, log_out, single_sign_on
from careops.orchestration.appointments import ENDINGS, book, end_appointment
from careops.orchestration.authorisations import decide_authorisation, request_authorisation
from careops.orchestration.cases import CaseFilter, get_case, list_cases, reveal_case, transition_case
from careops.orchestration.patient_search import PatientQuery, search_patients
from careops.orchestration.scheduling import first_free
from careops.settings import Settings
from careops.web.pages import (
    SESSION_COOKIE,
    TEMPLATES,
    go,
    member,
    posted_form,
    refused_page,
    render,
    to_login,
)

router = APIRouter(prefix="/console", tags=["console"], include_in_schema=False)
LOGIN_COOKIE = "careops_login"
OIDC_COOKIE = "careops_oidc"
PAGE_SIZE = 50
STATIC = TEMPLATES.parent / "static"
STATIC_TYPES = {"htmx.min.js": "text/javascript; charset=utf-8", "favicon.svg": "image/svg+xml"}
Reader = Annotated[ConsoleUser, Depends(member("cases:read"))]
Scheduler = Annotated[ConsoleUser, Depends(member("cases:transition"))]


class ConsoleState:
    """Per-process console helpers: login CSRF tokens, the login rate limit per address, and the
    OpenID Connect client when a provider is configured."""

    def __init__(self, settings: Settings) -> None:
        self.login_tokens = CsrfTokens(settings.secret_key, 3600, "console-login")
        self.login_limiter = RateLimiter(settings.login_attempts_per_minute)
        self.oidc = OidcClient(settings) if settings.oidc_issuer else None


def _state(request: Request) -> ConsoleState:
    state: ConsoleState | None = getattr(request.app.state, "console", None)
    if state is None:
        state = request.app.state.console = ConsoleState(request.app.state.settings)
    return state


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _login_page(request: Request, status: int = 200, **context: Any) -> Response:
    nonce, token = _state(request).login_tokens.issue()
    sso = _state(request).oidc is not None
    response = render("login.html", None, status, title="Log in", csrf_token=token, sso=sso, **context)
    response.set_cookie(
        LOGIN_COOKIE, nonce, httponly=True, samesite="strict", secure=_secure(request), path="/console/login"
    )
    return response


@router.get("/console.css")
async def stylesheet() -> Response:
    return Response((TEMPLATES / "console" / "console.css").read_text(), media_type="text/css")


@router.get("/static/{name}")
async def static(name: str) -> Response:
    """A vendored asset (careops/web/static/VENDORED.md), by name."""
    if name not in STATIC_TYPES:
        return Response("no such asset", status_code=404, media_type="text/plain")
    return Response((STATIC / name).read_bytes(), media_type=STATIC_TYPES[name])


@router.get("")
async def home() -> Response:
    return go("/console/work")


@router.get("/login")
async def login_form(request: Request) -> Response:
    return _login_page(request)


@router.post("/login")
async def login(request: Request) -> Response:
    state = _state(request)
    if not state.login_limiter.allow(_client(request)):
        return _login_page(
            request, 429, problem="Too many login attempts from here: wait a minute and try again."
        )
    form = await request.form(max_files=0, max_fields=5)
    username = str(form.get("username") or "")[:100]
    try:
        state.login_tokens.verify(str(form.get("csrf_token") or ""), request.cookies.get(LOGIN_COOKIE))
        settings = request.app.state.settings
        result = await in_thread(
            log_in,
            request.app.state.db,
            settings,
            username,
            str(form.get("password") or ""),
            _client(request),
        )
    except (Forbidden, Unauthorised) as exc:
        status = 403 if isinstance(exc, Forbidden) else 401
        return _login_page(request, status, problem=exc.detail)
    response = _logged_in(request, result)
    response.delete_cookie(LOGIN_COOKIE, path="/console/login")
    return response


def _callback_url(request: Request) -> str:
    return str(request.url_for("oidc_callback"))


@router.get("/oidc/login")
async def oidc_login(request: Request) -> Response:
    oidc = _state(request).oidc
    if oidc is None:
        return _login_page(
            request, 404, problem="Single sign-on is not set up here: log in with your password."
        )
    try:
        login = await in_thread(oidc.start, _callback_url(request))
    except Unauthorised as exc:
        return _login_page(request, 503, problem=exc.detail)
    response = RedirectResponse(login.url, status_code=303)
    cookie = seal(login, request.app.state.settings.secret_key)
    secure = _secure(request)  # Lax: the provider's redirect back is a top-level cross-site GET
    response.set_cookie(
        OIDC_COOKIE, cookie, 600, httponly=True, samesite="lax", secure=secure, path="/console/oidc"
    )
    return response


@router.get("/oidc/callback", name="oidc_callback")
async def oidc_callback(request: Request, code: str = "", state: str = "") -> Response:
    oidc = _state(request).oidc
    if oidc is None:
        return to_login()
    settings = request.app.state.settings
    try:
        nonce, verifier = unseal(request.cookies.get(OIDC_COOKIE), state, settings.secret_key)
        username = await in_thread(oidc.finish, code, _callback_url(request), nonce, verifier)
        result = await in_thread(single_sign_on, request.app.state.db, settings, username, _client(request))
    except Unauthorised as exc:
        return _login_page(request, 401, problem=exc.detail)
    response = _logged_in(request, result)
    response.delete_cookie(OIDC_COOKIE, path="/console/oidc")
    return response


def _logged_in(request: Request, result: LoginResult) -> Response:
    response = go("/console/work")
    response.set_cookie(
        SESSION_COOKIE,
        result.cookie,
        expires=result.expires_at,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
        path="/console",
    )
    return response


@router.post("/logout")
async def logout(request: Request, user: Annotated[ConsoleUser, Depends(member())]) -> Response:
    await posted_form(request, user)
    await in_thread(log_out, request.app.state.db, request.cookies[SESSION_COOKIE])
    response = to_login()
    response.delete_cookie(SESSION_COOKIE, path="/console")
    return response


@router.get("/cases")
async def cases(request: Request, user: Reader, cursor: str | None = None) -> Response:
    if cursor is not None and not is_id(cursor):
        cursor = None
    page = await in_thread(list_cases, request.app.state.db, CaseFilter(), cursor, PAGE_SIZE, user.principal)
    masked_any = any("masked" in c or "masked" in c["patient"] for c in page["items"])
    return render(
        "cases.html",
        user,
        title="Cases",
        cases=page["items"],
        next_cursor=page["next_cursor"],
        masked_any=masked_any,
    )


def _case_page(
    user: ConsoleUser, case: dict[str, Any], revealed: list[str] | None = None, status: int = 200, **more: Any
) -> Response:
    masked = bool(case.get("masked") or case["patient"].get("masked"))
    return render(
        "case.html",
        user,
        status,
        title=f"Case {case['id'][-8:]}",
        case=case,
        masked=masked,
        revealed=revealed,
        can_reveal=user.principal.can(PHI_REVEAL),
        can_act=user.principal.can("cases:transition"),
        can_decide=user.principal.can("approvals:decide"),
        can_bill=user.principal.can("billing:approve"),
        **more,
    )


@router.get("/patients")
async def patients(user: Reader) -> Response:
    return render("patients.html", user, title="Patients", query=PatientQuery(), found=None)


@router.post("/patients")
async def patient_search(request: Request, user: Reader) -> Response:
    """Search by MRN (exact, through its blind index), the start of a name, or a birth date. A
    search is posted, never a query string: what it names is PHI, and URLs end up in logs."""
    form = await posted_form(request, user)
    query = PatientQuery(
        form.get("mrn", "")[:64],
        form.get("family_name", "")[:100],
        form.get("given_name", "")[:100],
        form.get("birth_date", "")[:10],
    )
    try:
        found = await in_thread(search_patients, request.app.state.db, query, user.principal)
    except CareopsError as exc:
        return render(
            "patients.html", user, exc.status, title="Patients", query=query, found=None, problem=exc.detail
        )
    return render("patients.html", user, title="Patients", query=query, found=found)


@router.get("/cases/{case_id}")
async def case(request: Request, case_id: str, user: Reader) -> Response:
    try:
        view = await in_thread(get_case, request.app.state.db, case_id, user.principal)
    except CareopsError as exc:
        return refused_page(user, exc)
    return _case_page(user, view)


@router.post("/cases/{case_id}/reveal")
async def reveal(
    request: Request, case_id: str, user: Annotated[ConsoleUser, Depends(member(PHI_REVEAL))]
) -> Response:
    form = await posted_form(request, user)
    try:
        view = await in_thread(
            reveal_case, request.app.state.db, case_id, form.get("reason", ""), user.principal
        )
    except CareopsError as exc:
        return refused_page(user, exc)
    return _case_page(user, view, revealed=view["revealed"])


@router.post("/cases/{case_id}/book")
async def book_first_free(request: Request, case_id: str, user: Scheduler) -> Response:
    """Book the earliest slot in the next two weeks with every resource the service needs."""
    await posted_form(request, user)
    db = request.app.state.db
    try:
        slot = await in_thread(first_free, db, case_id, user.principal.scope)
        if slot is None:
            raise Conflict("no free slot with every resource the service needs in the next 14 days")
        await in_thread(
            lambda: book(db, case_id, slot.starts_at, actor=user.principal.id, scope=user.principal.scope)
        )
    except CareopsError as exc:
        view = await in_thread(get_case, db, case_id, user.principal)
        return _case_page(user, view, status=exc.status, problem=exc.detail)
    return go(f"/console/cases/{case_id}")


@router.post("/appointments/{appointment_id}/{ending}")
async def end(request: Request, appointment_id: str, ending: str, user: Scheduler) -> Response:
    """Complete, record a no-show or cancel an appointment (with the reason given); to its case."""
    form = await posted_form(request, user)
    if ending not in ENDINGS:
        return refused_page(user, ValidationFailed("complete, no_show or cancel"))
    db = request.app.state.db
    try:
        done = await in_thread(
            lambda: end_appointment(
                db, appointment_id, ending, actor=user.principal.id, scope=user.principal.scope,
                reason=form.get("reason", "")[:500],
            )
        )  # fmt: skip
    except CareopsError as exc:
        return refused_page(user, exc)
    return go(f"/console/cases/{done['case_id']}")


@router.post("/cases/{case_id}/authorisations")
async def request_authorisation_page(request: Request, case_id: str, user: Scheduler) -> Response:
    """Request the case's prior authorisation from its payer."""
    form = await posted_form(request, user)
    db = request.app.state.db
    try:
        units = int(form.get("units") or 1)
        await in_thread(
            lambda: request_authorisation(
                db, case_id, units, actor=user.principal.id, scope=user.principal.scope
            )
        )
    except ValueError:
        return refused_page(user, ValidationFailed("units: a whole number from 1 to 1000"))
    except CareopsError as exc:
        view = await in_thread(get_case, db, case_id, user.principal)
        return _case_page(user, view, status=exc.status, problem=exc.detail)
    return go(f"/console/cases/{case_id}")


@router.post("/authorisations/{authorisation_id}/{decision}")
async def decide_authorisation_page(
    request: Request,
    authorisation_id: str,
    decision: str,
    user: Annotated[ConsoleUser, Depends(member("approvals:decide"))],
) -> Response:
    """The payer's answer, as the form gives it (an approval's number, start and days valid)."""
    form = await posted_form(request, user)
    db = request.app.state.db
    try:
        if decision not in ("approve", "deny"):
            raise ValidationFailed("approve or deny")
        approval: dict[str, Any] = {}
        if decision == "approve":
            start = dt.date.fromisoformat(form.get("valid_from", ""))
            days = int(form.get("valid_days", "0"))
            if not 1 <= days <= 3660:
                raise ValidationFailed("valid for 1 to 3,660 days")
            approval = {"number": form.get("number", "").strip()[:64], "valid_from": start,
                        "valid_to": start + dt.timedelta(days=days - 1)}  # fmt: skip
        decided = await in_thread(
            lambda: decide_authorisation(
                db, authorisation_id, approved=decision == "approve", actor=user.principal.id,
                scope=user.principal.scope, **approval,
            )
        )  # fmt: skip
    except ValueError:
        return refused_page(
            user, ValidationFailed("the validity's start as YYYY-MM-DD and its days as a number")
        )
    except CareopsError as exc:
        return refused_page(user, exc)
    return go(f"/console/cases/{decided['case_id']}")


@router.post("/cases/{case_id}/transitions")
async def transition(
    request: Request, case_id: str, user: Annotated[ConsoleUser, Depends(member("cases:transition"))]
) -> Response:
    """One of the case's allowed actions, from its button; the case page again, with what
    happened (or why not)."""
    form = await posted_form(request, user)
    db = request.app.state.db
    try:
        action = CaseAction(form.get("action", ""))
        await in_thread(lambda: transition_case(db, case_id, action, by=user.principal, reason_code=None))
    except ValueError:
        return refused_page(user, ValidationFailed("choose one of the case's actions"))
    except CareopsError as exc:
        view = await in_thread(get_case, db, case_id, user.principal)
        return _case_page(user, view, status=exc.status, problem=exc.detail)
    return go(f"/console/cases/{case_id}")
