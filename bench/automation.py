"""The rule engine at the size of a network: matching, event-to-action throughput and the timer
sweep, each beside its reference in the same run.

    .venv/bin/python -m bench.automation [--locations 50] [--rules 1000] [--events 5000]
                                         [--timers 1000000] [--rounds 3] [--keep | --database URL]

On a fresh PostgreSQL database with the demo organisation and ``--locations`` locations, one
template per location holds ``--rules`` / ``--locations`` rules (one on ``stock.moved`` that queues a
message, the others on other event types with conditions), all active. Issue 29's targets:

- *matching*: ``Engine.matching`` (the rules an event starts: the index by event type and location,
  each candidate's condition) p95 ≤ 1 ms; the reference is the index look-up alone;
- *throughput*: ``--events`` sealed ``stock.moved`` events read by ``Engine.process_events`` and
  their actions committed (a message, its event and the run per event) ≥ 500 events/s; the
  reference does the same writes in plain SQL on psycopg, in the same batches;
- *sweep*: ``Engine.sweep_timers`` claiming and handling 100 due timers among ``--timers``
  pending ones ≤ 200 ms; the reference is the bare claiming query.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import random
import time
import uuid
from pathlib import Path

import psycopg
from sqlalchemy import func, select

from bench.intake import console
from bench.scheduling import network_database, percentiles, rounds_table, seed_network
from careops.automation.engine import Engine, Trigger
from careops.automation.facts import FactCache
from careops.automation.store import activate
from careops.automation.templates import load_text
from careops.db import Database
from careops.domain.models import BusinessEvent, Location, new_id, utcnow

OTHER_EVENTS = (
    "case.created",
    "case.triaged",
    "appointment.confirmed",
    "appointment.completed",
    "result.received",
    "authorisation.approved",
    "referral.incomplete",
    "exception.opened",
    "invoice.requested",
    "replenishment.drafted",
    "staff.conflict_reported",
    "shift.planned",
    "task.created",
    "charges.recorded",
    "patient.updated",
    "referral.modified",
    "appointment.cancelled",
    "staff.reassigned",
    "case.transitioned",
)
SWEEP_BATCH = 100
BARE_SWEEP = (
    "SELECT id FROM automation_timer WHERE status = 'pending' AND due_at <= %s"
    " ORDER BY due_at LIMIT 200 FOR UPDATE SKIP LOCKED"
)
PLAIN_EVENTS = "SELECT id, location_id FROM business_event WHERE seq > %s ORDER BY seq LIMIT %s"


def _template(slug: str, rules: int) -> str:
    lines = [
        f"name: bench-{slug}",
        'version: "1"',
        "owner: operations_manager",
        "run_as: operations_manager",
        f"locations: [{slug}]",
        "rules:",
        "  - name: moved",
        "    on: {event: stock.moved}",
        "    when: {event.payload.quantity: {gt: 0}}",
        "    steps:",
        "      - {name: note, action: send_message, with: {to: 'role:operations_manager',"
        " subject: moved, body: 'moved {{ event.payload.quantity }}'}}",
    ]
    for n in range(1, rules):
        event = OTHER_EVENTS[n % len(OTHER_EVENTS)]
        lines += [
            f"  - name: rule-{n}",
            f"    on: {{event: {event}}}",
            f"    when: {{all: [{{event.payload.n: {{ge: {n}}}}}, {{case.priority: urgent}}]}}",
            "    steps: [{name: task, action: create_task, with: {kind: bench}}]",
        ]
    return "\n".join(lines) + "\n"


TIMERS = """name: bench-timers
version: "1"
owner: operations_manager
run_as: operations_manager
rules:
  - name: later
    on: {after: {event: case.created, delay: 1h}}
    when: {case.status: never-such}
    steps: [{name: note, action: send_message, with: {to: "role:operations_manager", subject: s, body: b}}]
"""


def _network_file(workdir: Path, locations: int) -> Path:
    lines = ["locations:"] + [
        f"- {{slug: area-{n:03d}, name: Area {n}, timezone: Europe/London}}" for n in range(locations)
    ]
    path = workdir / "areas.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _activate(db: Database, texts: list[str]) -> None:
    with db.transaction() as session:
        for text in texts:
            activate(session, load_text(text), text, actor="bench", reason="benchmark")


def _fill(db: Database, url: str, locations: int, rules: int, timers: int) -> int:
    with db.sessions() as session:
        slugs = list(session.scalars(select(Location.slug).where(Location.slug.like("area-%"))))
    _activate(db, [_template(s, rules // locations) for s in slugs] + [TIMERS])
    template = load_text(TIMERS)
    now = utcnow()
    rng = random.Random(29)
    with psycopg.connect(url.replace("+psycopg", "")) as connection, connection.cursor() as cursor:
        cases = [row[0] for row in cursor.execute("SELECT id FROM service_case LIMIT 5000")]
        with cursor.copy(
            "COPY automation_timer (id, timer_key, workflow, content_hash, rule, next_step, "
            "subject_type, subject_id, depth, due_at, status, created_at) FROM STDIN"
        ) as copy:
            for n in range(timers):
                due = now + dt.timedelta(minutes=rng.randrange(10, 60 * 24 * 30))
                copy.write_row(
                    (
                        uuid.uuid4().hex,
                        f"bench:{n}",
                        template.name,
                        template.content_hash,
                        "later",
                        0,
                        "case",
                        rng.choice(cases),
                        0,
                        due,
                        "pending",
                        now,
                    )
                )
    return timers


def _events(url: str, db: Database, count: int) -> int:
    """``count`` sealed stock.moved events at random area locations; the cursor set before them."""
    with db.sessions() as session:
        places = list(session.scalars(select(Location.id).where(Location.slug.like("area-%"))))
        head = session.scalar(select(func.max(BusinessEvent.seq))) or 0
    rng = random.Random(count)
    now = utcnow()
    with psycopg.connect(url.replace("+psycopg", "")) as connection, connection.cursor() as cursor:
        with cursor.copy(
            "COPY business_event (type, subject_type, subject_id, location_id, actor, payload,"
            " occurred_at, seq, prev_hash, hash) FROM STDIN"
        ) as copy:
            for n in range(count):
                payload = json.dumps({"item": "GLOVES-M", "quantity": rng.randrange(1, 9), "n": n})
                copy.write_row(
                    (
                        "stock.moved",
                        "item",
                        new_id(),
                        rng.choice(places),
                        "bench",
                        payload,
                        now,
                        head + n + 1,
                        "0" * 64,
                        "0" * 64,
                    )
                )
        cursor.execute(
            "INSERT INTO automation_cursor (name, seq, updated_at) VALUES ('events', %s, %s) "
            "ON CONFLICT (name) DO UPDATE SET seq = EXCLUDED.seq",
            (head, now),
        )
    return head


def _plain(url: str, after: int, batch: int = 500) -> int:
    """The reference: what the engine writes per matched event, in plain SQL, batch by batch."""
    done = 0
    with psycopg.connect(url.replace("+psycopg", "")) as connection:
        while True:
            with connection.transaction(), connection.cursor() as cursor:
                rows = cursor.execute(PLAIN_EVENTS, (after, batch)).fetchall()
                if not rows:
                    return done
                now = utcnow()
                messages = [
                    (
                        new_id(),
                        "console",
                        "role:operations_manager",
                        "moved",
                        "moved",
                        location,
                        "queued",
                        now,
                    )
                    for _, location in rows
                ]
                cursor.executemany(
                    "INSERT INTO queued_message (id, channel, recipient, subject, body, location_id,"
                    " status, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                    messages,
                )
                cursor.executemany(
                    "INSERT INTO business_event (type, subject_type, subject_id, location_id, actor,"
                    " payload, occurred_at) VALUES ('message.queued', 'item', %s, %s, 'bench', %s, %s)",
                    [(m[0], m[5], json.dumps({"message_id": m[0]}), now) for m in messages],
                )
                cursor.executemany(
                    "INSERT INTO automation_run (id, run_key, workflow, content_hash, rule, step, action,"
                    " trigger, event_id, depth, status, detail, started_at, finished_at) VALUES"
                    " (%s, %s, 'plain', 'plain', 'moved', 'note', 'send_message', 'stock.moved', %s, 0,"
                    " 'done', '{}', %s, %s)",
                    [(new_id(), f"plain:{event_id}", event_id, now, now) for event_id, _ in rows],
                )
                after += len(rows)  # seq is dense in the benchmark's events
                done += len(rows)


def _matching(db: Database, samples: int) -> tuple[list[float], list[float]]:
    engine = Engine(db)
    timed, bare = [], []
    with db.sessions() as session:
        engine.refresh(session)
        places = list(engine.catalogue.locations)
        cache = FactCache(session)
        rng = random.Random(samples)
        now = utcnow()
        for n in range(samples):
            kind = "stock.moved" if n % 2 else rng.choice(OTHER_EVENTS)
            place = rng.choice(places)
            event = {"type": kind, "payload": {"quantity": 3, "n": n % 30}, "occurred_at": now}
            trigger = Trigger(kind, f"e{n}", event, n, "bench", None, place, None)
            began = time.perf_counter()
            engine.matching(cache, trigger, now)
            timed.append(time.perf_counter() - began)
            began = time.perf_counter()
            engine.catalogue.rules_for(kind, place, ("event", "change"))
            bare.append(time.perf_counter() - began)
    return timed, bare


def _due_timers(url: str, count: int) -> None:
    past = utcnow() - dt.timedelta(seconds=1)
    with psycopg.connect(url.replace("+psycopg", "")) as connection:
        connection.execute(
            "UPDATE automation_timer SET due_at = %s WHERE id IN (SELECT id FROM automation_timer"
            " WHERE status = 'pending' ORDER BY due_at LIMIT %s)",
            (past, count),
        )


def _sweep(db: Database, url: str) -> tuple[float, float, int]:
    _due_timers(url, SWEEP_BATCH)
    with psycopg.connect(url.replace("+psycopg", "")) as connection:
        began = time.perf_counter()
        with connection.transaction():
            found = connection.execute(BARE_SWEEP, (utcnow(),)).fetchall()
            bare = time.perf_counter() - began
            assert len(found) == SWEEP_BATCH  # it only read and locked: the engine claims them next
    engine = Engine(db)
    with db.sessions() as session:
        engine.refresh(session)
    began = time.perf_counter()
    swept = engine.sweep_timers(200)
    return time.perf_counter() - began, bare, swept


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--locations", type=int, default=50)
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--timers", type=int, default=1_000_000)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the seeded database (its URL is printed)")
    parser.add_argument("--database", help="measure on a database seeded by an earlier --keep run")
    args = parser.parse_args()

    def seed(url: str, workdir: Path) -> Database:
        fill = functools.partial(
            _fill, url=url, locations=args.locations, rules=args.rules, timers=args.timers
        )
        return seed_network(url, _network_file(workdir, args.locations), 5000, fill, "timers")

    with network_database(args, seed) as (url, db):
        results = []
        for _ in range(args.rounds):
            timed, bare = _matching(db, args.samples)
            m50, m95 = percentiles(timed)
            _, b95 = percentiles(bare)
            _events(url, db, args.events)
            engine = Engine(db)
            with db.sessions() as session:
                engine.refresh(session)  # the worker's engine has its catalogue loaded
            began = time.perf_counter()
            while engine.process_events(500):
                pass
            engine_rate = args.events / (time.perf_counter() - began)
            plain_head = _events(url, db, args.events)
            began = time.perf_counter()
            assert _plain(url, plain_head) == args.events
            plain_rate = args.events / (time.perf_counter() - began)
            sweep, bare_sweep, swept = _sweep(db, url)
            results.append(
                (
                    m50 * 1000,
                    m95 * 1000,
                    b95 * 1000,
                    engine_rate,
                    plain_rate,
                    engine_rate / plain_rate,
                    sweep * 1000,
                    bare_sweep * 1000,
                    swept,
                )
            )
        columns = (
            "match p50 µs",
            "match p95 µs",
            "index p95 µs",
            "events/s",
            "plain SQL events/s",
            "ratio",
            "sweep ms",
            "bare sweep ms",
            "timers swept",
        )
        console.print(rounds_table(f"Automation on PostgreSQL, {dt.date.today()}", columns, results))


if __name__ == "__main__":
    main()
