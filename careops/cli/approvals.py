"""``careops approvals``: validate, activate and list policies; list requests, trace one, export
them for auditors; replay a period through a proposed policy (what-if); metrics; record absences
and delegations; run the escalation sweep once."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from careops.cli.common import cli_actor, cli_operator, err, fail, out, ready_database
from careops.db import Database
from careops.governance.principal import Principal
from careops.settings import get_settings

approvals_app = typer.Typer(
    help="Approval policies and requests: validate, activate, simulate, trace, export, metrics.",
    no_args_is_help=True,
)
DirectoryOption = Annotated[
    Path | None,
    typer.Option(
        "--directory", "-d", help="The policies' directory (default: the shipped workflows/policies/)."
    ),
]
Day = Annotated[str, typer.Option(help="A day, YYYY-MM-DD (UTC).")]


def _day(text: str, name: str) -> dt.datetime:
    try:
        return dt.datetime.combine(dt.date.fromisoformat(text), dt.time(), dt.UTC)
    except ValueError:
        fail(f"{name} is a day: YYYY-MM-DD")


def _moment(text: str, name: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        fail(f"{name} is a day or a time: 2026-12-24 or 2026-12-24T08:00")
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _files(directory: Path | None) -> list[Path]:
    from careops.approvals.store import shipped_directory

    found = directory or shipped_directory()
    if not found.is_dir():
        fail(f"no directory {found}")
    return sorted(found.glob("*.yaml"))


def _show(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


@approvals_app.command("validate")
def validate_command(directory: DirectoryOption = None) -> None:
    """Load every policy and check its decision table: gaps (inputs no rule covers), rules that
    never apply under first-match, and (against the database) roles that do not exist."""
    from careops.approvals.policies import load_file
    from careops.approvals.store import problems
    from careops.approvals.tables import check

    failed = 0
    for path in _files(directory):
        try:
            policy = load_file(path)
        except ValueError as exc:
            err.print(f"[red]✗[/red] {exc}")
            failed += 1
            continue
        found = problems(None, policy)
        for problem in found:
            err.print(f"[red]✗[/red] {problem}")
        failed += bool(found)
        if not found:
            report = check(policy)
            overlaps = f", {len(report.overlaps)} overlapping (first match wins)" if report.overlaps else ""
            err.print(f"[green]✓[/green] {path.name}: {report.cells} input combinations covered{overlaps}")
    if failed:
        raise typer.Exit(1)


@approvals_app.command("activate")
def activate_command(
    why: Annotated[str, typer.Option("--why", help="Why (audited with the activation).")],
    directory: DirectoryOption = None,
) -> None:
    """Validate every policy in the directory, then make each the active version of its name
    (requests already made keep the version that routed them)."""
    from careops.approvals.store import activate_directory, shipped_directory

    db = ready_database(get_settings())
    done = activate_directory(db, directory or shipped_directory(), actor=cli_actor(), reason=why)
    for made in done:
        state = "activated" if made.changed else "already active"
        err.print(f"{made.name} {made.version} ({made.content_hash[:12]}): {state}")


@approvals_app.command("policies")
def policies_command() -> None:
    """The active policies: version, owner, who activated them and why."""
    from careops.approvals.service import policies

    table = Table("policy", "for", "version", "rules", "activated by", "why")
    for p in policies(ready_database(get_settings())):
        rules = ", ".join(r["name"] for r in p["rules"])
        version = f"{p['version']} {p['content_hash'][:12]}"
        table.add_row(p["name"], p["applies_to"], version, rules, p["activated_by"] or "", p["reason"] or "")
    out.print(table)


@approvals_app.command("list")
def list_command(
    status: Annotated[str | None, typer.Option(help="pending, approved, rejected, …")] = None,
) -> None:
    """Requests, newest first (200 at most)."""
    from careops.approvals.service import list_requests

    table = Table("id", "policy", "record", "status", "requested")
    for r in list_requests(ready_database(get_settings()), cli_operator(), status):
        table.add_row(
            r["id"],
            r["policy"],
            f"{r['subject_type']} {r['subject_id']}",
            r["status"],
            r["requested_at"][:16],
        )
    out.print(table)


@approvals_app.command("trace")
def trace_command(approval_id: str) -> None:
    """The whole story of a request as JSON: the policy version and rules that chose its chain,
    then every event (requested, notified, viewed, decided, escalated, fallback, …)."""
    from careops.approvals.service import trace

    _show(trace(ready_database(get_settings()), approval_id, cli_operator()))


@approvals_app.command("export")
def export_command(
    from_: Annotated[str, typer.Option("--from", help="First day, YYYY-MM-DD.")],
    to: Annotated[str, typer.Option("--to", help="Day after the last, YYYY-MM-DD.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="A file (default: stdout).")] = None,
) -> None:
    """The requests of a period with their decisions, one JSON object per line, for auditors."""
    from careops.approvals.service import export

    since, until = _day(from_, "--from"), _day(to, "--to")
    target = output.open("w", encoding="utf-8") if output else sys.stdout
    count = 0
    try:
        for row in export(ready_database(get_settings()), since, until):
            target.write(json.dumps(row, default=str) + "\n")
            count += 1
    finally:
        if output:
            target.close()
    err.print(f"{count} approval requests exported")


@approvals_app.command("simulate")
def simulate_command(
    policy: Annotated[Path, typer.Option("--policy", help="The proposed policy's YAML file.")],
    from_: Annotated[str, typer.Option("--from", help="First day of the period, YYYY-MM-DD.")],
    to: Annotated[str, typer.Option("--to", help="Last day of the period, YYYY-MM-DD.")],
    as_json: Annotated[bool, typer.Option("--json", help="The report as JSON.")] = False,
) -> None:
    """Replay the recorded requests of a period through a proposed policy, beside the versions
    that routed them: changed chains, approver load per role, expected cycle time. Changes nothing."""
    from careops.approvals.policies import load_file
    from careops.approvals.simulate import simulate
    from careops.approvals.store import problems
    from careops.cli.common import progress_bars

    try:
        proposed = load_file(policy)
    except (OSError, ValueError) as exc:
        fail(str(exc))
    for problem in problems(None, proposed):
        err.print(f"[yellow]![/yellow] {problem}")
    since, until = _day(from_, "--from"), _day(to, "--to") + dt.timedelta(days=1)
    with progress_bars() as report:
        result = simulate(ready_database(get_settings()), proposed, since, until,
                          lambda done, total: report("replaying requests", done, total))  # fmt: skip
    if as_json:
        _show(result)
        return
    out.print(
        f"{result['requests']} requests of {result['policy']}: {result['changed_chain']} would change "
        f"chain, {result['uncovered']} no rule would cover"
    )
    table = Table("approvers", "steps now", "steps proposed")
    for who, n in result["load"].items():
        table.add_row(who, str(n["current"]), str(n["proposed"]))
    out.print(table)
    for name, times in result["expected_cycle_seconds"].items():
        mean = times["mean"]
        out.print(
            f"expected cycle time, {name}: " + (f"{mean / 3600:.1f} h (mean)" if mean is not None else "—")
        )


@approvals_app.command("metrics")
def metrics_command(days: Annotated[int, typer.Option(help="The last N days.")] = 90) -> None:
    """Cycle times (p50, p90) per policy, step and location; pending; escalation, fallback and
    returned-for-information rates, as JSON."""
    from careops.approvals.metrics import summary
    from careops.governance.scoping import EVERYWHERE

    _show(summary(ready_database(get_settings()), EVERYWHERE, days))


def _as_user(username: str) -> tuple[Database, Principal]:
    """The database, and the command line's principal acting as ``username`` (a person)."""
    from careops.governance.users import find_user

    db = ready_database(get_settings())
    with db.sessions() as session:
        user_id = find_user(session, username).id
    return db, dataclasses.replace(cli_operator(), user_id=user_id)


@approvals_app.command("absence")
def absence_command(
    user: Annotated[str, typer.Option("--user", help="Who is away (username).")],
    starts: Annotated[str, typer.Option("--from", help="From, e.g. 2026-12-24 or 2026-12-24T08:00 (UTC).")],
    ends: Annotated[str, typer.Option("--to", help="Until (exclusive).")],
) -> None:
    """Record an absence: fallback approvers cover the user's steps meanwhile."""
    from careops.approvals.delegation import record_absence

    db, principal = _as_user(user)
    _show(record_absence(db, principal, _moment(starts, "--from"), _moment(ends, "--to")))


@approvals_app.command("delegate")
def delegate_command(
    user: Annotated[str, typer.Option("--user", help="Who delegates (username).")],
    to: Annotated[str, typer.Option("--to", help="The delegate (username).")],
    starts: Annotated[str, typer.Option("--from", help="From (UTC).")],
    ends: Annotated[str, typer.Option("--until", help="Until (exclusive, UTC).")],
    why: Annotated[str | None, typer.Option("--why", help="Why (kept with it).")] = None,
) -> None:
    """Let ``--to`` decide in ``--user``'s place for a period (same permission and locations)."""
    from careops.approvals.delegation import delegate

    db, principal = _as_user(user)
    _show(delegate(db, principal, to, _moment(starts, "--from"), _moment(ends, "--until"), why))


@approvals_app.command("sweep")
def sweep_command() -> None:
    """Escalate overdue steps once now (the worker does this every few seconds)."""
    from careops.approvals.escalation import sweep

    db = ready_database(get_settings())
    total = 0
    while made := sweep(db):
        total += made
    err.print(f"{total} steps escalated")
