"""Approvals at the size of a network: the escalation sweep among 100,000 pending approvals,
decisions per second, and the what-if replay, each beside its reference in the same run.

    .venv/bin/python -m bench.approvals [--locations 50] [--pending 100000] [--decided 20000]
                                        [--decisions 2000] [--processes 2] [--threads 4]
                                        [--rounds 3] [--keep | --database URL]

On a fresh PostgreSQL database with the demo organisation and ``--locations`` locations, the
shipped policies active, 20 buyers and 2 managers, ``--pending`` replenishment requests waiting
for approval (one active step each, due over the next 30 days) and ``--decided`` approved ones
(with their steps' durations), copied in as the approvals layer writes them. Issue 30's targets:

- *sweep*: ``approvals.escalation.sweep`` escalating 100 overdue steps (the worker's batch) among
  the pending ones, their links, messages and events written, ≤ 200 ms; the reference is the bare
  claiming query;
- *decisions*: ``decide`` in ``--processes`` processes (as several servers) of ``--threads``
  threads each, every decision final (the replenishment approved with it), ≥ 300 decisions/s; the
  reference does the same reads and writes in plain SQL on psycopg, in as many processes and
  threads;
- *what-if*: ``simulate`` of a proposed replenishment policy over every recorded request
  (pending and decided) ≤ 30 s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import multiprocessing
import random
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import select

from bench.automation import _network_file
from bench.intake import console
from bench.scheduling import network_database, rounds_table, seed_network
from careops.approvals.escalation import sweep
from careops.approvals.policies import Policy, load_file, load_text
from careops.approvals.requests import decide
from careops.approvals.simulate import simulate
from careops.approvals.store import activate_directory, shipped_directory
from careops.approvals.subjects import fingerprint
from careops.db import Database
from careops.domain.models import Location, User, utcnow
from careops.domain.stock import Replenishment
from careops.governance.keys import load_field_keys
from careops.governance.users import create_user, user_principal
from careops.settings import Settings

BUYERS, MANAGERS = 20, 2
SWEEP = 100
BARE_SWEEP = (
    "SELECT id FROM approval_step WHERE status = 'active' AND escalated_at IS NULL AND due_at <= %s"
    " ORDER BY due_at LIMIT 100 FOR UPDATE SKIP LOCKED"
)


REQUEST_COLUMNS = (
    "id, subject_type, subject_id, location_id, policy, policy_hash, policy_version, matched, facts,"
    " fingerprint, status, requested_by, amended_by, separation, requested_at, decided_at"
)
STEP_COLUMNS = (
    "id, request_id, position, name, spec, approvers, quorum, status, started_at, due_at, escalated_at,"
    " finished_at"
)
RECORD_COLUMNS = (
    "id, location_id, supplier, status, urgency, lines, value, requested_by, created_at, updated_at"
)
STEP_SPEC = {
    "who": "role:procurement",
    "quorum": "any",
    "within_seconds": 14400.0,
    "on_timeout": "add_next",
    "fallback": "role:operations_manager",
}


def _rows(
    policy: Policy,
    places: list[str],
    buyers: list[str],
    n: int,
    open_: bool,
    rng: random.Random,
    now: dt.datetime,
) -> tuple[tuple[Any, ...], tuple[Any, ...], tuple[Any, ...]]:
    """One replenishment request, its approval request and its step, as the approvals layer writes them."""
    quantity = rng.randrange(10, 5000)
    value = round(quantity * 0.8, 2)
    urgency = "urgent" if n % 10 == 0 else "routine"
    lines = [{"item": "SALINE-100ML", "quantity": quantity, "unit_price": 0.8}]
    shape = Replenishment(lines=lines, value=value, urgency=urgency, supplier="MEDSUPPLY")
    place, record_id, request_id = rng.choice(places), uuid.uuid4().hex, uuid.uuid4().hex
    asked = now - dt.timedelta(minutes=rng.randrange(1, 60 * 24 * 60))
    rule = "urgent" if urgency == "urgent" and value < 5000 else ("small" if value < 500 else "medium")
    status = "requested" if open_ else "approved"
    record = (record_id, place, "MEDSUPPLY", status, urgency, json.dumps(lines), value, "bench", asked, asked)
    request = (
        request_id, "replenishment", record_id, place, policy.name, policy.content_hash, policy.version,
        json.dumps([rule]), json.dumps({"amount": value, "urgency": urgency}),
        fingerprint("replenishment", shape), "pending" if open_ else "approved", "bench", "[]",
        json.dumps(policy.separation), asked, None if open_ else asked + dt.timedelta(hours=2),
    )  # fmt: skip
    due = now + dt.timedelta(minutes=rng.randrange(10, 60 * 24 * 30))
    finished = None if open_ else asked + dt.timedelta(minutes=rng.randrange(5, 600))
    approvers = json.dumps([{"user": rng.choice(buyers), "via": "role:procurement"}])
    step = (
        uuid.uuid4().hex, request_id, 0, "buyer", json.dumps(STEP_SPEC), approvers, 1,
        "active" if open_ else "approved", asked, due, None, finished,
    )  # fmt: skip
    return record, request, step


def _fill(db: Database, url: str, pending: int, decided: int) -> int:
    activate_directory(db, shipped_directory(), actor="bench", reason="benchmark")
    settings = Settings(database_url=url)
    buyers = [
        create_user(db, settings, f"buyer{n}", None, ["procurement"], actor="bench").id for n in range(BUYERS)
    ]
    for n in range(MANAGERS):
        create_user(db, settings, f"manager{n}", None, ["operations_manager"], actor="bench")
    policy = load_file(shipped_directory() / "replenishment.yaml")
    with db.sessions() as session:
        places = list(session.scalars(select(Location.id).where(Location.slug.like("area-%"))))
    rng, now = random.Random(30), utcnow()
    made = [_rows(policy, places, buyers, n, n < pending, rng, now) for n in range(pending + decided)]
    with psycopg.connect(url.replace("+psycopg", "")) as connection, connection.cursor() as cursor:
        for n, (table, columns) in enumerate(
            (
                ("replenishment", RECORD_COLUMNS),
                ("approval_request", REQUEST_COLUMNS),
                ("approval_step", STEP_COLUMNS),
            )
        ):
            with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for rows in made:
                    copy.write_row(rows[n])
    return pending + decided


def _overdue(url: str, count: int) -> None:
    past = utcnow() - dt.timedelta(seconds=1)
    with psycopg.connect(url.replace("+psycopg", "")) as connection:
        connection.execute(
            "UPDATE approval_step SET due_at = %s WHERE id IN (SELECT id FROM approval_step"
            " WHERE status = 'active' AND escalated_at IS NULL ORDER BY due_at LIMIT %s)",
            (past, count),
        )


def _sweep(db: Database, url: str) -> tuple[float, float, int]:
    _overdue(url, SWEEP)
    with psycopg.connect(url.replace("+psycopg", "")) as connection:
        began = time.perf_counter()
        with connection.transaction():
            assert len(connection.execute(BARE_SWEEP, (utcnow(),)).fetchall()) == SWEEP
            bare = time.perf_counter() - began
    began = time.perf_counter()
    swept = sweep(db, SWEEP)
    return time.perf_counter() - began, bare, swept


def _waiting(url: str, count: int) -> dict[str, list[str]]:
    """``count`` pending single-step requests (not urgent, under 500: one buyer decides), by buyer."""
    with psycopg.connect(url.replace("+psycopg", "")) as connection:
        rows = connection.execute(
            "SELECT s.approvers->0->>'user', r.id FROM approval_request r"
            " JOIN approval_step s ON s.request_id = r.id WHERE r.status = 'pending' AND s.status = 'active'"
            " AND s.escalated_at IS NULL AND r.matched = '[\"small\"]' ORDER BY r.id LIMIT %s",
            (count,),
        ).fetchall()
    found: dict[str, list[str]] = {}
    for user, request in rows:
        found.setdefault(user, []).append(request)
    return found


def _plain(connection: psycopg.Connection, user: str, request: str) -> None:
    """The reference: a decision's reads and writes in plain SQL (the request, its step and its
    record locked and read; the decision, the step, the request and the record written; the three
    events)."""
    now = utcnow()
    with connection.transaction(), connection.cursor() as cursor:
        subject, location = cursor.execute(
            "SELECT subject_id, location_id FROM approval_request WHERE id = %s AND status = 'pending'"
            " FOR UPDATE",
            (request,),
        ).fetchone()
        step = cursor.execute(
            "SELECT id FROM approval_step WHERE request_id = %s AND status = 'active'", (request,)
        ).fetchone()[0]
        cursor.execute("SELECT lines, value FROM replenishment WHERE id = %s FOR UPDATE", (subject,))
        cursor.execute("SELECT id FROM approval_decision WHERE request_id = %s", (request,))
        cursor.execute(
            "INSERT INTO approval_decision (id, request_id, position, decision, decided_by, via, decided_at)"
            " VALUES (%s, %s, 0, 'approve', %s, 'api', %s)",
            (uuid.uuid4().hex, request, user, now),
        )
        cursor.execute(
            "UPDATE approval_step SET status = 'approved', finished_at = %s WHERE id = %s", (now, step)
        )
        cursor.execute(
            "UPDATE approval_request SET status = 'approved', decided_at = %s WHERE id = %s", (now, request)
        )
        cursor.execute(
            "UPDATE replenishment SET status = 'approved', updated_at = %s WHERE id = %s", (now, subject)
        )
        events = [
            (kind, kind.split(".")[0], request if kind.startswith("approval") else subject, location, user,
             json.dumps({"request": request}), now)
            for kind in ("approval.decision_recorded", "approval.decided", "replenishment.approved")
        ]  # fmt: skip
        cursor.executemany(
            "INSERT INTO business_event (type, subject_type, subject_id, location_id, actor, payload,"
            " occurred_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            events,
        )


def _share(url: str, items: list[tuple[str, str]], threads: int, plain: bool, start: Any, out: Any) -> None:
    """One process's share of the decisions, by ``threads`` threads, after every process is ready."""
    db = Database(url)
    load_field_keys(db, Settings(database_url=url))
    with db.sessions() as session:
        principals = {u.id: user_principal(session, u) for u in session.scalars(select(User))}
    queue, lock, local = list(items), threading.Lock(), threading.local()

    def run() -> None:
        while True:
            with lock:
                if not queue:
                    return
                user, request = queue.pop()
            if plain:
                if not hasattr(local, "connection"):
                    local.connection = psycopg.connect(url.replace("+psycopg", ""))
                _plain(local.connection, user, request)
            else:
                decide(db, request, principals[user], "approve", None, via="api")

    workers = [threading.Thread(target=run) for _ in range(threads)]
    start.wait()
    began = time.time()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    out.put((began, time.time(), len(items)))


def _rate(url: str, items: list[tuple[str, str]], processes: int, threads: int, plain: bool) -> float:
    context = multiprocessing.get_context("spawn")
    start, out = context.Barrier(processes), context.Queue()
    shares = [items[n::processes] for n in range(processes)]
    workers = [
        context.Process(target=_share, args=(url, share, threads, plain, start, out)) for share in shares
    ]
    for w in workers:
        w.start()
    done = [out.get() for _ in workers]
    for w in workers:
        w.join()
    return sum(n for _, _, n in done) / (max(end for _, end, _ in done) - min(began for began, _, _ in done))


def _decisions(url: str, count: int, processes: int, threads: int) -> tuple[float, float]:
    """Decisions per second through ``decide`` and through the plain SQL reference, each on its
    own half of ``2 * count`` waiting single-step requests."""
    work = _waiting(url, 2 * count)
    items = [(user, request) for user, requests in work.items() for request in requests]
    return _rate(url, items[0::2], processes, threads, False), _rate(
        url, items[1::2], processes, threads, True
    )


def _what_if(db: Database) -> tuple[float, int]:
    text = (shipped_directory() / "replenishment.yaml").read_text()
    proposed = load_text(text.replace("below: 500}", "below: 1000}").replace("from: 500,", "from: 1000,"))
    began = time.perf_counter()
    found = simulate(db, proposed, utcnow() - dt.timedelta(days=61), utcnow() + dt.timedelta(days=1))
    return time.perf_counter() - began, int(found["requests"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--locations", type=int, default=50)
    parser.add_argument("--pending", type=int, default=100_000)
    parser.add_argument("--decided", type=int, default=20_000)
    parser.add_argument("--decisions", type=int, default=2000)
    parser.add_argument("--processes", type=int, default=2, help="deciding processes (as several servers)")
    parser.add_argument("--threads", type=int, default=4, help="deciding threads per process")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the seeded database (its URL is printed)")
    parser.add_argument("--database", help="measure on a database seeded by an earlier --keep run")
    args = parser.parse_args()

    def seed(url: str, workdir: Path) -> Database:
        fill = functools.partial(_fill, url=url, pending=args.pending, decided=args.decided)
        return seed_network(url, _network_file(workdir, args.locations), 2000, fill, "approval requests")

    with network_database(args, seed) as (url, db):
        results = []
        for _ in range(args.rounds):
            swept_ms, bare, swept = _sweep(db, url)
            rate, plain_rate = _decisions(url, args.decisions, args.processes, args.threads)
            seconds, replayed = _what_if(db)
            results.append(
                (swept_ms * 1000, bare * 1000, swept, rate, plain_rate, rate / plain_rate, seconds, replayed)
            )
        columns = (
            "sweep ms",
            "bare sweep ms",
            "escalated",
            "decisions/s",
            "plain SQL/s",
            "ratio",
            "what-if s",
            "requests replayed",
        )
        console.print(rounds_table(f"Approvals on PostgreSQL, {dt.date.today()}", columns, results))


if __name__ == "__main__":
    main()
