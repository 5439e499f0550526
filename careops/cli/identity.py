"""careops token | user | role: who may do what."""

from __future__ import annotations

from typing import Annotated

import typer

from careops.cli.common import (
    PasswordOption,
    cli_actor,
    err,
    out,
    parse_duration,
    ready_database,
    split_names,
)
from careops.settings import get_settings

token_app = typer.Typer(help="Create, list and revoke API tokens.", no_args_is_help=True)
user_app = typer.Typer(
    help="Console users: create, list, disable, set roles or password.", no_args_is_help=True
)
role_app = typer.Typer(help="Roles: what each may do and how much PHI it sees.", no_args_is_help=True)


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Option("--name", help="Who or what uses the token.")],
    scopes: Annotated[
        str, typer.Option("--scopes", help="Comma-separated, e.g. intake:write,cases:read")
    ] = "",
    all_scopes: Annotated[bool, typer.Option("--all-scopes", help="An administrator token.")] = False,
    expires_in: Annotated[str | None, typer.Option("--expires-in", help="e.g. 90d, 12h")] = None,
    locations: Annotated[
        str | None,
        typer.Option("--locations", help="Comma-separated location slugs it may see (default: all)."),
    ] = None,
    user: Annotated[
        str | None,
        typer.Option(
            "--user", help="A personal token: it acts as this user (who decides approvals through it)."
        ),
    ] = None,
) -> None:
    """Create a token. Only the token goes to stdout (details to stderr), so scripts can capture it."""
    from careops.governance.permissions import ADMIN
    from careops.governance.tokens import create_token

    db = ready_database(get_settings(), field_keys=False)
    wanted = [ADMIN] if all_scopes else [s.strip() for s in scopes.split(",") if s.strip()]
    expiry = parse_duration(expires_in) if expires_in else None
    slugs = None if locations is None else locations.split(",")
    secret, record = create_token(db, name, wanted, expiry, actor=cli_actor(), locations=slugs, user=user)
    err.print(
        f"token {record.name!r} ({record.prefix}…) scopes: {', '.join(record.scopes)}; "
        "shown once, store it now"
    )
    print(secret)


@token_app.command("list")
def token_list() -> None:
    """List tokens (never their secrets)."""
    from rich.table import Table

    from careops.governance.tokens import list_tokens, location_slugs

    db = ready_database(get_settings(), field_keys=False)
    slugs = location_slugs(db)
    table = Table("id", "name", "prefix", "scopes", "locations", "created", "expires", "revoked", "last used")
    for t in list_tokens(db):
        table.add_row(
            t.id,
            t.name,
            t.prefix,
            ",".join(t.scopes),
            "all" if t.locations is None else ",".join(slugs.get(i, i) for i in t.locations),
            f"{t.created_at:%Y-%m-%d %H:%M}",
            f"{t.expires_at:%Y-%m-%d %H:%M}" if t.expires_at else "-",
            f"{t.revoked_at:%Y-%m-%d %H:%M}" if t.revoked_at else "-",
            f"{t.last_used_at:%Y-%m-%d %H:%M}" if t.last_used_at else "-",
        )
    out.print(table)


@token_app.command("rotate")
def token_rotate(
    name_or_id: Annotated[str, typer.Argument(help="Token name or id.")],
    overlap: Annotated[
        str, typer.Option("--overlap", help="How long the old token keeps working, e.g. 24h, 7d, 0s.")
    ] = "24h",
) -> None:
    """A new secret with the same name, scopes, locations and lifetime; the old one ends after --overlap."""
    from careops.governance.tokens import rotate_token

    db = ready_database(get_settings(), field_keys=False)
    secret, record = rotate_token(db, name_or_id, parse_duration(overlap), actor=cli_actor())
    err.print(f"token {record.name!r} rotated: new prefix {record.prefix}…; the old one ends in {overlap}")
    print(secret)


@token_app.command("revoke")
def token_revoke(name_or_id: Annotated[str, typer.Argument(help="Token name or id.")]) -> None:
    """Revoke a token at once (servers stop trusting it within the token cache time)."""
    from careops.governance.tokens import revoke_token

    count = revoke_token(ready_database(get_settings(), field_keys=False), name_or_id, actor=cli_actor())
    err.print(f"revoked {count} token(s)")


@user_app.command("create")
def user_create(
    username: Annotated[str, typer.Argument(help="Login name (lower case).")],
    roles: Annotated[str, typer.Option("--roles", help="Comma-separated roles (careops role list).")],
    display_name: Annotated[str | None, typer.Option("--name", help="Name shown in the console.")] = None,
    locations: Annotated[
        str | None, typer.Option("--locations", help="Comma-separated location slugs (default: all).")
    ] = None,
    sso: Annotated[
        bool, typer.Option("--sso", help="Logs in only through OpenID Connect (no password).")
    ] = False,
    password: Annotated[
        str | None, typer.Option(envvar="CAREOPS_NEW_PASSWORD", hidden=True, help="Asked for when not given.")
    ] = None,
) -> None:
    """Create a console user (the password, asked for twice, is stored only as an argon2id hash)."""
    from careops.governance.users import create_user

    if not sso and password is None:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    settings = get_settings()
    user = create_user(
        ready_database(settings, field_keys=False),
        settings,
        username,
        None if sso else password,
        split_names(roles),
        actor=cli_actor(),
        display_name=display_name,
        locations=None if locations is None else split_names(locations),
    )
    err.print(f"user {user.username!r} created with roles {', '.join(user.roles)}")


@user_app.command("list")
def user_list() -> None:
    """Users with their roles, locations and state."""
    from rich.table import Table

    from careops.domain.models import utcnow
    from careops.governance.tokens import location_slugs
    from careops.governance.users import list_users

    db = ready_database(get_settings(), field_keys=False)
    slugs = location_slugs(db)
    table = Table("username", "name", "roles", "locations", "state", "created")
    now = utcnow()
    for u in list_users(db):
        state = (
            "disabled"
            if u.disabled_at
            else f"locked until {u.locked_until:%H:%M}"
            if u.locked_until and u.locked_until > now
            else "active"
        )
        table.add_row(
            u.username,
            u.display_name,
            ",".join(u.roles),
            "all" if u.locations is None else ",".join(slugs.get(i, i) for i in u.locations),
            state,
            f"{u.created_at:%Y-%m-%d}",
        )
    out.print(table)


@user_app.command("disable")
def user_disable(username: Annotated[str, typer.Argument(help="Login name.")]) -> None:
    """Stop a user logging in; every open session of the user ends at once."""
    from careops.governance.users import disable_user

    disable_user(ready_database(get_settings(), field_keys=False), username, actor=cli_actor())
    err.print(f"user {username!r} disabled")


@user_app.command("set-roles")
def user_set_roles(
    username: Annotated[str, typer.Argument(help="Login name.")],
    roles: Annotated[str, typer.Argument(help="Comma-separated roles; they replace the current ones.")],
) -> None:
    """Replace a user's roles (audited with before and after; the user's sessions end)."""
    from careops.governance.users import set_roles

    settings = get_settings()
    db = ready_database(settings, field_keys=False)
    user = set_roles(db, settings, username, split_names(roles), actor=cli_actor())
    err.print(f"user {user.username!r} now has roles {', '.join(user.roles)}")


@user_app.command("set-password")
def user_set_password(
    username: Annotated[str, typer.Argument(help="Login name.")], password: PasswordOption
) -> None:
    """Set a new password; unlocks the account and ends its sessions."""
    from careops.governance.users import set_password

    settings = get_settings()
    set_password(ready_database(settings, field_keys=False), settings, username, password, actor=cli_actor())
    err.print(f"password of {username!r} changed")


@role_app.command("list")
def role_list() -> None:
    """Every role with its permissions and what PHI it sees."""
    from careops.domain.phi import PhiCategory
    from careops.governance.roles import roles

    for name, spec in sorted(roles(ready_database(get_settings(), field_keys=False)).items()):
        out.print(f"[bold]{name}[/bold] — {spec.description}", highlight=False)
        out.print(f"  permissions: {' '.join(sorted(spec.permissions))}", highlight=False, soft_wrap=True)
        visibility = " ".join(f"{c}={spec.masking.get(c, 'hidden')}" for c in PhiCategory)
        out.print(f"  PHI: {visibility}", highlight=False, soft_wrap=True)


@role_app.command("set")
def role_set(
    name: Annotated[str, typer.Argument(help="Role name (a shipped one to change it, or a new one).")],
    permissions: Annotated[str, typer.Option("--permissions", help="Comma-separated; they replace the old.")],
    masking: Annotated[
        str | None,
        typer.Option("--masking", help="e.g. name=clear,birth_date=partial,clinical_note=hidden"),
    ] = None,
    description: Annotated[str | None, typer.Option("--description")] = None,
) -> None:
    """Define or change a role (audited as role.changed); users holding it get the change at once."""
    from careops.governance.roles import set_role

    visibility = None
    if masking is not None:
        pairs = [part.partition("=") for part in split_names(masking)]
        visibility = {key.strip(): value.strip() for key, _, value in pairs}
    spec = set_role(
        ready_database(get_settings(), field_keys=False),
        name,
        split_names(permissions),
        actor=cli_actor(),
        description=description,
        masking=visibility,
    )
    err.print(f"role {name!r}: {', '.join(sorted(spec.permissions))}")
