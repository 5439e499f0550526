"""``careops deliveries``: what went to each outbound connector, what waits or failed and why,
replay of dead letters, purge of old delivered rows, each connector's health."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from careops.cli.common import cli_actor, err, out, parse_duration, ready_database
from careops.settings import get_settings

deliveries_app = typer.Typer(
    help="Deliveries to outbound connectors: list, show, replay dead letters, purge, health.",
    no_args_is_help=True,
)


@deliveries_app.command("list")
def list_command(
    status: Annotated[str | None, typer.Option(help="pending, delivered or dead")] = None,
    connector: Annotated[str | None, typer.Option(help="Only this connector.")] = None,
    event_type: Annotated[str | None, typer.Option("--event-type", help="Only this event type.")] = None,
    older_than: Annotated[
        str | None, typer.Option("--older-than", help="Only older ones, e.g. 1h, 2d.")
    ] = None,
) -> None:
    """Deliveries, newest first (200 at most)."""
    from careops.orchestration.deliveries import list_deliveries

    age = parse_duration(older_than) if older_than else None
    rows = list_deliveries(ready_database(get_settings()), status=status, connector=connector,
                           event_type=event_type, older_than=age)  # fmt: skip
    table = Table("id", "connector", "event", "status", "attempts", "last error")
    for d in rows:
        table.add_row(
            d["id"], d["connector"], d["event_type"], d["status"], str(d["attempts"]), d["last_error"] or ""
        )
    out.print(table)


@deliveries_app.command("show")
def show_command(delivery_id: str) -> None:
    """One delivery as JSON."""
    from careops.orchestration.deliveries import get_delivery

    print(json.dumps(get_delivery(ready_database(get_settings()), delivery_id), indent=2))


@deliveries_app.command("replay")
def replay_command(
    delivery_ids: Annotated[list[str] | None, typer.Argument(help="Dead letters to send again.")] = None,
    connector: Annotated[str | None, typer.Option(help="Every dead letter of this connector.")] = None,
    older_than: Annotated[str | None, typer.Option("--older-than", help="Only older ones, e.g. 1h.")] = None,
) -> None:
    """Send dead letters again (attempts start over; ``delivery.replayed``): by id, or a selection."""
    from careops.orchestration.deliveries import dead_letters, replay

    db = ready_database(get_settings())
    age = parse_duration(older_than) if older_than else None
    chosen = dead_letters(db, connector=connector, older_than=age, ids=delivery_ids or None)
    err.print(f"{replay(db, chosen, actor=cli_actor()) if chosen else 0} dead letters replayed")


@deliveries_app.command("purge")
def purge_command(
    older_than: Annotated[
        str, typer.Option("--older-than", help="Delivered longer ago than this, e.g. 30d.")
    ],
) -> None:
    """Delete delivered rows older than the age given (their events stay in the audit log)."""
    from careops.orchestration.deliveries import purge

    err.print(f"{purge(ready_database(get_settings()), parse_duration(older_than))} delivered rows purged")


@deliveries_app.command("health")
def health_command() -> None:
    """Each subscribed connector: breaker, deliveries and success rate in the last hour, p95
    latency, backlog and its oldest, dead letters."""
    from careops.integrations.outbound.subscriptions import load_file
    from careops.orchestration.deliveries import health

    settings = get_settings()
    names = [s.name for s in load_file(settings.connectors_file)]
    print(json.dumps(health(ready_database(settings), names), indent=2, default=str))
