"""The careops command line: serve, worker, migrate, seed, demo, intake and quarantine here; tokens,
users and roles in ``identity``; keys, connectors and the audit log in ``security``."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import shutil
import sys
import tempfile
from contextlib import AbstractContextManager, nullcontext
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from careops.cli.ai import ai_app
from careops.cli.approvals import approvals_app
from careops.cli.common import (
    MllpPortOption,
    SmtpPortOption,
    cli_actor,
    cli_operator,
    err,
    fail,
    out,
    progress_bars,
    ready_database,
    settings_with,
)
from careops.cli.deliveries import deliveries_app
from careops.cli.identity import role_app, token_app, user_app
from careops.cli.kpis import events_app, kpi_app
from careops.cli.reference import reference_app
from careops.cli.security import audit_app, connector_app, keys_app
from careops.cli.workflows import workflows_app
from careops.db import Database
from careops.errors import CareopsError
from careops.settings import Settings, get_settings

if TYPE_CHECKING:
    from careops.integrations.inbound.channels import Inbound
    from careops.orchestration.worker import Listener, Listening

app = typer.Typer(
    help="careops: operations control plane for healthcare service organisations.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
intake_app = typer.Typer(help="Import referrals from files (saved emails).", no_args_is_help=True)
app.add_typer(token_app, name="token")
app.add_typer(approvals_app, name="approvals")
app.add_typer(deliveries_app, name="deliveries")
app.add_typer(user_app, name="user")
app.add_typer(role_app, name="role")
app.add_typer(keys_app, name="keys")
app.add_typer(connector_app, name="connector")
app.add_typer(reference_app, name="reference")
app.add_typer(audit_app, name="audit")
app.add_typer(kpi_app, name="kpi")
app.add_typer(events_app, name="events")
app.add_typer(intake_app, name="intake")
app.add_typer(workflows_app, name="workflows")
app.add_typer(ai_app, name="ai")
quarantine_app = typer.Typer(
    help="Inspect, replay and discard rejected payloads kept in quarantine.", no_args_is_help=True
)
app.add_typer(quarantine_app, name="quarantine")
_debug = False


@app.callback()
def main(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False) -> None:
    global _debug
    _debug = debug


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
    with progress_bars() as report:
        changed = reencrypt(db, keys, report)
    if changed:
        err.print(f"encrypted {changed} value(s) written before field encryption")
    db.dispose()


@app.command()
def seed(
    demo: Annotated[bool, typer.Option("--demo", help="Seed the demo organisation.")] = False,
    volume: Annotated[
        int,
        typer.Option(
            "--volume",
            min=0,
            help="Also add this many cases of a year's work to the demo organisation (with their "
            "patients, intake items and about ten events each; sealed and counted into the KPIs), "
            "for measuring at scale.",
        ),
    ] = 0,
) -> None:
    """Load reference data. `--demo` adds 3 locations, services, payers, referrers, staff, stock
    and home-care patients with service plans."""
    from careops.demo.home_care import seed_home_care
    from careops.demo.seed import seed_demo

    if not demo and not volume:
        fail("nothing to seed: pass --demo (and --volume CASES for volume data)")
    settings = get_settings()
    db = ready_database(settings)
    created = seed_demo(db)
    if created and not volume:  # at volume, the year's cases are all there is to measure
        seed_home_care(db, settings)
    if volume:
        _seed_volume(db, settings, volume)
    err.print(
        "demo organisation created" if created else "demo organisation already present; nothing changed"
    )


def _seed_volume(db: Database, settings: Settings, cases: int) -> None:
    from careops.demo.volume import seed_volume
    from careops.governance.audit import seal
    from careops.observability.rollup import roll_up

    with progress_bars() as report:
        done = 0

        def written(chunk: int) -> None:
            nonlocal done
            done += chunk
            report("cases written", done, cases)

        events = seed_volume(db, cases, written)
        sealed = counted = 0
        while batch := seal(db, settings.secret_key):
            sealed += batch
            report("events sealed into the audit chain", sealed, events)
        while batch := roll_up(db):
            counted += batch
            report("events counted into the KPIs", counted, events)
    err.print(f"{cases:,} cases and {events:,} events added, sealed and counted")


def _announce_listeners(settings: Settings) -> None:
    """Say where the listeners listen, having checked what they need (MLLP's TLS files) before
    any process starts them."""
    if settings.mllp_port is not None:
        from careops.integrations.inbound.mllp import tls_context

        tls = tls_context(settings.mllp_tls_cert, settings.mllp_tls_key, settings.mllp_tls_client_ca)
        kind = "HL7 MLLP over TLS" if tls is not None else "HL7 MLLP"
        err.print(f"{kind} listening on {settings.mllp_host}:{settings.mllp_port}")
    if settings.smtp_port is not None:
        err.print(f"SMTP for referral emails listening on {settings.smtp_host}:{settings.smtp_port}")


def _inbound_listeners(settings: Settings) -> list[Listener]:
    """The network listeners a worker runs: MLLP and SMTP when their ports are set."""
    if settings.mllp_port is None and settings.smtp_port is None:
        return []
    from careops.integrations.inbound.channels import Inbound
    from careops.orchestration.intake import CatalogueCache

    async def listen(db: Database) -> list[Listening]:
        return await Inbound.build(db, settings, CatalogueCache(settings.reference_cache_seconds)).listen(
            settings
        )

    return [listen]


def _worker_process(parent_pid: int) -> None:
    from careops.automation.runner import automation_jobs
    from careops.observability.logs import configure_logging
    from careops.orchestration.worker import run_worker

    configure_logging()

    # The HTTP workers of `careops serve` run the MLLP listener; the embedded worker does not.
    settings = get_settings()
    asyncio.run(
        run_worker(settings, should_stop=lambda: os.getppid() != parent_pid, jobs=automation_jobs(settings))
    )


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

    settings = settings_with(workers=workers, mllp_port=mllp_port, smtp_port=smtp_port)
    settings.check_production(processes=settings.workers + (1 if embedded_worker else 0))
    if settings.is_sqlite and settings.workers > 1:
        err.print(
            "[yellow]warning:[/yellow] several processes share one SQLite file; use PostgreSQL in production"
        )
    ready_database(settings).dispose()
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
    err.print(f"careops serving on http://{host}:{port} ({settings.workers} HTTP worker(s))")
    _announce_listeners(settings)
    with _share_mllp(settings):
        worker = start_embedded_worker() if embedded_worker else None
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
                # the HTTP workers take turns on their shared socket by load (careops/api/serving.py)
                loop="careops.api.serving:ServingLoop",
            )
        finally:
            if worker is not None:
                worker.terminate()
                worker.join(10)
            if metrics_dir is not None:
                shutil.rmtree(metrics_dir, ignore_errors=True)


def _share_mllp(settings: Settings) -> AbstractContextManager[None]:
    """Several HTTP workers with MLLP: one listening socket they share and take turns on by load."""
    if settings.mllp_port is None or settings.workers < 2:
        return nullcontext()
    from careops.integrations.inbound.mllp import shared_listener

    return shared_listener(settings.mllp_host, settings.mllp_port)


def _inbound(settings: Settings) -> Inbound:
    from careops.integrations.inbound.channels import Inbound
    from careops.orchestration.intake import CatalogueCache

    return Inbound.build(ready_database(settings), settings, CatalogueCache(0))


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
    for item in list_quarantined(ready_database(get_settings()), limit, EVERYWHERE):
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

    item = get_quarantined(ready_database(get_settings()), item_id, cli_operator())
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

    discard(ready_database(get_settings()), item_id, reason, actor=cli_actor(), scope=EVERYWHERE)
    err.print(f"[green]discarded[/green] {item_id}")


@app.command()
def worker(mllp_port: MllpPortOption = None, smtp_port: SmtpPortOption = None) -> None:
    """Run only the dispatcher and durable workflows (scale-out: start several on PostgreSQL)."""
    from careops.automation.runner import automation_jobs
    from careops.observability.logs import configure_logging
    from careops.orchestration.worker import run_worker

    settings = settings_with(mllp_port=mllp_port, smtp_port=smtp_port)
    settings.check_production(processes=2)
    ready_database(settings).dispose()
    configure_logging()
    err.print(f"careops worker {settings.executor_id!r} running; Ctrl-C stops it")
    _announce_listeners(settings)
    try:
        jobs = automation_jobs(settings)
        asyncio.run(run_worker(settings, listeners=_inbound_listeners(settings), jobs=jobs))
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
