"""`careops demo`: a fresh SQLite database, the server, the worker and simulated traffic on a live panel."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import threading
import time
from pathlib import Path

import uvicorn
from rich.console import Console
from rich.live import Live
from rich.table import Table
from sqlalchemy import func, select

from careops.api.app import create_app
from careops.approvals.store import activate_directory as activate_policies
from careops.approvals.store import shipped_directory as policies_directory
from careops.automation.runner import automation_jobs
from careops.automation.store import activate_directory, shipped_directory
from careops.db import Database
from careops.demo.downstream import Downstream
from careops.demo.downstream import run as run_downstream
from careops.demo.home_care import seed_home_care
from careops.demo.seed import seed_demo
from careops.demo.traffic import Mix, TrafficStats, simulate
from careops.domain.models import ExceptionItem, IntakeItem, ServiceCase
from careops.governance.keys import load_field_keys
from careops.governance.permissions import ADMIN
from careops.governance.tokens import create_token
from careops.governance.users import create_user
from careops.integrations.inbound.hl7_channel import Hl7Channel
from careops.migrate import upgrade
from careops.orchestration.intake import CatalogueCache
from careops.orchestration.worker import run_worker
from careops.settings import Settings

DEMO_MIX = Mix(incomplete=0.07, duplicate=0.03, malformed=0.03)
# The case statuses the panel counts after intake (the downstream simulation moves cases there).
DOWNSTREAM = ("scheduled", "completed", "billing_ready")


def _counts(db: Database) -> dict[str, int]:
    with db.sessions() as session:
        return {
            "received": session.scalar(select(func.count()).select_from(IntakeItem)) or 0,
            "cases": session.scalar(select(func.count()).select_from(ServiceCase)) or 0,
            "exceptions": session.scalar(
                select(func.count()).select_from(ExceptionItem).where(ExceptionItem.status == "open")
            )
            or 0,
            "quarantined": session.scalar(
                select(func.count()).select_from(IntakeItem).where(IntakeItem.status == "quarantined")
            )
            or 0,
            **{
                status: session.scalar(
                    select(func.count()).select_from(ServiceCase).where(ServiceCase.status == status)
                )
                or 0
                for status in DOWNSTREAM
            },
        }


def _panel(counts: dict[str, int], stats: TrafficStats, url: str) -> Table:
    table = Table(title=f"careops demo — {url}  (Ctrl-C stops)", show_header=True)
    counted = ("received", "cases", "exceptions", "quarantined", *DOWNSTREAM)
    for column in (*(c.replace("_", " ") for c in counted), "posted", "p50 ms", "p95 ms", "errors"):
        table.add_column(column, justify="right")
    table.add_row(
        *(str(counts[k]) for k in counted),
        str(stats.sent),
        f"{stats.percentile(0.5):.1f}",
        f"{stats.percentile(0.95):.1f}",
        str(stats.errors),
    )
    return table


DEMO_USERS = {
    "coordinator": "intake_coordinator",
    "scheduler": "scheduler",
    "finance": "finance",
    "compliance": "compliance_officer",
    "manager": "operations_manager",
    "reviewer": "authorisation_reviewer",
    "engineer": "integration_engineer",
    "supervisor": "field_supervisor",
    "procurement": "procurement",
    "admin": "administrator",
}


def run_demo(*, directory: Path, port: int, rate: float, duration: float, console: Console) -> None:
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    url = f"sqlite:///{(directory / 'careops.db').resolve()}"
    os.environ["CAREOPS_DATABASE_URL"] = url
    settings = Settings(
        database_url=url, triage_timeout_seconds=float(os.environ.get("CAREOPS_TRIAGE_TIMEOUT_SECONDS", 120))
    )
    upgrade(url)
    db = Database(url)
    load_field_keys(db, settings)
    seed_demo(db)
    seed_home_care(db, settings)
    activate_policies(
        db, policies_directory(), actor="demo", reason="the demo routes by the shipped policies"
    )
    activate_directory(db, shipped_directory(), actor="demo", reason="the demo runs the shipped workflows")
    token, _ = create_token(db, "demo", [ADMIN], actor="demo")
    password = secrets.token_urlsafe(12)
    for username, role in DEMO_USERS.items():
        create_user(db, settings, username, password, [role], actor="demo")
    base_url = f"http://127.0.0.1:{port}"
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, db),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            access_log=False,
            log_config=None,
        )
    )
    stop = threading.Event()
    threads = [
        threading.Thread(target=server.run, name="server", daemon=True),
        threading.Thread(
            target=lambda: asyncio.run(run_worker(settings, stop.is_set, jobs=automation_jobs(settings))),
            daemon=True,
        ),
    ]
    for thread in threads:
        thread.start()
    while not server.started:
        time.sleep(0.05)
    console.print(f"[bold]careops demo[/bold] on {base_url}  — API docs: {base_url}/docs")
    console.print(f"demo token (all scopes): [bold]{token}[/bold]")
    console.print(f'try: curl -H "Authorization: Bearer {token}" {base_url}/api/v1/cases')
    console.print(
        f"console: {base_url}/console — log in as {', '.join(DEMO_USERS)} with password "
        f"[bold]{password}[/bold] (each sees what their role allows: queues, dashboards, administration; "
        "what PHI is masked, and who may reveal it, differs by role)"
    )
    stats = TrafficStats()
    deadline = time.monotonic() + duration if duration > 0 else None

    def finished() -> bool:
        return stop.is_set() or (deadline is not None and time.monotonic() >= deadline)

    traffic = threading.Thread(
        target=lambda: asyncio.run(
            simulate(base_url, token, stats, rate_per_second=rate, mix=DEMO_MIX, stop=finished)
        ),
        daemon=True,
    )
    downstream = Downstream(db, Hl7Channel(db, settings, CatalogueCache(5)))
    follow_through = threading.Thread(
        target=lambda: run_downstream(downstream, finished, stop.wait), name="downstream", daemon=True
    )
    traffic.start()
    follow_through.start()
    try:
        with Live(_panel(_counts(db), stats, base_url), console=console, refresh_per_second=2) as live:
            while not finished():
                time.sleep(0.5)
                live.update(_panel(_counts(db), stats, base_url))
    except KeyboardInterrupt:
        console.print("stopping…")
    finally:
        stop.set()
        traffic.join(5)
        follow_through.join(5)
        server.should_exit = True
        for thread in threads:
            thread.join(10)
        db.dispose()
    console.print(f"demo stopped; database kept at {directory / 'careops.db'}")
