"""careops keys | connector | audit: encryption keys, signed webhooks, the audit log."""

from __future__ import annotations

import datetime as dt
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from careops.cli.common import (
    cli_actor,
    err,
    fail,
    out,
    parse_duration,
    progress_bars,
    ready_database,
)
from careops.settings import get_settings

keys_app = typer.Typer(
    help="Field encryption keys: generate a master key, rotate data keys.", no_args_is_help=True
)
connector_app = typer.Typer(help="Connectors and their webhook signing secrets.", no_args_is_help=True)
audit_app = typer.Typer(help="Seal, verify and export the tamper-evident audit log.", no_args_is_help=True)


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
    db = ready_database(settings)
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
    db = ready_database(settings, field_keys=False)
    count = rewrap(db, old_master, settings, actor=cli_actor())
    err.print(f"[green]{count} key(s) re-wrapped under the current master key[/green]")


@keys_app.command("rotate")
def keys_rotate() -> None:
    """A new data key; every encrypted value re-encrypted under it in batches; old keys retired."""
    from careops.governance.keys import rotate

    settings = get_settings()
    db = ready_database(settings)
    with progress_bars() as report:
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

    db = ready_database(get_settings())
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

    secret = rotate_secret(ready_database(get_settings()), name, parse_duration(overlap), actor=cli_actor())
    err.print(f"connector {name!r}: new secret; the old one ends in {overlap}")
    print(secret)


@connector_app.command("list")
def connector_list() -> None:
    """Connectors with their direction, URL and number of live secrets (never the secrets)."""
    from careops.governance.signing import list_connectors

    for connector, live in list_connectors(ready_database(get_settings())):
        sees = f"sees as {connector.sees_as}" if connector.sees_as else ""
        out.print(
            f"{connector.name:24} {connector.direction:8} live secrets: {live}  {connector.url or ''} {sees}"
        )


@connector_app.command("ping")
def connector_ping(name: Annotated[str, typer.Argument(help="Outbound connector name.")]) -> None:
    """POST a signed {"type": "ping"} to an outbound connector; exit 1 unless it answers 2xx."""
    from careops.integrations.outbound.webhook import deliver

    status = deliver(ready_database(get_settings()), name, {"type": "ping", "connector": name})
    err.print(f"[green]{name} answered {status}[/green]")


@connector_app.command("send-case")
def connector_send_case(
    name: Annotated[str, typer.Argument(help="Outbound connector name.")],
    case_id: Annotated[str, typer.Argument(help="Case id.")],
) -> None:
    """POST a case to an outbound connector, signed and masked as for the role it sees as."""
    from careops.integrations.outbound.webhook import send_case

    status = send_case(ready_database(get_settings()), name, case_id)
    err.print(f"[green]{name} answered {status}[/green]")


@audit_app.command("seal")
def audit_seal() -> None:
    """Seal every committed event into the chain now and sign its head (the worker does this too)."""
    from careops.governance.audit import seal_all

    settings = get_settings()
    err.print(f"sealed {seal_all(ready_database(settings, field_keys=False), settings.secret_key)} entries")


@audit_app.command("checkpoint")
def audit_checkpoint() -> None:
    """Seal, sign and print the head as JSON: keep it outside this database (e.g. in a ticket)."""
    import json

    from careops.governance.audit import checkpoint_head

    settings = get_settings()
    db = ready_database(settings, field_keys=False)
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
    db = ready_database(settings, field_keys=False)
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
    db = ready_database(get_settings(), field_keys=False)
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
