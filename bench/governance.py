"""Governance benchmark: masking overhead, audit append and sealing rates, and `verify` over a large
chain (PostgreSQL).

    .venv/bin/python -m bench.governance [--writers 4] [--seconds 8] [--verify-entries 1000000]
        [--only masking|audit]

Masking: listing 100 cases (``list_cases``, the service behind GET /api/v1/cases, from the database
with their patients) with the default partial masking against the same listing with masking
switched off, interleaved in rounds in one run; the overhead is the ratio of the medians.
Target (issue 5): ≤ 10 %.

Append: ``--writers`` processes each commit audited events (1, then 10 per transaction) for ``--seconds``,
while the worker's sealer runs; in the same run the same processes insert the same rows into a
plain, unchained copy of the table (the reference), and the ratio is reported. Then ``verify`` walks
a chain of ``--verify-entries`` entries (written in bulk, then sealed) and its time is reported.
Targets (issue 5): append ≥ 5,000 entries/s; verify of 1,000,000 entries ≤ 10 s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any

import psycopg
from fastapi.testclient import TestClient
from rich.console import Console
from rich.table import Table
from sqlalchemy import func, insert, select, text

from careops.api.app import create_app
from careops.db import Database
from careops.demo.seed import seed_demo
from careops.domain.models import Base, BusinessEvent
from careops.governance.audit import seal_all, verify
from careops.governance.keys import load_field_keys
from careops.governance.masking import MaskingPolicy
from careops.governance.permissions import ADMIN, DEFAULT_MASKING
from careops.governance.principal import Principal
from careops.governance.tokens import create_token
from careops.migrate import upgrade
from careops.orchestration.cases import CaseFilter, list_cases
from careops.settings import Settings

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
KEY = "bench-secret-key-" + "x" * 32
console = Console(width=160)

WRITER = """
import datetime as dt, sys, time
from sqlalchemy import MetaData, insert
from careops.db import Database
from careops.domain.events import Event, EventType, record_events
from careops.domain.models import Base, BusinessEvent
db, mode, deadline = Database(sys.argv[1]), sys.argv[2], time.monotonic() + float(sys.argv[3])
per_transaction = int(sys.argv[5])
plain = Base.metadata.tables[BusinessEvent.__tablename__].to_metadata(MetaData(), name="plain_event")
count = 0
while time.monotonic() < deadline:
    events = [
        Event(EventType.CASE_TRANSITIONED, "case", f"w{sys.argv[4]}-{count + i}", actor="b", payload={"n": i})
        for i in range(per_transaction)
    ]
    with db.writer() as connection:
        if mode == "audited":
            record_events(connection, *events)
        else:
            now = dt.datetime.now(dt.UTC)
            connection.execute(insert(plain), [
                {"type": str(e.type), "subject_type": "case", "subject_id": e.subject_id, "actor": "bench",
                 "payload": e.payload, "occurred_at": now} for e in events])
    count += per_transaction
db.dispose()
print(count)
"""
SEALER = """
import sys, time
from careops.db import Database
from careops.governance.audit import Sealer
db = Database(sys.argv[1])
sealer = Sealer(db, sys.argv[2], 10.0)
deadline = time.monotonic() + float(sys.argv[3])
while time.monotonic() < deadline:
    if sealer.seal_once() < 5000:
        time.sleep(0.5)
db.dispose()
"""


def fresh_database() -> str:
    name = f"careops_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    upgrade(url)
    return url


def drop_database(url: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


def append_rate(url: str, mode: str, writers: int, seconds: float, per_transaction: int) -> float:
    sealer = (
        subprocess.Popen([sys.executable, "-c", SEALER, url, KEY, str(seconds)])
        if mode == "audited"
        else None
    )
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, url, mode, str(seconds), str(n), str(per_transaction)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(writers)
    ]
    started = time.monotonic()
    counts = [int((p.communicate(timeout=seconds + 60)[0] or "0").strip()) for p in processes]
    elapsed = time.monotonic() - started
    if sealer:
        sealer.wait(60)
    return sum(counts) / elapsed


def bulk_events(db: Database, total: int) -> None:
    events = Base.metadata.tables[BusinessEvent.__tablename__]
    now = dt.datetime.now(dt.UTC)
    batch = 10_000
    for start in range(0, total, batch):
        rows = [
            {
                "type": "case.transitioned",
                "subject_type": "case",
                "subject_id": f"c{n}",
                "actor": "bench",
                "payload": {"n": n},
                "occurred_at": now,
            }
            for n in range(start, min(total, start + batch))
        ]
        with db.writer() as connection:
            connection.execute(insert(events), rows)


class Unmasked(MaskingPolicy):
    """Masking switched off: views pass through untouched (and nothing counts as read in clear)."""

    def view(self, data: dict[str, Any], tags: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        return data

    def project(self, source: object, keys: tuple[str, ...], tags: dict[str, Any]) -> dict[str, Any]:
        return {key: getattr(source, key) for key in keys}


def masking_overhead(rounds: int, calls: int) -> list[tuple[str, str, str]]:
    url = fresh_database()
    try:
        settings = Settings(database_url=url, secret_key=KEY)
        db = Database(url)
        load_field_keys(db, settings)
        seed_demo(db)
        secret, _ = create_token(db, "bench", [ADMIN], actor="bench")
        with TestClient(create_app(settings, db)) as client:
            for n in range(100):
                body = {"location": "north", "service_code": "XRAY-CHEST", "referrer": {"code": "GP-001"},
                        "payer_code": "NHS", "member_id": f"943 476 {n:04d}",
                        "patient": {"mrn": f"B-{n}", "given_name": "Alex", "family_name": f"Bench{n}",
                                    "birth_date": "1980-04-12", "phone": "020 7946 0958"}}  # fmt: skip
                client.post("/api/v1/referrals", json=body, headers={"Authorization": f"Bearer {secret}"})
        readers = {
            "masked": Principal(
                "bench", "bench", frozenset({ADMIN}), masking=MaskingPolicy(dict(DEFAULT_MASKING))
            ),
            "unmasked": Principal("bench", "bench", frozenset({ADMIN}), masking=Unmasked({})),
        }
        timings: dict[str, list[float]] = {name: [] for name in readers}
        for round_number in range(rounds):
            order = list(readers.items())
            for name, reader in order if round_number % 2 else reversed(order):
                started = time.perf_counter()
                for _ in range(calls):
                    page = list_cases(db, CaseFilter(), None, 100, reader)
                timings[name].append((time.perf_counter() - started) / calls)
                assert len(page["items"]) == 100
        db.dispose()
    finally:
        drop_database(url)
    masked, unmasked = (statistics.median(timings[n]) for n in ("masked", "unmasked"))
    overhead = f"overhead {masked / unmasked - 1:+.1%}; target ≤ +10%"
    return [
        (
            "list 100 cases, masking off (reference)",
            f"{unmasked * 1000:.2f} ms",
            f"median, {rounds} x {calls}",
        ),
        ("list 100 cases, masked (default policy)", f"{masked * 1000:.2f} ms", overhead),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--verify-entries", type=int, default=1_000_000)
    parser.add_argument("--only", choices=["masking", "audit"])
    args = parser.parse_args()
    results: list[tuple[str, str, str]] = []
    if args.only != "audit":
        results += masking_overhead(rounds=15, calls=20)
    if args.only != "masking":
        results += audit_rates(args)
    table = Table(
        title=f"governance benchmark — PostgreSQL, {os.cpu_count()} cores, "
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC"
    )
    for column in ("measurement", "result", "note"):
        table.add_column(column)
    for row in results:
        table.add_row(*row)
    console.print(table)


def audit_rates(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    results: list[tuple[str, str, str]] = []
    url = fresh_database()
    try:
        db = Database(url)
        with db.writer() as connection:
            connection.execute(text("CREATE TABLE plain_event (LIKE business_event INCLUDING DEFAULTS)"))
        for per_transaction in (1, 10):
            plain = append_rate(url, "plain", args.writers, args.seconds, per_transaction)
            audited = append_rate(url, "audited", args.writers, args.seconds, per_transaction)
            results += [
                (
                    f"append, plain table (reference), {per_transaction} per transaction",
                    f"{plain:,.0f} entries/s",
                    f"{args.writers} writers",
                ),
                (
                    f"append, audited (events + sealer), {per_transaction} per transaction",
                    f"{audited:,.0f} entries/s",
                    f"{audited / plain:.0%} of the reference; target ≥ 5,000/s",
                ),
            ]
        started = time.monotonic()
        seal_all(db, KEY)
        with db.sessions() as session:
            unsealed = session.scalar(select(func.count()).where(BusinessEvent.seq.is_(None)))
        results.append(
            (
                "sealing what was left after the runs",
                f"{time.monotonic() - started:.2f} s",
                f"{unsealed} unsealed",
            )
        )
        db.dispose()
    finally:
        drop_database(url)

    url = fresh_database()
    try:
        db = Database(url)
        started = time.monotonic()
        bulk_events(db, args.verify_entries)
        written = time.monotonic() - started
        started = time.monotonic()
        seal_all(db, KEY)
        sealed = time.monotonic() - started
        started = time.monotonic()
        report = verify(db, KEY, processes=os.cpu_count() or 1)
        verified = time.monotonic() - started
        assert report.ok and report.entries == args.verify_entries, report.findings[:3]
        results += [
            (f"bulk write of {args.verify_entries:,} events", f"{written:.1f} s", "one INSERT per 10,000"),
            (
                f"seal {args.verify_entries:,} entries",
                f"{sealed:.1f} s",
                f"{args.verify_entries / sealed:,.0f} entries/s",
            ),
            (
                f"verify {args.verify_entries:,} entries",
                f"{verified:.1f} s",
                f"{os.cpu_count()} processes, {report.checkpoints} checkpoints; target ≤ 10 s",
            ),
        ]
        db.dispose()
    finally:
        drop_database(url)
    return results


if __name__ == "__main__":
    main()
