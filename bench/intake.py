"""Intake benchmark: careops vs a bare FastAPI reference, same load, same database, same run.

    .venv/bin/python -m bench.intake [--duration 10] [--backends postgres,sqlite]

Starts each app with 2 HTTP worker processes on loopback, drives it at 10 and 50 connections
with bench/loadgen.py, and prints throughput, p50/p95/p99, errors, RSS per process, the outbox
event -> workflow-start latency and careops as a fraction of the reference. careops runs twice:
as the issue specifies (API + embedded worker) and as the API alone (--no-embedded-worker), so
that the cost of the request path and of the durable follow-up can be told apart.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
from dbos import DBOSClient
from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from careops.db import Database
from careops.domain.models import OutboxMessage
from careops.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
console = Console(width=200)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fresh_database(backend: str, workdir: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{workdir / f'bench-{uuid.uuid4().hex[:6]}.db'}"
    name = f"careops_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


def drop_database(url: str) -> None:
    if url.startswith("postgresql"):
        with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


def wait_healthy(port: int, path: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}{path}", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError("server did not start")


def tree_rss_mb(root_pid: int) -> list[float]:
    """RSS of a process and all its descendants, in MB."""
    listing = subprocess.run(["ps", "-e", "-o", "pid=,ppid=,rss="], capture_output=True, text=True).stdout
    rows = [tuple(int(x) for x in line.split()) for line in listing.splitlines() if line.strip()]
    wanted, found = {root_pid}, []
    changed = True
    while changed:
        changed = False
        for pid, ppid, _ in rows:
            if ppid in wanted and pid not in wanted:
                wanted.add(pid)
                changed = True
    for pid, _, rss in rows:
        if pid in wanted:
            found.append(rss / 1024)
    return found


def load(port: int, token: str, connections: int, duration: float) -> dict[str, Any]:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.loadgen",
            "--url",
            f"http://127.0.0.1:{port}",
            "--token",
            token,
            "--connections",
            str(connections),
            "--duration",
            str(duration),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(result.stdout))


def run_app(
    command: list[str], env: dict[str, str], health: str, token: str, duration: float
) -> tuple[dict[int, dict[str, Any]], float]:
    port = free_port()
    process = subprocess.Popen([*command, "--port", str(port)], env=env, cwd=ROOT, start_new_session=True)
    try:
        wait_healthy(port, health)
        results = {c: load(port, token, c, duration) for c in (10, 50)}
        rss = max(tree_rss_mb(process.pid))
        return results, rss
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)


def workflow_start_p95(url: str, since: dt.datetime) -> tuple[float, int]:
    """p95 seconds from an event's commit to the start of the workflow it was handed to.

    The start is DBOS's own record of the workflow (``created_at`` in its system database, read
    through the public ``DBOSClient``); events never handed to a workflow are counted apart.
    """
    db = Database(url)
    try:
        with db.sessions() as session:
            rows = session.execute(
                select(OutboxMessage.created_at, OutboxMessage.workflow_id).where(
                    OutboxMessage.created_at >= since
                )
            ).all()
    finally:
        db.dispose()
    client = DBOSClient(system_database_url=Settings(database_url=url).resolved_dbos_url)
    try:
        ids = sorted({w for _, w in rows if w})
        started = {
            w.workflow_id: w.created_at / 1000
            for i in range(0, len(ids), 500)
            for w in client.list_workflows(workflow_ids=ids[i : i + 500], load_input=False, load_output=False)
            if w.created_at is not None
        }
    finally:
        client.destroy()
    delays = sorted(started[w] - c.timestamp() for c, w in rows if w in started)
    not_started = sum(1 for _, w in rows if w not in started)
    return (delays[int(len(delays) * 0.95)] if delays else float("nan")), not_started


def prepare_careops(url: str) -> tuple[dict[str, str], str]:
    """Migrate and seed a fresh database; the environment to serve it and an admin token."""
    env = {**os.environ, "CAREOPS_DATABASE_URL": url}
    for args in (["migrate"], ["seed", "--demo"]):
        subprocess.run([str(BIN / "careops"), *args], env=env, check=True, capture_output=True)
    token = subprocess.run(
        [str(BIN / "careops"), "token", "create", "--name", "bench", "--all-scopes"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return env, token


REFERENCE = [
    str(BIN / "uvicorn"),
    "bench.reference_app:app",
    "--workers",
    "2",
    "--log-level",
    "warning",
    "--no-access-log",
]
VARIANTS = {
    # What the issue measures: the API with its embedded worker (dispatcher + DBOS workflows).
    "careops": [str(BIN / "careops"), "serve", "--workers", "2"],
    # The API alone, to tell the request path's cost from the durable follow-up's.
    "careops API only": [str(BIN / "careops"), "serve", "--workers", "2", "--no-embedded-worker"],
}


def bench_backend(backend: str, duration: float, workdir: Path) -> list[dict[str, Any]]:
    ref_url = fresh_database(backend, workdir)
    try:
        reference, ref_rss = run_app(
            REFERENCE, {**os.environ, "CAREOPS_DATABASE_URL": ref_url}, "/docs", "", duration
        )
    finally:
        drop_database(ref_url)
    rows = []
    for variant, command in VARIANTS.items():
        url = fresh_database(backend, workdir)
        try:
            env, token = prepare_careops(url)
            since = dt.datetime.now(dt.UTC)
            careops, app_rss = run_app(command, env, "/healthz", token, duration)
            p95_start, not_started = workflow_start_p95(url, since)
        finally:
            drop_database(url)
        for connections in (10, 50):
            ref, app = reference[connections], careops[connections]
            rows.append(
                {
                    "backend": backend,
                    "variant": variant,
                    "connections": connections,
                    "ref_rps": ref["throughput"],
                    "rps": app["throughput"],
                    "ratio": app["throughput"] / ref["throughput"],
                    "ref_p99": ref["p99_ms"],
                    "p50": app["p50_ms"],
                    "p95": app["p95_ms"],
                    "p99": app["p99_ms"],
                    "p99_ratio": app["p99_ms"] / ref["p99_ms"],
                    "errors": app["errors"],
                    "ref_errors": ref["errors"],
                    "statuses": app["statuses"],
                    "rss_mb": app_rss,
                    "ref_rss_mb": ref_rss,
                    "workflow_start_p95_s": p95_start,
                    "events_without_workflow": not_started,
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load per measurement")
    parser.add_argument("--backends", default="postgres,sqlite")
    args = parser.parse_args()
    workdir = ROOT / "bench" / "results"
    workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for backend in args.backends.split(","):
        console.print(f"benchmarking on {backend} …")
        rows += bench_backend(backend, args.duration, workdir)
    table = Table(title=f"intake benchmark — {os.cpu_count()} cores, {dt.date.today()}")
    for column in (
        "db",
        "variant",
        "conns",
        "ref req/s",
        "careops req/s",
        "ratio",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "ref p99 ms",
        "p99 ratio",
        "errors",
        "max RSS MB",
        "event→workflow p95 s",
        "events not started",
    ):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(
            r["backend"],
            r["variant"],
            str(r["connections"]),
            f"{r['ref_rps']:.0f}",
            f"{r['rps']:.0f}",
            f"{r['ratio']:.0%}",
            f"{r['p50']:.1f}",
            f"{r['p95']:.1f}",
            f"{r['p99']:.1f}",
            f"{r['ref_p99']:.1f}",
            f"{r['p99_ratio']:.2f}",
            str(r["errors"]),
            f"{r['rss_mb']:.0f}",
            f"{r['workflow_start_p95_s']:.2f}" if r["variant"] == "careops" else "-",
            str(r["events_without_workflow"]) if r["variant"] == "careops" else "-",
        )
    console.print(table)
    (workdir / f"intake-{dt.datetime.now():%Y%m%d-%H%M%S}.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
