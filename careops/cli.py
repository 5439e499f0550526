"""The careops command line: serve, worker, migrate, seed, token, audit, demo."""

from __future__ import annotations

import asyncio
import datetime as dt
import getpass
import multiprocessing
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console

from careops.db import Database
from careops.errors import CareopsError
from careops.settings import Settings, get_settings

if TYPE_CHECKING:
    from rich.progress import TaskID

    from careops.governance.principal import Principal
    from careops.integrations.inbound.channels import Inbound
    from careops.orchestration.worker import Listener

app = typer.Typer(
    help="careops: operations control plane for healthcare service organisations.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
token_app = typer.Typer(help="Create, list and revoke API tokens.", no_args_is_help=True)
app.add_typer(token_app, name="token")
user_app = typer.Typer(
    help="Console users: create, list, disable, set roles or password.", no_args_is_help=True
)
app.add_typer(user_app, name="user")
role_app = typer.Typer(help="Roles: what each may do and how much PHI it sees.", no_args_is_help=True)
app.add_typer(role_app, name="role")
keys_app = typer.Typer(
    help="Field encryption keys: generate a master key, rotate data keys.", no_args_is_help=True
)
app.add_typer(keys_app, name="keys")
connector_app = typer.Typer(help="Connectors and their webhook signing secrets.", no_args_is_help=True)
app.add_typer(connector_app, name="connector")
audit_app = typer.Typer(help="Seal, verify and export the tamper-evident audit log.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
intake_app = typer.Typer(help="Import referrals from files (saved emails).", no_args_is_help=True)
app.add_typer(intake_app, name="intake")
quarantine_app = typer.Typer(
    help="Inspect, replay and discard rejected payloads kept in quarantine.", no_args_is_help=True
)
app.add_typer(quarantine_app, name="quarantine")
out = Console()
err = Console(stderr=True)
_debug = False


@app.callback()
def main(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False) -> None:
    global _debug
    _debug = debug


def fail(message: str) -> NoReturn:
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(1)


def cli_actor() -> str:
    """Who acts from the command line, as audited: ``cli:<operating-system user>``."""
    return f"cli:{getpass.getuser()}"


def cli_operator() -> Principal:
    """The command line's principal: whoever runs it holds the database and its keys, so it sees
    everything in clear; what it reads in clear is still audited under ``cli:<user>``."""
    from careops.governance.masking import CLEAR
    from careops.governance.permissions import ADMIN, PHI_READ
    from careops.governance.principal import Principal

    return Principal(cli_actor(), cli_actor(), frozenset({ADMIN, PHI_READ}), masking=CLEAR)


MllpPortOption = Annotated[
    int | None,
    typer.Option("--mllp-port", help="Also listen for HL7 v2 over MLLP on this port (CAREOPS_MLLP_PORT)."),
]


SmtpPortOption = Annotated[
    int | None,
    typer.Option("--smtp-port", help="Also take referral emails over SMTP on this port (CAREOPS_SMTP_PORT)."),
]


def _settings(**overrides: object) -> Settings:
    settings = get_settings()
    return settings.model_copy(update={k: v for k, v in overrides.items() if v is not None})


@app.command()
def migrate() -> None:
    """Create or upgrade the database schema to the newest revision."""
    from careops.migrate import upgrade

    settings = get_settings()
    upgrade(settings.database_url)
    err.print("[green]database schema is current[/green]")
    from careops.governance.keys import load_field_keys, reencrypt

    db = Database(settings.database_url)
    keys = load_field_keys(db, settings)
    with _progress() as report:
        changed = reencrypt(db, keys, report)
    if changed:
        err.print(f"encrypted {changed} value(s) written before field encryption")
    db.dispose()


@app.command()
def seed(demo: Annotated[bool, typer.Option("--demo", help="Seed the demo organisation.")] = False) -> None:
    """Load reference data. `--demo` adds 3 locations, services, payers and referrers."""
    from careops.demo.seed import seed_demo

    if not demo:
        fail("nothing to seed: pass --demo")
    db = _ready_database(get_settings(), field_keys=False)
    created = seed_demo(db)
    err.print(
        "demo organisation created" if created else "demo organisation already present; nothing changed"
    )


def _parse_duration(text: str) -> dt.timedelta:
    match = re.fullmatch(r"(\d+)([dhms])", text.strip())
    if not match:
        raise typer.BadParameter("use a number followed by d, h, m or s, e.g. 90d")
    amount, unit = int(match.group(1)), match.group(2)
    return {
        "d": dt.timedelta(days=amount),
        "h": dt.timedelta(hours=amount),
        "m": dt.timedelta(minutes=amount),
        "s": dt.timedelta(seconds=amount),
    }[unit]


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
) -> None:
    """Create a token. Only the token goes to stdout (details to stderr), so scripts can capture it."""
    from careops.governance.permissions import ADMIN
    from careops.governance.tokens import create_token

    db = _ready_database(get_settings(), field_keys=False)
    wanted = [ADMIN] if all_scopes else [s.strip() for s in scopes.split(",") if s.strip()]
    expiry = _parse_duration(expires_in) if expires_in else None
    slugs = None if locations is None else locations.split(",")
    secret, record = create_token(db, name, wanted, expiry, actor=cli_actor(), locations=slugs)
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

    db = _ready_database(get_settings(), field_keys=False)
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

    db = _ready_database(get_settings(), field_keys=False)
    secret, record = rotate_token(db, name_or_id, _parse_duration(overlap), actor=cli_actor())
    err.print(f"token {record.name!r} rotated: new prefix {record.prefix}…; the old one ends in {overlap}")
    print(secret)


@token_app.command("revoke")
def token_revoke(name_or_id: Annotated[str, typer.Argument(help="Token name or id.")]) -> None:
    """Revoke a token at once (servers stop trusting it within the token cache time)."""
    from careops.governance.tokens import revoke_token

    count = revoke_token(_ready_database(get_settings(), field_keys=False), name_or_id, actor=cli_actor())
    err.print(f"revoked {count} token(s)")


PasswordOption = Annotated[
    str,
    typer.Option(
        prompt=True,
        hide_input=True,
        confirmation_prompt=True,
        envvar="CAREOPS_NEW_PASSWORD",
        help="Asked for when not given (or from CAREOPS_NEW_PASSWORD).",
    ),
]


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


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
        _ready_database(settings, field_keys=False),
        settings,
        username,
        None if sso else password,
        _names(roles),
        actor=cli_actor(),
        display_name=display_name,
        locations=None if locations is None else _names(locations),
    )
    err.print(f"user {user.username!r} created with roles {', '.join(user.roles)}")


@user_app.command("list")
def user_list() -> None:
    """Users with their roles, locations and state."""
    from rich.table import Table

    from careops.domain.models import utcnow
    from careops.governance.tokens import location_slugs
    from careops.governance.users import list_users

    db = _ready_database(get_settings(), field_keys=False)
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

    disable_user(_ready_database(get_settings(), field_keys=False), username, actor=cli_actor())
    err.print(f"user {username!r} disabled")


@user_app.command("set-roles")
def user_set_roles(
    username: Annotated[str, typer.Argument(help="Login name.")],
    roles: Annotated[str, typer.Argument(help="Comma-separated roles; they replace the current ones.")],
) -> None:
    """Replace a user's roles (audited with before and after; the user's sessions end)."""
    from careops.governance.users import set_roles

    settings = get_settings()
    db = _ready_database(settings, field_keys=False)
    user = set_roles(db, settings, username, _names(roles), actor=cli_actor())
    err.print(f"user {user.username!r} now has roles {', '.join(user.roles)}")


@user_app.command("set-password")
def user_set_password(
    username: Annotated[str, typer.Argument(help="Login name.")], password: PasswordOption
) -> None:
    """Set a new password; unlocks the account and ends its sessions."""
    from careops.governance.users import set_password

    settings = get_settings()
    set_password(_ready_database(settings, field_keys=False), settings, username, password, actor=cli_actor())
    err.print(f"password of {username!r} changed")


@role_app.command("list")
def role_list() -> None:
    """Every role with its permissions and what PHI it sees."""
    from careops.domain.phi import PhiCategory
    from careops.governance.roles import roles

    for name, spec in sorted(roles(_ready_database(get_settings(), field_keys=False)).items()):
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
        pairs = [part.partition("=") for part in _names(masking)]
        visibility = {key.strip(): value.strip() for key, _, value in pairs}
    spec = set_role(
        _ready_database(get_settings(), field_keys=False),
        name,
        _names(permissions),
        actor=cli_actor(),
        description=description,
        masking=visibility,
    )
    err.print(f"role {name!r}: {', '.join(sorted(spec.permissions))}")


@keys_app.command("generate")
def keys_generate(path: Annotated[Path, typer.Argument(help="File to create (mode 600).")]) -> None:
    """Write a new random master key; point CAREOPS_ENCRYPTION_KEY_FILE at it before first use."""
    from careops.governance.keys import generate_key_file

    try:
        generate_key_file(path)
    except FileExistsError:
        fail(f"{path} exists: a master key is never overwritten")
    err.print(f"master key written to {path}; keep a copy somewhere safe, without it nothing decrypts")


@keys_app.command("status")
def keys_status() -> None:
    """The data keys (never their values): which one is active, which are retired."""
    from careops.governance.keys import key_rows

    settings = get_settings()
    db = _ready_database(settings)
    for row in key_rows(db):
        state = f"retired {row.retired_at:%Y-%m-%d %H:%M}" if row.retired_at else "live"
        out.print(f"{row.id:10} {row.purpose:6} created {row.created_at:%Y-%m-%d %H:%M}  {state}")


@keys_app.command("rewrap")
def keys_rewrap(
    old_key_file: Annotated[
        Path | None, typer.Option("--old-key-file", help="The master key file used until now.")
    ] = None,
    old_secret_env: Annotated[
        str | None,
        typer.Option("--old-secret-env", help="Name of an environment variable holding the old secret_key."),
    ] = None,
) -> None:
    """After changing the master key (a new encryption_key_file, or a new secret_key without one):
    re-wrap the stored data keys under it. Say where the old master key came from."""
    from careops.governance.keys import derived_master_key, read_key_file, rewrap

    if (old_key_file is None) == (old_secret_env is None):
        fail("give exactly one of --old-key-file FILE or --old-secret-env VARIABLE")
    if old_key_file is not None:
        old_master = read_key_file(old_key_file)
    else:
        old_secret = os.environ.get(str(old_secret_env))
        if not old_secret:
            fail(f"the environment variable {old_secret_env} is not set")
        old_master = derived_master_key(old_secret)
    settings = get_settings()
    db = _ready_database(settings, field_keys=False)
    count = rewrap(db, old_master, settings, actor=cli_actor())
    err.print(f"[green]{count} key(s) re-wrapped under the current master key[/green]")


@keys_app.command("rotate")
def keys_rotate() -> None:
    """A new data key; every encrypted value re-encrypted under it in batches; old keys retired."""
    from careops.governance.keys import rotate

    settings = get_settings()
    db = _ready_database(settings)
    with _progress() as report:
        key_id, count = rotate(db, settings, report, actor=cli_actor())
    err.print(f"[green]data key {key_id} is active[/green]; {count} value(s) re-encrypted")


@connector_app.command("create")
def connector_create(
    name: Annotated[str, typer.Argument(help="Connector name, e.g. partner-clinic.")],
    direction: Annotated[
        str, typer.Option("--direction", help="inbound (signs what it posts to us) or outbound.")
    ],
    url: Annotated[str | None, typer.Option("--url", help="Where an outbound connector delivers.")] = None,
    sees_as: Annotated[
        str | None, typer.Option("--sees-as", help="Role whose PHI masking applies to what it is sent.")
    ] = None,
) -> None:
    """A connector and its first signing secret (on stdout, shown once; stored encrypted)."""
    from careops.governance.signing import create_connector

    db = _ready_database(get_settings())
    secret = create_connector(db, name, direction, url, actor=cli_actor(), sees_as=sees_as)
    err.print(f"connector {name!r} ({direction}) created; its signing secret is shown once, store it now")
    print(secret)


@connector_app.command("rotate-secret")
def connector_rotate_secret(
    name: Annotated[str, typer.Argument(help="Connector name.")],
    overlap: Annotated[
        str, typer.Option("--overlap", help="How long the old secret stays valid, e.g. 24h.")
    ] = "24h",
) -> None:
    """A new secret (stdout); the old one keeps working for --overlap, and both sign outbound bodies."""
    from careops.governance.signing import rotate_secret

    secret = rotate_secret(_ready_database(get_settings()), name, _parse_duration(overlap), actor=cli_actor())
    err.print(f"connector {name!r}: new secret; the old one ends in {overlap}")
    print(secret)


@connector_app.command("list")
def connector_list() -> None:
    """Connectors with their direction, URL and number of live secrets (never the secrets)."""
    from careops.governance.signing import list_connectors

    for connector, live in list_connectors(_ready_database(get_settings())):
        sees = f"sees as {connector.sees_as}" if connector.sees_as else ""
        out.print(
            f"{connector.name:24} {connector.direction:8} live secrets: {live}  {connector.url or ''} {sees}"
        )


@connector_app.command("ping")
def connector_ping(name: Annotated[str, typer.Argument(help="Outbound connector name.")]) -> None:
    """POST a signed {"type": "ping"} to an outbound connector; exit 1 unless it answers 2xx."""
    from careops.integrations.outbound.webhook import deliver

    status = deliver(_ready_database(get_settings()), name, {"type": "ping", "connector": name})
    err.print(f"[green]{name} answered {status}[/green]")


@connector_app.command("send-case")
def connector_send_case(
    name: Annotated[str, typer.Argument(help="Outbound connector name.")],
    case_id: Annotated[str, typer.Argument(help="Case id.")],
) -> None:
    """POST a case to an outbound connector, signed and masked as for the role it sees as."""
    from careops.integrations.outbound.webhook import send_case

    status = send_case(_ready_database(get_settings()), name, case_id)
    err.print(f"[green]{name} answered {status}[/green]")


@audit_app.command("seal")
def audit_seal() -> None:
    """Seal every committed event into the chain now and sign its head (the worker does this too)."""
    from careops.governance.audit import seal_all

    settings = get_settings()
    err.print(f"sealed {seal_all(_ready_database(settings, field_keys=False), settings.secret_key)} entries")


@audit_app.command("checkpoint")
def audit_checkpoint() -> None:
    """Seal, sign and print the head as JSON: keep it outside this database (e.g. in a ticket)."""
    import json

    from careops.governance.audit import checkpoint_head

    settings = get_settings()
    db = _ready_database(settings, field_keys=False)
    checkpoint = checkpoint_head(db, settings.secret_key)
    if checkpoint is None:
        fail("the audit log is empty: nothing to checkpoint")
    print(json.dumps(checkpoint))


@audit_app.command("verify")
def audit_verify(
    expect: Annotated[
        str | None,
        typer.Option("--expect", help="A head kept elsewhere, SEQ:HASH (from `careops audit checkpoint`)."),
    ] = None,
    processes: Annotated[
        int,
        typer.Option("--processes", help="Walk a long chain in this many ranges at once (default: CPUs)."),
    ] = os.cpu_count() or 1,
) -> None:
    """Walk the whole chain; exit 1 and name the first broken entries if anything was tampered with."""
    from rich.progress import Progress

    from careops.governance.audit import verify

    expected = None
    if expect is not None:
        seq, _, head_hash = expect.partition(":")
        if not seq.isdigit() or len(head_hash) != 64:
            fail("--expect takes SEQ:HASH, e.g. 1042:3f9a… (64 hex digits)")
        expected = (int(seq), head_hash)
    settings = get_settings()
    db = _ready_database(settings, field_keys=False)
    with Progress(console=err, transient=True) as progress:
        task = progress.add_task("verifying the audit chain", total=None)
        report = verify(
            db,
            settings.secret_key,
            expected,
            lambda done, total: progress.update(task, completed=done, total=total),
            processes=max(1, processes),
        )
    err.print(
        f"{report.entries} entries, head {report.head_seq}:{report.head_hash}, "
        f"{report.checkpoints} signed checkpoints checked"
    )
    if report.unsealed:
        err.print(
            f"[yellow]{report.unsealed} entries not sealed yet[/yellow] "
            f"(oldest {report.oldest_unsealed_seconds or 0:.0f} s; "
            "the worker seals them, or run `careops audit seal`)"
        )
    if not report.ok:
        for finding in report.findings:
            err.print(f"[red]broken:[/red] {finding}")
        raise typer.Exit(1)
    err.print("[green]the audit chain is intact[/green]")


@audit_app.command("export")
def audit_export(
    start: Annotated[str | None, typer.Option("--from", help="ISO date or time (UTC), inclusive.")] = None,
    end: Annotated[str | None, typer.Option("--to", help="ISO date or time (UTC), exclusive.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="jsonl or csv.")] = "jsonl",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write (default stdout).")
    ] = None,
) -> None:
    """Export sealed entries for the compliance officer; the export itself is audited."""
    from careops.governance.audit import export

    if fmt not in ("jsonl", "csv"):
        fail("--format is jsonl or csv")
    db = _ready_database(get_settings(), field_keys=False)
    bounds = [_parse_utc(value, option) for value, option in ((start, "--from"), (end, "--to"))]
    if output is None:
        count = export(db, sys.stdout, start=bounds[0], end=bounds[1], fmt=fmt, actor=cli_actor())
    else:
        with output.open("w", encoding="utf-8", newline="") as handle:
            count = export(db, handle, start=bounds[0], end=bounds[1], fmt=fmt, actor=cli_actor())
    err.print(f"exported {count} entries")


def _parse_utc(value: str | None, option: str) -> dt.datetime | None:
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        fail(f"{option} takes an ISO date or time, e.g. 2026-11-01 or 2026-11-01T08:00")
    return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed


@contextmanager
def _progress() -> Iterator[Callable[[str, int, int], None]]:
    """A progress bar per named step; yields ``report(step, done, total)``."""
    from rich.progress import Progress

    with Progress(console=err, transient=True) as progress:
        tasks: dict[str, TaskID] = {}

        def report(step: str, done: int, total: int) -> None:
            if step not in tasks:
                tasks[step] = progress.add_task(step, total=total)
            progress.update(tasks[step], completed=done, total=total)

        yield report


def _ready_database(settings: Settings, field_keys: bool = True) -> Database:
    """The database, migrated, with its field encryption keys unless ``field_keys`` is False
    (commands that never read an encrypted column, like the audit log's, work without them)."""
    from careops.governance.keys import load_field_keys
    from careops.migrate import require_current

    db = Database(settings.database_url)
    require_current(db.engine)
    if field_keys:
        load_field_keys(db, settings)
    return db


def _inbound_listeners(settings: Settings) -> list[Listener]:
    """The network listeners a worker runs: MLLP and SMTP when their ports are set."""
    if settings.mllp_port is None and settings.smtp_port is None:
        return []
    from careops.integrations.inbound.channels import Inbound
    from careops.orchestration.intake import CatalogueCache

    async def listen(db: Database) -> list[asyncio.Server]:
        return await Inbound.build(db, settings, CatalogueCache(settings.reference_cache_seconds)).listen(
            settings
        )

    return [listen]


def _worker_process(parent_pid: int) -> None:
    from careops.observability.logs import configure_logging
    from careops.orchestration.worker import run_worker

    configure_logging()

    # The HTTP workers of `careops serve` run the MLLP listener; the embedded worker does not.
    asyncio.run(run_worker(get_settings(), should_stop=lambda: os.getppid() != parent_pid))


def start_embedded_worker() -> BaseProcess:
    """The dispatcher and DBOS in a child process that ends when its parent dies."""
    process = multiprocessing.get_context("spawn").Process(
        target=_worker_process, args=(os.getpid(),), name="careops-worker", daemon=True
    )
    process.start()
    return process


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int | None, typer.Option(help="HTTP worker processes (CAREOPS_WORKERS).")] = None,
    embedded_worker: Annotated[
        bool,
        typer.Option("--embedded-worker/--no-embedded-worker", help="Run the dispatcher and workflows too."),
    ] = True,
    mllp_port: MllpPortOption = None,
    smtp_port: SmtpPortOption = None,
) -> None:
    """Serve the API (and, by default, the dispatcher and durable workflows in a child process)."""
    import uvicorn

    settings = _settings(workers=workers, mllp_port=mllp_port, smtp_port=smtp_port)
    settings.check_production(processes=settings.workers + (1 if embedded_worker else 0))
    if settings.is_sqlite and settings.workers > 1:
        err.print(
            "[yellow]warning:[/yellow] several processes share one SQLite file; use PostgreSQL in production"
        )
    _ready_database(settings).dispose()
    os.environ["CAREOPS_DATABASE_URL"] = settings.database_url
    metrics_dir = None
    if settings.workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        # /metrics adds up every HTTP worker's counters, kept in files here while the server runs
        metrics_dir = tempfile.mkdtemp(prefix="careops-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    if settings.mllp_port is not None:
        os.environ["CAREOPS_MLLP_PORT"] = str(settings.mllp_port)
    if settings.smtp_port is not None:
        os.environ["CAREOPS_SMTP_PORT"] = str(settings.smtp_port)
    get_settings.cache_clear()  # one HTTP worker runs in this process: it must read the above too
    worker = start_embedded_worker() if embedded_worker else None
    err.print(f"careops serving on http://{host}:{port} ({settings.workers} HTTP worker(s))")
    if settings.mllp_port is not None:
        err.print(f"HL7 MLLP listening on {settings.mllp_host}:{settings.mllp_port}")
    if settings.smtp_port is not None:
        err.print(f"SMTP for referral emails listening on {settings.smtp_host}:{settings.smtp_port}")
    try:
        uvicorn.run(
            "careops.api.app:create_served_app",
            factory=True,
            log_config=None,
            host=host,
            port=port,
            workers=settings.workers,
            log_level="warning",
            access_log=False,
        )
    finally:
        if worker is not None:
            worker.terminate()
            worker.join(10)
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _inbound(settings: Settings) -> Inbound:
    from careops.integrations.inbound.channels import Inbound
    from careops.orchestration.intake import CatalogueCache

    return Inbound.build(_ready_database(settings), settings, CatalogueCache(0))


@intake_app.command("eml")
def intake_eml(
    files: Annotated[
        list[Path], typer.Argument(help="Saved emails (.eml), RFC 5322.", exists=True, dir_okay=False)
    ],
) -> None:
    """Take saved emails through the email channel, as if they had arrived by SMTP (one line each)."""
    from rich.progress import track

    from careops.integrations.inbound.email_channel import EmailRefused

    email = _inbound(get_settings()).email
    refused = 0
    for path in track(files, description="importing", console=err, transient=True):
        try:
            answer = email.receive(path.read_bytes(), transport="file")
        except EmailRefused as exc:
            refused += 1
            sys.stdout.write(f"{path}\tquarantined\t{exc.reason}\n")
            continue
        body = answer.body
        detail = ", ".join(body.get("reason_codes", [])) or body.get("case_id", "")
        sys.stdout.write(f"{path}\t{body['outcome']}\t{body['intake_item_id']}\t{detail}\n")
    err.print(f"{len(files) - refused} taken, {refused} quarantined")


@quarantine_app.command("list")
def quarantine_list(
    limit: Annotated[int, typer.Option("--limit", help="At most this many, newest first.")] = 50,
) -> None:
    """Payloads in quarantine, newest first (without their bodies)."""
    from rich.table import Table

    from careops.governance.scoping import EVERYWHERE
    from careops.orchestration.quarantine import list_quarantined

    table = Table("received", "channel", "sender", "reasons")
    table.add_column("id", no_wrap=True, min_width=32)
    for item in list_quarantined(_ready_database(get_settings()), limit, EVERYWHERE):
        table.add_row(
            item["received_at"][:19],
            item["channel"],
            item["sender"] or "-",
            ", ".join(item["reasons"]),
            item["id"],
        )
    out.print(table)


@quarantine_app.command("show")
def quarantine_show(item_id: Annotated[str, typer.Argument(help="Quarantine id.")]) -> None:
    """One quarantined payload: its reasons on stderr, the payload itself on stdout."""
    from careops.orchestration.quarantine import get_quarantined

    item = get_quarantined(_ready_database(get_settings()), item_id, cli_operator())
    reasons = ", ".join(item["reasons"])
    err.print(f"{item['channel']} from {item['sender'] or '-'} at {item['received_at']}: {reasons}")
    sys.stdout.write(item["raw_payload"].replace("\r", "\n") + "\n")


@quarantine_app.command("replay")
def quarantine_replay(item_id: Annotated[str, typer.Argument(help="Quarantine id.")]) -> None:
    """Run a payload through its channel again (after fixing reference data); creates its case once."""
    from careops.governance.scoping import EVERYWHERE
    from careops.integrations.inbound.replay import replay

    outcome = replay(_inbound(get_settings()), item_id, actor=cli_actor(), scope=EVERYWHERE)
    err.print(f"[green]replayed[/green]: {outcome['outcome']}")
    out.print_json(data=outcome)


@quarantine_app.command("discard")
def quarantine_discard(
    item_id: Annotated[str, typer.Argument(help="Quarantine id.")],
    reason: Annotated[str, typer.Option("--reason", help="Why it is given up (audited).")],
) -> None:
    """Give up on a quarantined payload; it is kept, with the reason, but no longer listed."""
    from careops.governance.scoping import EVERYWHERE
    from careops.integrations.inbound.replay import discard

    discard(_ready_database(get_settings()), item_id, reason, actor=cli_actor(), scope=EVERYWHERE)
    err.print(f"[green]discarded[/green] {item_id}")


@app.command()
def worker(mllp_port: MllpPortOption = None, smtp_port: SmtpPortOption = None) -> None:
    """Run only the dispatcher and durable workflows (scale-out: start several on PostgreSQL)."""
    from careops.observability.logs import configure_logging
    from careops.orchestration.worker import run_worker

    settings = _settings(mllp_port=mllp_port, smtp_port=smtp_port)
    settings.check_production(processes=2)
    _ready_database(settings).dispose()
    configure_logging()
    err.print(f"careops worker {settings.executor_id!r} running; Ctrl-C stops it")
    if settings.mllp_port is not None:
        err.print(f"HL7 MLLP listening on {settings.mllp_host}:{settings.mllp_port}")
    if settings.smtp_port is not None:
        err.print(f"SMTP for referral emails listening on {settings.smtp_host}:{settings.smtp_port}")
    try:
        asyncio.run(run_worker(settings, listeners=_inbound_listeners(settings)))
    except KeyboardInterrupt:
        err.print("worker stopped")


@app.command()
def demo(
    port: Annotated[int, typer.Option(help="Port of the demo server.")] = 8000,
    rate: Annotated[float, typer.Option(help="Referrals per second from the simulator.")] = 10.0,
    duration: Annotated[float, typer.Option(help="Stop after this many seconds (0: until Ctrl-C).")] = 0.0,
    directory: Annotated[Path, typer.Option(help="Where the demo database lives (recreated).")] = Path(
        "careops-demo"
    ),
) -> None:
    """Create a fresh SQLite database, seed it, serve it and send realistic traffic with a live panel."""
    from careops.demo.live import run_demo

    run_demo(directory=directory, port=port, rate=rate, duration=duration, console=err)


def run() -> None:
    """Entry point that turns CareopsError into one red line (``--debug`` shows the traceback)."""
    try:
        app()
    except CareopsError as exc:
        if _debug:
            raise
        err.print(f"[red]error:[/red] {exc.detail}")
        sys.exit(1)
