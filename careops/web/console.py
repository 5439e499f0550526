"""/console: the operators' console (server-rendered, no script).

Login sets a session cookie (HttpOnly, SameSite=Strict, Secure over TLS, path /console); every
form carries a CSRF token (before login a signed token tied to a cookie, after login the
session's own token). Pages show PHI through the reader's masking policy, like the API; revealing
it needs ``phi:reveal`` and a reason, and is audited.
"""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from careops.db import in_thread
from careops.errors import CareopsError, Forbidden, Unauthorised
from careops.governance.abuse import CsrfTokens, RateLimiter
from careops.governance.oidc import OidcClient, seal, unseal
from careops.governance.permissions import PHI_REVEAL
from careops.governance.users import ConsoleUser, LoginResult, log_in, log_out, session_user, single_sign_on
from careops.orchestration.cases import CaseFilter, get_case, list_cases, reveal_case
from careops.settings import Settings

router = APIRouter(prefix="/console", tags=["console"], include_in_schema=False)
TEMPLATES = Path(__file__).parent / "templates"
_pages = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))
SESSION_COOKIE = "careops_session"
LOGIN_COOKIE = "careops_login"
OIDC_COOKIE = "careops_oidc"
PAGE_SIZE = 50


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


def _page(template: str, status: int = 200, **context: Any) -> Response:
    html = _pages.get_template(f"console/{template}").render(**context)
    return Response(html, status_code=status, media_type="text/html; charset=utf-8")


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def _user(request: Request) -> ConsoleUser | None:
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    try:
        return await in_thread(session_user, request.app.state.db, cookie)
    except Unauthorised:
        return None


def _to_login() -> Response:
    return RedirectResponse("/console/login", status_code=303)


async def _form_with_csrf(request: Request, user: ConsoleUser) -> dict[str, str]:
    form = await request.form(max_files=0, max_fields=10)
    sent = str(form.get("csrf_token") or "")
    if not hmac.compare_digest(sent, user.csrf_token):
        raise Forbidden("the form was not sent from this console page; reload it and try again")
    return {key: str(value) for key, value in form.items()}


def _login_page(request: Request, status: int = 200, **context: Any) -> Response:
    nonce, token = _state(request).login_tokens.issue()
    sso = _state(request).oidc is not None
    response = _page("login.html", status, title="Log in", csrf_token=token, user=None, sso=sso, **context)
    response.set_cookie(
        LOGIN_COOKIE, nonce, httponly=True, samesite="strict", secure=_secure(request), path="/console/login"
    )
    return response


@router.get("/console.css")
async def stylesheet() -> Response:
    return Response((TEMPLATES / "console" / "console.css").read_text(), media_type="text/css")


@router.get("")
async def home() -> Response:
    return RedirectResponse("/console/cases", status_code=303)


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
        return _to_login()
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
    response = RedirectResponse("/console/cases", status_code=303)
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
async def logout(request: Request) -> Response:
    user = await _user(request)
    if user is None:
        return _to_login()
    try:
        await _form_with_csrf(request, user)
    except Forbidden as exc:
        return _page("cases.html", 403, title="Cases", user=user, cases=[], problem=exc.detail)
    await in_thread(log_out, request.app.state.db, request.cookies[SESSION_COOKIE])
    response = _to_login()
    response.delete_cookie(SESSION_COOKIE, path="/console")
    return response


def _refused(user: ConsoleUser, exc: CareopsError) -> Response:
    return _page("base.html", exc.status, title="Not available", user=user, problem=exc.detail)


@router.get("/cases")
async def cases(request: Request, cursor: str | None = None) -> Response:
    user = await _user(request)
    if user is None:
        return _to_login()
    if not user.principal.can("cases:read"):
        return _refused(user, Forbidden("your roles do not include cases:read"))
    if cursor is not None and not (len(cursor) == 32 and cursor.isalnum()):
        cursor = None
    page = await in_thread(list_cases, request.app.state.db, CaseFilter(), cursor, PAGE_SIZE, user.principal)
    masked_any = any("masked" in c or "masked" in c["patient"] for c in page["items"])
    return _page(
        "cases.html",
        title="Cases",
        user=user,
        cases=page["items"],
        next_cursor=page["next_cursor"],
        masked_any=masked_any,
    )


def _case_page(user: ConsoleUser, case: dict[str, Any], revealed: list[str] | None = None) -> Response:
    masked = bool(case.get("masked") or case["patient"].get("masked"))
    return _page(
        "case.html",
        title=f"Case {case['id'][-8:]}",
        user=user,
        case=case,
        masked=masked,
        revealed=revealed,
        can_reveal=user.principal.can(PHI_REVEAL),
    )


@router.get("/cases/{case_id}")
async def case(request: Request, case_id: str) -> Response:
    user = await _user(request)
    if user is None:
        return _to_login()
    if not user.principal.can("cases:read"):
        return _refused(user, Forbidden("your roles do not include cases:read"))
    try:
        view = await in_thread(get_case, request.app.state.db, case_id, user.principal)
    except CareopsError as exc:
        return _refused(user, exc)
    return _case_page(user, view)


@router.post("/cases/{case_id}/reveal")
async def reveal(request: Request, case_id: str) -> Response:
    user = await _user(request)
    if user is None:
        return _to_login()
    try:
        form = await _form_with_csrf(request, user)
        if not user.principal.can(PHI_REVEAL):
            raise Forbidden("your roles do not include phi:reveal")
        view = await in_thread(
            reveal_case, request.app.state.db, case_id, form.get("reason", ""), user.principal
        )
    except CareopsError as exc:
        return _refused(user, exc)
    return _case_page(user, view, revealed=view["revealed"])
