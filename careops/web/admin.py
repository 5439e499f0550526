"""/console/admin: API tokens (create with a one-time display, revoke, rotate), users and their
roles (set, disable), connectors (create and rotate, the secret shown once), and the audit
chain's status with ``verify`` on demand.

Every change is the same service call the CLI makes, with the user as the actor, so it is a
business event in the audit log like any other.
"""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response

from careops.db import in_thread
from careops.errors import CareopsError, ValidationFailed
from careops.governance.audit import chain_status, verify
from careops.governance.permissions import ADMIN, PERMISSIONS
from careops.governance.roles import roles as shipped_and_custom_roles
from careops.governance.signing import create_connector, list_connectors, rotate_secret
from careops.governance.tokens import create_token, list_tokens, location_slugs, revoke_token, rotate_token
from careops.governance.users import ConsoleUser, create_user, disable_user, list_users, set_roles
from careops.web.pages import PathText, go, member, posted_form, refused_page, render

router = APIRouter(prefix="/console/admin", tags=["console"], include_in_schema=False)
Admin = Annotated[ConsoleUser, Depends(member(ADMIN))]
ROTATION_OVERLAP = dt.timedelta(days=1)


async def _tokens_page(request: Request, user: ConsoleUser, status: int = 200, **more: Any) -> Response:
    db = request.app.state.db
    tokens = await in_thread(list_tokens, db)
    slugs = await in_thread(location_slugs, db)
    return render(
        "admin_tokens.html",
        user,
        status,
        title="API tokens",
        tokens=sorted(tokens, key=lambda t: (t.revoked_at is not None, t.name)),
        permissions=list(PERMISSIONS),
        slugs=slugs,
        **more,
    )


@router.get("/tokens")
async def tokens(request: Request, user: Admin) -> Response:
    return await _tokens_page(request, user)


@router.post("/tokens")
async def new_token(request: Request, user: Admin) -> Response:
    """Create a token; its secret is on this answer only (it is kept as a digest)."""
    form = await posted_form(request, user)
    scopes = [name.removeprefix("scope-") for name in form if name.startswith("scope-")]
    locations = [name.removeprefix("location-") for name in form if name.startswith("location-")]
    name = form.get("name", "").strip()[:100]
    try:
        if not name:
            raise ValidationFailed("give the token a name: who or what will use it")
        days = int(form.get("expires_days") or 0)
        expires = dt.timedelta(days=days) if days > 0 else None
        secret, record = await in_thread(
            lambda: create_token(
                request.app.state.db,
                name,
                scopes,
                expires,
                actor=user.principal.id,
                locations=locations or None,
            )
        )
    except ValueError:
        return await _tokens_page(request, user, 422, problem="the lifetime is a whole number of days")
    except CareopsError as exc:
        return await _tokens_page(request, user, exc.status, problem=exc.detail)
    return await _tokens_page(request, user, 201, secret=secret, shown=record)


@router.post("/tokens/{token_id}/revoke")
async def revoke(request: Request, token_id: PathText, user: Admin) -> Response:
    await posted_form(request, user)
    await in_thread(lambda: revoke_token(request.app.state.db, token_id, actor=user.principal.id))
    return go("/console/admin/tokens")


@router.post("/tokens/{token_id}/rotate")
async def rotate(request: Request, token_id: PathText, user: Admin) -> Response:
    """A new secret, shown once; the old one keeps working for a day while it is rolled out."""
    await posted_form(request, user)
    try:
        secret, record = await in_thread(
            lambda: rotate_token(request.app.state.db, token_id, ROTATION_OVERLAP, actor=user.principal.id)
        )
    except CareopsError as exc:
        return await _tokens_page(request, user, exc.status, problem=exc.detail)
    return await _tokens_page(request, user, 201, secret=secret, shown=record)


async def _users_page(request: Request, user: ConsoleUser, status: int = 200, **more: Any) -> Response:
    db = request.app.state.db
    users = await in_thread(list_users, db)
    roles = await in_thread(shipped_and_custom_roles, db)
    slugs = await in_thread(location_slugs, db)
    return render(
        "admin_users.html", user, status, title="Users", users=users, roles=sorted(roles), slugs=slugs, **more
    )


@router.get("/users")
async def users(request: Request, user: Admin) -> Response:
    return await _users_page(request, user)


@router.post("/users")
async def new_user(request: Request, user: Admin) -> Response:
    """A console user with a first password made here and shown once (give it to them by a safe
    channel; they change it with ``careops user set-password``)."""
    form = await posted_form(request, user)
    roles = [name.removeprefix("role-") for name in form if name.startswith("role-")]
    locations = [name.removeprefix("location-") for name in form if name.startswith("location-")]
    username = form.get("username", "").strip()[:100]
    password = first_password()
    app = request.app
    try:
        created = await in_thread(
            lambda: create_user(
                app.state.db,
                app.state.settings,
                username,
                password,
                roles,
                actor=user.principal.id,
                display_name=form.get("display_name", "").strip()[:200] or None,
                locations=locations or None,
            )
        )
    except CareopsError as exc:
        return await _users_page(request, user, exc.status, problem=exc.detail)
    return await _users_page(request, user, 201, password=password, created=created.username)


def first_password() -> str:
    """Four groups of random letters and digits: long, and nothing anyone could guess."""
    return "-".join(secrets.token_urlsafe(6) for _ in range(4))


@router.post("/users/{username}/roles")
async def user_roles(request: Request, username: PathText, user: Admin) -> Response:
    """Replace the user's roles (their open sessions end); nobody changes their own."""
    form = await posted_form(request, user)
    roles = [name.removeprefix("role-") for name in form if name.startswith("role-")]
    app = request.app
    try:
        await in_thread(
            lambda: set_roles(app.state.db, app.state.settings, username, roles, actor=user.principal.id)
        )
    except CareopsError as exc:
        return await _users_page(request, user, exc.status, problem=exc.detail)
    return go("/console/admin/users")


@router.post("/users/{username}/disable")
async def disable(request: Request, username: PathText, user: Admin) -> Response:
    await posted_form(request, user)
    if username == user.principal.name:
        return await _users_page(request, user, 409, problem="you cannot disable yourself")
    try:
        await in_thread(lambda: disable_user(request.app.state.db, username, actor=user.principal.id))
    except CareopsError as exc:
        return refused_page(user, exc)
    return go("/console/admin/users")


Integrator = Annotated[ConsoleUser, Depends(member("integrations:manage"))]


async def _connectors_page(request: Request, user: ConsoleUser, status: int = 200, **more: Any) -> Response:
    db = request.app.state.db
    rows = await in_thread(list_connectors, db)
    roles = await in_thread(shipped_and_custom_roles, db)
    return render(
        "admin_connectors.html",
        user,
        status,
        title="Connectors",
        connectors=rows,
        roles=sorted(roles),
        **more,
    )


@router.get("/connectors")
async def connectors(request: Request, user: Integrator) -> Response:
    return await _connectors_page(request, user)


@router.post("/connectors")
async def new_connector(request: Request, user: Integrator) -> Response:
    """Create a connector; its first signing secret is on this answer only."""
    form = await posted_form(request, user)
    name = form.get("name", "").strip()
    url = form.get("url", "").strip() or None
    sees_as = form.get("sees_as") or None
    try:
        secret = await in_thread(
            lambda: create_connector(
                request.app.state.db,
                name,
                form.get("direction", ""),
                url,
                actor=user.principal.id,
                sees_as=sees_as,
            )
        )
    except CareopsError as exc:
        return await _connectors_page(request, user, exc.status, problem=exc.detail)
    return await _connectors_page(request, user, 201, secret=secret, shown=name)


@router.post("/connectors/{name}/rotate")
async def rotate_connector(request: Request, name: PathText, user: Integrator) -> Response:
    """A new signing secret, shown once; the old ones keep working for a day while it is rolled out."""
    await posted_form(request, user)
    try:
        secret = await in_thread(
            lambda: rotate_secret(request.app.state.db, name, ROTATION_OVERLAP, actor=user.principal.id)
        )
    except CareopsError as exc:
        return await _connectors_page(request, user, exc.status, problem=exc.detail)
    return await _connectors_page(request, user, 201, secret=secret, shown=name)


AuditReader = Annotated[ConsoleUser, Depends(member("audit:read"))]


@router.get("/audit")
async def audit(request: Request, user: AuditReader) -> Response:
    chain = await in_thread(chain_status, request.app.state.db)
    return render("admin_audit.html", user, title="Audit log", chain=chain)


@router.post("/audit/verify")
async def audit_verify(request: Request, user: AuditReader) -> Response:
    """Walk the whole chain now (as ``careops audit verify``) and show what it found."""
    await posted_form(request, user)
    db, settings = request.app.state.db, request.app.state.settings
    report = await in_thread(lambda: verify(db, settings.secret_key))
    chain = await in_thread(chain_status, db)
    code = 200 if report.ok else 409
    return render("admin_audit.html", user, code, title="Audit log", chain=chain, report=report)
