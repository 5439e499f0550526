"""``careops kpi``: rebuild the KPI roll-ups from the event log, and print them; ``careops
events export``: the event log for process-mining tools."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from careops.cli.common import cli_actor, err, fail, progress_bars, ready_database
from careops.settings import get_settings

kpi_app = typer.Typer(
    help="KPIs from the business-event log: rebuild the roll-ups, print them.", no_args_is_help=True
)


@kpi_app.command("rebuild")
def kpi_rebuild() -> None:
    """Recompute every KPI from the whole sealed event log (the worker keeps them current)."""
    from careops.governance.audit import seal_all
    from careops.observability.rollup import rebuild

    settings = get_settings()
    db = ready_database(settings, field_keys=False)
    seal_all(db, settings.secret_key)
    with progress_bars() as report:
        counted = rebuild(db, lambda done, total: report("counting events", done, total))
    err.print(f"{counted} events counted into the KPI roll-ups")


@kpi_app.command("show")
def kpi_show(
    days: Annotated[
        int, typer.Option("--days", min=1, max=366, help="The last N days (UTC), today included.")
    ] = 7,
) -> None:
    """Every KPI over the last ``--days`` days, all locations, as the dashboard shows them."""
    from careops.observability.rollup import report

    db = ready_database(get_settings(), field_keys=False)
    today = dt.datetime.now(dt.UTC).date()
    data = report(db, None, today - dt.timedelta(days=days - 1), today)
    table = Table(title=f"KPIs, {data['since']} to {data['until']}")
    for column in ("KPI", "total", "by dimension / duration"):
        table.add_column(column)
    for entry in data["kpis"].values():
        kpi = entry["kpi"]
        if kpi.unit == "seconds":
            detail = ", ".join(
                f"{name} {entry[name]:.0f} s" if entry[name] is not None else f"{name} —"
                for name in ("mean", "p50", "p90")
            )
        else:
            detail = ", ".join(
                f"{dimension or '—'} {count}" for dimension, count in entry["by_dimension"].items()
            )
        table.add_row(kpi.title, str(entry["total"]), detail)
    for rate in data["rates"].values():
        table.add_row(rate["title"], "", "—" if rate["value"] is None else f"{rate['value']:.1%}")
    Console().print(table)


events_app = typer.Typer(help="The business-event log for process-mining tools.", no_args_is_help=True)


@events_app.command("export")
def events_export(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="File to write (CSV, .xes or OCEL 2.0 JSON).")
    ],
    format_: Annotated[
        str, typer.Option("--format", help="csv, xes or ocel (xes and ocel need careops[mining]).")
    ] = "csv",
    from_: Annotated[str | None, typer.Option("--from", help="First day (YYYY-MM-DD, UTC).")] = None,
    to: Annotated[str | None, typer.Option("--to", help="Last day (YYYY-MM-DD, UTC), included.")] = None,
    location: Annotated[
        str | None, typer.Option("--location", help="One location's cases (its slug).")
    ] = None,
) -> None:
    """One trace per case: its business events in time order (types, ids, times, locations,
    actors; never payloads). The export is audited as ``events.exported``."""
    from rich.progress import Progress

    from careops.observability.mining import FORMATS, export

    if format_ not in FORMATS:
        fail(f"--format is one of {', '.join(FORMATS)}")
    try:
        since = dt.datetime.combine(dt.date.fromisoformat(from_), dt.time(), dt.UTC) if from_ else None
        until = (
            dt.datetime.combine(dt.date.fromisoformat(to), dt.time(), dt.UTC) + dt.timedelta(days=1)
            if to
            else None
        )
    except ValueError:
        fail("--from and --to are dates: YYYY-MM-DD")
    db = ready_database(get_settings(), field_keys=False)
    with Progress(console=err, transient=True) as bar:
        task = bar.add_task(f"exporting events ({format_})", total=None)
        try:
            count = export(
                db, format_, output, actor=cli_actor(), since=since, until=until, location=location,
                progress=lambda done: bar.update(task, completed=done),
            )  # fmt: skip
        except RuntimeError as exc:  # XES or OCEL without the mining extra
            fail(str(exc))
    err.print(f"{count} events written to {output}")
