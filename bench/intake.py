"""Intake benchmark: careops vs a bare FastAPI reference, same load, same database, same run.

    .venv/bin/python -m bench.intake [--duration 6] [--rounds 3] [--backends postgres,sqlite]

Starts the reference and careops side by side, each with 2 HTTP worker processes on loopback and
its own fresh database, and drives them in turns (interleaved rounds) at 10 and 50 connections
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

import httpx
import psycopg
from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from bench.reference_schema import metadata as reference_tables
from careops.db import Database, make_engine
from careops.domain.models import OutboxMessage

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


def _loadgen(port: int, token: str, *options: str) -> list[str]:
    url = f"http://127.0.0.1:{port}"
    return [sys.executable, "-m", "bench.loadgen", "--url", url, "--token", token, *options]


def load(port: int, token: str, connections: int, duration: float) -> dict[str, Any]:
    """One measurement of JSON referrals by its own load generator process (after a warm-up)."""
    options = ("--connections", str(connections), "--duration", str(duration))
    result = subprocess.run(
        _loadgen(port, token, *options), cwd=ROOT, capture_output=True, text=True, check=True
    )
    return dict(json.loads(result.stdout))


class LoadClient:
    """One load generator process for many measurements (``bench.loadgen --serve``): its bodies
    are made ahead, so that measurements can follow each other at once."""

    def __init__(self, port: int, token: str) -> None:
        self.process = subprocess.Popen(
            _loadgen(port, token, "--serve"),
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def measure(self, kind: str, connections: int, duration: float) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        asked = {"kind": kind, "connections": connections, "duration": duration}
        self.process.stdin.write(json.dumps(asked) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the load generator stopped (exit status {self.process.wait()})")
        return dict(json.loads(line))

    def close(self) -> None:
        """Stop the generator: it ends after its current measurement, or is killed."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


@dataclass
class RunningApp:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    token: str

    def stop(self) -> float:
        """Stop the app; the largest RSS of its processes, in MB, just before."""
        rss = max(tree_rss_mb(self.process.pid))
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(30)
        return rss


def start_app(name: str, command: list[str], env: dict[str, str], health: str, token: str) -> RunningApp:
    port = free_port()
    process = subprocess.Popen([*command, "--port", str(port)], env=env, cwd=ROOT, start_new_session=True)
    try:
        wait_healthy(port, health)
    except RuntimeError:
        os.killpg(process.pid, signal.SIGTERM)
        raise
    return RunningApp(name, process, port, token)


def workflow_start_p95(url: str, since: dt.datetime) -> tuple[float, int]:
    """p95 seconds from an event's commit to its outbox row being marked dispatched.

    The row is marked after DBOS has recorded the workflow start, so this is an upper bound of
    event → workflow start. (DBOS's own ``created_at`` has one-second resolution on SQLite under
    Python 3.11, too coarse to use.) Events not dispatched when the server stopped are counted apart.
    """
    db = Database(url)
    try:
        with db.sessions() as session:
            rows = session.execute(
                select(OutboxMessage.created_at, OutboxMessage.dispatched_at).where(
                    OutboxMessage.created_at >= since
                )
            ).all()
    finally:
        db.dispose()
    delays = sorted((d - c).total_seconds() for c, d in rows if d is not None)
    undispatched = sum(1 for _, d in rows if d is None)
    return (delays[int(len(delays) * 0.95)] if delays else float("nan")), undispatched


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


def bench_backend(backend: str, duration: float, rounds: int, workdir: Path) -> list[dict[str, Any]]:
    """Start the reference and both careops variants side by side, then load them in turns.

    Each round loads every app once at each connection count, one after the other, so that the
    machine's drift (other tenants, ±30% here) falls on all of them alike; the ratio reported is
    the median over rounds of careops / reference in the same round.
    """
    apps: list[RunningApp] = []
    urls: list[str] = []
    since = dt.datetime.now(dt.UTC)
    try:
        ref_url = fresh_database(backend, workdir)
        urls.append(ref_url)
        ref_engine = make_engine(ref_url)
        reference_tables.create_all(ref_engine)
        ref_engine.dispose()
        ref_env = {**os.environ, "CAREOPS_DATABASE_URL": ref_url}
        apps.append(start_app("reference", REFERENCE, ref_env, "/docs", ""))
        for variant, command in VARIANTS.items():
            url = fresh_database(backend, workdir)
            urls.append(url)
            env, token = prepare_careops(url)
            apps.append(start_app(variant, command, env, "/healthz", token))
        results: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for connections in (10, 50):
            for _ in range(rounds):
                for app in apps:
                    results.setdefault((app.name, connections), []).append(
                        load(app.port, app.token, connections, duration)
                    )
        rss = {app.name: app.stop() for app in apps}
        apps = []
        starts = {url: workflow_start_p95(url, since) for url in urls[1:]}
    finally:
        for app in apps:
            app.stop()
        for url in urls:
            drop_database(url)
    rows = []
    for variant, url in zip(VARIANTS, urls[1:], strict=True):
        for connections in (10, 50):
            ref_runs, runs = results[("reference", connections)], results[(variant, connections)]
            pairs = list(zip(runs, ref_runs, strict=True))
            ratios = [a["throughput"] / r["throughput"] for a, r in pairs]
            rows.append(
                {
                    "backend": backend,
                    "variant": variant,
                    "connections": connections,
                    "ref_rps": median(r["throughput"] for r in ref_runs),
                    "rps": median(r["throughput"] for r in runs),
                    "ratio": median(ratios),
                    "ratios": ratios,
                    "ref_p99": median(r["p99_ms"] for r in ref_runs),
                    "p50": median(r["p50_ms"] for r in runs),
                    "p95": median(r["p95_ms"] for r in runs),
                    "p99": median(r["p99_ms"] for r in runs),
                    "p99_ratio": median(a["p99_ms"] / r["p99_ms"] for a, r in pairs),
                    "errors": sum(r["errors"] for r in runs),
                    "ref_errors": sum(r["errors"] for r in ref_runs),
                    "statuses": [r["statuses"] for r in runs],
                    "rss_mb": rss[variant],
                    "ref_rss_mb": rss["reference"],
                    "workflow_start_p95_s": starts[url][0],
                    "events_not_dispatched": starts[url][1],
                }
            )
    return rows


BackendBench = Callable[[str, float, int, Path], list[dict[str, Any]]]


def run_backends(
    description: str, rounds_help: str, bench: BackendBench, duration: float = 6.0, rounds: int = 3
) -> list[dict[str, Any]]:
    """Parse ``--duration --rounds --backends`` (defaults ``duration`` and ``rounds``) and run
    ``bench`` on each backend; all its rows."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=duration, help="seconds of load per measurement")
    parser.add_argument("--rounds", type=int, default=rounds, help=rounds_help)
    parser.add_argument("--backends", default="postgres,sqlite")
    args = parser.parse_args()
    workdir = ROOT / "bench" / "results"
    workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for backend in args.backends.split(","):
        console.print(f"benchmarking on {backend} …")
        rows += bench(backend, args.duration, args.rounds, workdir)
    return rows


def main() -> None:
    rows = run_backends(__doc__ or "", "interleaved rounds per connection count", bench_backend)
    table = Table(title=f"intake benchmark — {os.cpu_count()} cores, {dt.date.today()}")
    for column in (
        "db",
        "variant",
        "conns",
        "ref req/s",
        "careops req/s",
        "ratio",
        "ratio range",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "ref p99 ms",
        "p99 ratio",
        "errors",
        "max RSS MB",
        "event→workflow p95 s",
        "events not dispatched",
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
            f"{min(r['ratios']):.0%}-{max(r['ratios']):.0%}",
            f"{r['p50']:.1f}",
            f"{r['p95']:.1f}",
            f"{r['p99']:.1f}",
            f"{r['ref_p99']:.1f}",
            f"{r['p99_ratio']:.2f}",
            str(r["errors"]),
            f"{r['rss_mb']:.0f}",
            f"{r['workflow_start_p95_s']:.2f}" if r["variant"] == "careops" else "-",
            str(r["events_not_dispatched"]) if r["variant"] == "careops" else "-",
        )
    console.print(table)
    (ROOT / "bench" / "results" / f"intake-{dt.datetime.now():%Y%m%d-%H%M%S}.json").write_text(
        json.dumps(rows, indent=2)
    )


if __name__ == "__main__":
    main()
