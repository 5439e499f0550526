"""Console pages at volume: p50 / p95 of every console page and of the dashboard, next to the bare
SQL behind each page, in the same run.

    .venv/bin/python -m bench.console [--cases 1000000] [--database URL] [--requests 30] [--rounds 3]

Without ``--database``, makes a fresh PostgreSQL database and fills it with ``careops seed --demo
--volume CASES`` (about ten events a case, sealed and counted into the KPIs; a million cases take
about half an hour); with it, uses a database seeded so before. Serves careops in this process
(uvicorn on loopback, one worker), logs a console user in over HTTP and, in each round, asks for
every page ``--requests`` times in turn, timing each answer end to end.

The reference is the page's own SQL: every statement the page sent to the database, captured
while it was answered once, is replayed with psycopg on one warm connection (plain SQL, no ORM, no
template, no HTTP; writes rolled back) and timed the same way. The table shows, per page, the
median over rounds of each round's p50 and p95, the reference's, and the ratio of the p95s.
Issue 25's targets: every page ≤ 150 ms p95, the dashboard ≤ 300 ms p95.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from statistics import median, quantiles
from typing import Any

import httpx
import psycopg
import uvicorn
from rich.table import Table
from sqlalchemy import event, select
from sqlalchemy.engine import Engine

from bench.intake import BIN, console, drop_database, free_port, fresh_database
from careops.api.app import create_app
from careops.db import Database
from careops.domain.models import ExceptionItem, IntakeItem, ServiceCase
from careops.errors import Conflict
from careops.governance.keys import load_field_keys
from careops.governance.permissions import SHIPPED_ROLES
from careops.governance.users import create_user
from careops.settings import Settings

PASSWORD = "timing-the-console-pages-1"
TARGET_MS = {"dashboard": 300.0}
PAGE_TARGET_MS = 150.0


@dataclass
class Captured:
    """Statements sent to the database while ``on``."""

    on: bool = False
    statements: list[tuple[str, Any, bool]] = field(default_factory=list)

    def __call__(
        self, _conn: Any, _cursor: Any, statement: str, parameters: Any, _ctx: Any, many: bool
    ) -> None:
        if self.on:
            self.statements.append((statement, parameters, many))


@dataclass(frozen=True)
class Page:
    name: str
    method: str
    path: str
    form: dict[str, str] | None = None


def _seed(cases: int) -> str:
    url = fresh_database("postgres", BIN)
    env = {**os.environ, "CAREOPS_DATABASE_URL": url}
    subprocess.run([str(BIN / "careops"), "migrate"], env=env, check=True, capture_output=True)
    console.print(f"seeding {cases:,} cases into {url.rsplit('/', 1)[1]} …")
    subprocess.run([str(BIN / "careops"), "seed", "--demo", "--volume", str(cases)], env=env, check=True)
    return url


def _pages(db: Database) -> list[Page]:
    """Every console page a user reads, on records picked from the middle of the data."""
    with db.sessions() as session:
        case = session.scalars(select(ServiceCase.id).order_by(ServiceCase.id).offset(1000).limit(1)).one()
        exception = session.scalars(
            select(ExceptionItem.id).where(ExceptionItem.status == "open").order_by(ExceptionItem.id).limit(1)
        ).one()
        quarantined = session.scalars(
            select(IntakeItem.id).where(IntakeItem.status == "quarantined").order_by(IntakeItem.id).limit(1)
        ).one()
    return [
        Page("my work", "GET", "/console/work"),
        Page("cases", "GET", "/console/cases"),
        Page("cases, by status", "GET", "/console/cases?status=scheduled"),
        Page("case", "GET", f"/console/cases/{case}"),
        Page("patients: name", "POST", "/console/patients", {"family_name": "Patel12"}),
        Page("patients: birth date", "POST", "/console/patients", {"birth_date": "1970-01-01"}),
        Page("patients: MRN", "POST", "/console/patients", {"mrn": "VOL-00004242"}),
        Page("exceptions", "GET", "/console/exceptions"),
        Page("exception", "GET", f"/console/exceptions/{exception}"),
        Page("quarantine", "GET", "/console/quarantine"),
        Page("quarantined item", "GET", f"/console/quarantine/{quarantined}"),
        Page("dashboard", "GET", "/console/dashboard?days=30"),
        Page("dashboard, 90 days", "GET", "/console/dashboard?days=90"),
        Page("process flow", "GET", "/console/flow?days=30"),
        Page("tokens", "GET", "/console/admin/tokens"),
        Page("users", "GET", "/console/admin/users"),
        Page("audit", "GET", "/console/admin/audit"),
    ]


def _serve(settings: Settings, db: Database, port: int) -> uvicorn.Server:
    server = uvicorn.Server(uvicorn.Config(create_app(settings, db), port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    return server


def _login(client: httpx.Client) -> str:
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/console/login").text)
    assert token is not None
    form = {"username": "bench", "password": PASSWORD, "csrf_token": token.group(1)}
    answer = client.post("/console/login", data=form)
    assert answer.status_code == 303, answer.status_code
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/console/work").text)
    assert csrf is not None
    return csrf.group(1)


def _ask(client: httpx.Client, page: Page, csrf: str) -> float:
    started = time.perf_counter()
    if page.method == "POST":
        answer = client.post(page.path, data={**(page.form or {}), "csrf_token": csrf})
    else:
        answer = client.get(page.path)
    elapsed = time.perf_counter() - started
    assert answer.status_code == 200, (page.name, answer.status_code, answer.text[:300])
    return elapsed


def _replay(connection: psycopg.Connection[Any], statements: list[tuple[str, Any, bool]]) -> float:
    started = time.perf_counter()
    with connection.cursor() as cursor:
        for statement, parameters, many in statements:
            if many:
                cursor.executemany(statement, parameters)
            else:
                cursor.execute(statement, parameters or None)
                if cursor.description is not None:
                    cursor.fetchall()
    elapsed = time.perf_counter() - started
    connection.rollback()
    return elapsed


def _p(values: list[float], q: int) -> float:
    return quantiles(values, n=100, method="inclusive")[q - 1] * 1000


def run(url: str, requests: int, rounds: int, only: str = "") -> list[tuple[str, ...]]:
    settings = Settings(database_url=url, token_cache_seconds=5, login_attempts_per_minute=1000)
    db = Database(url)
    load_field_keys(db, settings)
    with contextlib.suppress(Conflict):  # made by an earlier run on this database
        create_user(db, settings, "bench", PASSWORD, sorted(SHIPPED_ROLES), actor="bench")
    pages = [page for page in _pages(db) if only in page.name]
    captured = Captured()
    event.listen(Engine, "before_cursor_execute", captured)
    port = free_port()
    server = _serve(settings, db, port)
    timings: dict[str, list[tuple[float, float]]] = {p.name: [] for p in pages}
    references: dict[str, list[tuple[float, float]]] = {p.name: [] for p in pages}
    statements: dict[str, list[tuple[str, Any, bool]]] = {}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            csrf = _login(client)
            for page in pages:  # warm, and capture what each page asks the database
                _ask(client, page, csrf)
                captured.statements, captured.on = [], True
                _ask(client, page, csrf)
                captured.on = False
                statements[page.name] = captured.statements
            plain = psycopg.connect(url.replace("postgresql+psycopg", "postgresql"))
            for round_ in range(rounds):
                console.print(f"round {round_ + 1} of {rounds}")
                for page in pages:
                    asked = [_ask(client, page, csrf) for _ in range(requests)]
                    replayed = [_replay(plain, statements[page.name]) for _ in range(requests)]
                    timings[page.name].append((_p(asked, 50), _p(asked, 95)))
                    references[page.name].append((_p(replayed, 50), _p(replayed, 95)))
            plain.close()
    finally:
        server.should_exit = True
        event.remove(Engine, "before_cursor_execute", captured)
    rows: list[tuple[str, ...]] = []
    for page in pages:
        p50 = median(t[0] for t in timings[page.name])
        p95 = median(t[1] for t in timings[page.name])
        r50 = median(t[0] for t in references[page.name])
        r95 = median(t[1] for t in references[page.name])
        target = TARGET_MS.get(page.name.split(",")[0], PAGE_TARGET_MS)
        rows.append(
            (
                page.name,
                f"{p50:.1f}",
                f"{p95:.1f}",
                str(len(statements[page.name])),
                f"{r50:.1f}",
                f"{r95:.1f}",
                f"{p95 / r95:.1f}x" if r95 > 0 else "—",
                f"≤ {target:.0f}: {'met' if p95 <= target else 'MISSED'}",
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=1_000_000)
    parser.add_argument("--database", help="a PostgreSQL URL seeded with `careops seed --demo --volume`")
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the database this run made")
    parser.add_argument("--only", default="", help="only the pages whose names hold this text")
    args = parser.parse_args()
    url = args.database or _seed(args.cases)
    try:
        rows = run(url, args.requests, args.rounds, args.only)
    finally:
        if not args.database and not args.keep:
            drop_database(url)
    table = Table(title=f"console pages, {args.rounds} rounds of {args.requests} requests (ms)")
    for column in ("page", "p50", "p95", "statements", "SQL p50", "SQL p95", "p95 / SQL", "target p95"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    console.print(table)


if __name__ == "__main__":
    main()
