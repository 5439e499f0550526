"""KPI roll-up throughput: sealed business events counted into the roll-ups, per second.

    .venv/bin/python -m bench.kpis [--events 200000] [--rounds 3] [--backends postgres,sqlite]

On a fresh database per backend: writes ``--events`` business events shaped like a day's work
(referrals received on every channel, cases created and moved, exceptions, quarantined payloads)
over 30 days and three locations, seals them into the audit chain, then, each round, rebuilds
every KPI from the whole log (``careops kpi rebuild``: the worker's roll-up, 5,000 events a
transaction) and times it. The reference in the same round is the fastest honest way to count the
same events: one plain SQL ``GROUP BY`` over the log (counts by type, day and location), which
does none of the per-event work (payload dimensions, durations, upserts, the cursor). Prints
events/s for both and their ratio; issue 25's target is ≥ 2,000 events/s for the roll-up.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import time
from pathlib import Path
from statistics import median
from typing import Any

from rich.table import Table
from sqlalchemy import insert, select, text

from bench.intake import console, drop_database, fresh_database, prepare_careops
from careops.db import Database
from careops.domain.models import Base, BusinessEvent, Location
from careops.governance.audit import seal_all
from careops.governance.keys import load_field_keys
from careops.observability.rollup import rebuild
from careops.settings import Settings

_events = Base.metadata.tables[BusinessEvent.__tablename__]
MIX = [
    ("referral.received", 0.40),
    ("case.created", 0.28),
    ("case.transitioned", 0.20),
    ("referral.incomplete", 0.05),
    ("referral.quarantined", 0.03),
    ("referral.duplicate_detected", 0.02),
    ("exception.opened", 0.02),
]
CHANNELS = ("api", "hl7", "fhir", "email", "form")


def _payload(kind: str, rng: random.Random, n: int) -> dict[str, Any]:
    if kind == "referral.received":
        return {"channel": rng.choice(CHANNELS)}
    if kind == "case.created":
        return {
            "intake_item_id": f"{n - 1:032x}",
            "service": "XRAY-CHEST",
            "status": "ready_to_schedule",
            "channel": "api",
        }
    if kind == "case.transitioned":
        return {
            "from": "ready_to_schedule",
            "to": rng.choice(("scheduled", "completed", "cancelled")),
            "action": "x",
        }
    if kind == "referral.incomplete":
        return {
            "exception_id": f"{n:032x}",
            "reason_codes": [rng.choice(("missing_field:patient.birth_date", "unknown_service_code"))],
        }
    if kind == "referral.quarantined":
        return {"channel": rng.choice(CHANNELS), "reason_codes": ["validation_failed"]}
    if kind == "exception.opened":
        return {"queue": rng.choice(("triage", "intake")), "reason_codes": ["triage_overdue"]}
    return {"channel": "api"}


def _write_events(db: Database, count: int) -> None:
    rng = random.Random(7)
    kinds, weights = zip(*MIX, strict=True)
    with db.engine.connect() as connection:
        locations = list(connection.scalars(select(Location.id)))
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    batch = []
    for n in range(count):
        kind = rng.choices(kinds, weights)[0]
        subject = f"{n:032x}"
        batch.append(
            {
                "type": kind,
                "subject_type": "intake_item" if kind.startswith("referral") else "case",
                "subject_id": subject,
                "case_id": subject if kind.startswith("case") else None,
                "location_id": rng.choice(locations),
                "actor": "bench",
                "correlation_id": None,
                "payload": _payload(kind, rng, n),
                "occurred_at": start + dt.timedelta(seconds=n * 30 * 86400 / count),
            }
        )
        if len(batch) == 10_000 or n == count - 1:
            with db.writer() as connection:
                connection.execute(insert(_events), batch)
            batch = []


def _reference(db: Database) -> float:
    """Seconds for one plain GROUP BY over the log: what the counting alone costs in SQL."""
    day = (
        "date(occurred_at)"
        if db.engine.dialect.name == "sqlite"
        else "(occurred_at AT TIME ZONE 'UTC')::date"
    )
    query = text(
        f"SELECT type, {day} AS day, location_id, count(*) FROM business_event "  # noqa: S608 - a fixed expression
        f"WHERE seq IS NOT NULL GROUP BY type, {day}, location_id"
    )
    started = time.perf_counter()
    with db.engine.connect() as connection:
        connection.execute(query).all()
    return time.perf_counter() - started


def bench_backend(backend: str, events: int, rounds: int, workdir: Path) -> list[dict[str, Any]]:
    url = fresh_database(backend, workdir)
    try:
        prepare_careops(url)
        settings = Settings(database_url=url, dbos_database_url=None)
        db = Database(url)
        load_field_keys(db, settings)
        count = events
        started = time.perf_counter()
        _write_events(db, count)
        sealed = seal_all(db, settings.secret_key)
        console.print(
            f"  {backend}: {count} events written, {sealed} sealed, in {time.perf_counter() - started:.0f} s"
        )
        rows = []
        for number in range(rounds):
            reference = _reference(db)
            started = time.perf_counter()
            counted = rebuild(db)
            elapsed = time.perf_counter() - started
            rows.append(
                {
                    "backend": backend,
                    "round": number + 1,
                    "events": counted,
                    "rollup_eps": counted / elapsed,
                    "reference_eps": counted / reference,
                }
            )
        db.dispose()
        return rows
    finally:
        drop_database(url)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000, help="business events to write and count")
    parser.add_argument("--rounds", type=int, default=3, help="rebuilds timed")
    parser.add_argument("--backends", default="postgres,sqlite")
    args = parser.parse_args()
    workdir = Path(__file__).parent / "results"
    workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for backend in args.backends.split(","):
        console.print(f"benchmarking on {backend} …")
        rows += bench_backend(backend, args.events, args.rounds, workdir)
    table = Table(title=f"KPI roll-up — {dt.date.today()}")
    for column in (
        "db",
        "round",
        "events",
        "roll-up events/s",
        "plain SQL GROUP BY events/s",
        "roll-up / SQL",
    ):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(
            r["backend"], str(r["round"]), str(r["events"]), f"{r['rollup_eps']:,.0f}",
            f"{r['reference_eps']:,.0f}", f"{r['rollup_eps'] / r['reference_eps']:.1%}",
        )  # fmt: skip
    console.print(table)
    for backend in dict.fromkeys(r["backend"] for r in rows):
        mine = [r["rollup_eps"] for r in rows if r["backend"] == backend]
        console.print(f"{backend}: median {median(mine):,.0f} events/s (target ≥ 2,000)")
    out = Path(__file__).parent / "results" / f"kpis-{dt.datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
