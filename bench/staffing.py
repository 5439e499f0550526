"""Candidate search at the size of a home-care operator: who can take a sick nurse's visits.

    .venv/bin/python -m bench.staffing [--locations 50] [--staff 5000] [--visits 200000]
                                       [--searches 200] [--rounds 3] [--keep | --database URL]

(``bench.homecare`` runs it after the stock moves.)

On a fresh PostgreSQL database with the demo organisation, ``--locations`` locations each get
their share of ``--staff`` community nurses (each credentialed for home wound care, contracted
for 37 hours, working Monday to Friday 08:00 to 18:00), then about ``--visits`` home visits of
45 minutes in eight zones, with their bookings, over the 60 days before and the 30 days after
today. Conflicts are reported for random nurses' days of visits to come. Issue 28's target:
``candidates`` (what ``GET /api/v1/staffing/conflicts/{id}/candidates`` runs: every rule, the
travel check and the score) p95 ≤ 50 ms. The reference, in the same run: the fastest honest plain
SQL for its core, on psycopg: the nurses at the location with the role, none of whose bookings
overlaps the visits' span, with their week's booked slots.

Each is measured in ``--rounds`` rounds; the table gives each round's p50 and p95 and the median.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import random
import time
from pathlib import Path

import psycopg
from sqlalchemy import select

from bench.intake import console
from bench.scheduling import LONDON, network_database, percentiles, rounds_table, seed_network
from careops.db import Database
from careops.domain.models import Appointment, Location, Resource, Service, ServiceCase, new_id
from careops.governance.scoping import EVERYWHERE
from careops.orchestration.scheduling import SLOT_MINUTES
from careops.orchestration.staffing import ConflictReport, candidates, report_conflict

ZONES = tuple(f"Z{n}" for n in range(8))
MINUTES = 45
REFERENCE_SQL = """
SELECT r.id,
       (SELECT count(*) FROM resource_booking w
         WHERE w.resource_id = r.id AND w.slot_start >= %(week)s AND w.slot_start < %(week_end)s)
  FROM resource r
 WHERE r.staff AND r.retired_at IS NULL AND r.location = %(location)s AND r.id <> %(absent)s
   AND r.kinds @> '["community-nurse"]'
   AND NOT EXISTS (SELECT 1 FROM resource_booking b
                    WHERE b.resource_id = r.id AND b.slot_start >= %(start)s AND b.slot_start < %(end)s)
"""


def _network_file(workdir: Path, locations: int, staff: int) -> Path:
    hours = "{" + ", ".join(f'{day}: ["08:00-18:00"]' for day in ("mon", "tue", "wed", "thu", "fri")) + "}"
    lines = ["locations:"]
    lines += [f"- {{slug: area-{n:03d}, name: Area {n}, timezone: Europe/London}}" for n in range(locations)]
    lines.append("resources:")
    credential = "{type: NMC registered nurse, expires: '2030-12-31', services: [HOME-WOUND]}"
    for n in range(staff):
        lines.append(
            f"- {{code: N{n:05d}, location: area-{n % locations:03d}, name: Nurse {n},"
            f" kinds: [community-nurse], hours: {hours}, staff: true, weekly_hours: 37,"
            f" credentials: [{credential}]}}"
        )
    path = workdir / "nurses.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _visits(db: Database, url: str, wanted: int) -> int:
    """Each nurse's share of the visits on random weekdays 08:00 to 17:15, in random zones; COPY in."""
    with db.sessions() as session:
        cases = list(session.scalars(select(ServiceCase.id).limit(5000)))
        service = session.scalars(select(Service.id).where(Service.code == "HOME-WOUND")).one()
        places = {loc.slug: loc.id for loc in session.scalars(select(Location))}
        nurses = list(
            session.scalars(
                select(Resource).where(Resource.location.like("area-%"), Resource.staff.is_(True))
            )
        )
    today = dt.datetime.now(LONDON).date()
    days = [
        today + dt.timedelta(days=d) for d in range(-60, 31) if (today + dt.timedelta(days=d)).weekday() < 5
    ]
    rng = random.Random(28)
    per_nurse = max(1, wanted // len(nurses))
    now = dt.datetime.now(dt.UTC)
    made = 0
    with psycopg.connect(url.replace("+psycopg", "")) as connection, connection.cursor() as cursor:
        appointments, bookings = [], []
        for nurse in nurses:
            taken: set[tuple[dt.date, int]] = set()
            while len(taken) < per_nurse:
                taken.add((rng.choice(days), rng.randrange(0, 12)))  # one of twelve 45-minute starts
            for day, slot in taken:
                start = dt.datetime.combine(day, dt.time(8), LONDON).astimezone(dt.UTC) + dt.timedelta(
                    minutes=MINUTES * slot
                )
                appointment_id = new_id()
                appointments.append(
                    (appointment_id, rng.choice(cases), places[nurse.location], service, start,
                     start + dt.timedelta(minutes=MINUTES), "completed" if day < today else "confirmed",
                     f'["{nurse.code}"]', "careops", rng.choice(ZONES), start, now, now)
                )  # fmt: skip
                bookings += [
                    (nurse.id, start + dt.timedelta(minutes=m), appointment_id)
                    for m in range(0, MINUTES, SLOT_MINUTES)
                ]
        with cursor.copy(
            "COPY appointment (id, case_id, location_id, service_id, starts_at, ends_at, status,"
            " resource_codes, source, zone, held_from, created_at, updated_at) FROM STDIN"
        ) as copy:
            for row in appointments:
                copy.write_row(row)
        with cursor.copy(
            "COPY resource_booking (resource_id, slot_start, appointment_id) FROM STDIN"
        ) as copy:
            for row in bookings:
                copy.write_row(row)
        made = len(appointments)
    return made


def _conflicts(db: Database, count: int) -> list[str]:
    """Conflicts over random nurses' visits to come, one visit each (a day's, when it has more)."""
    with db.sessions() as session:
        future = session.execute(
            select(Appointment.id, Appointment.resource_codes)
            .where(Appointment.status == "confirmed", Appointment.zone.is_not(None))
            .order_by(Appointment.id)
            .limit(count * 3)
        ).all()
    made: list[str] = []
    for appointment_id, codes in future:
        report = ConflictReport(codes[0], "sickness", appointment_ids=(appointment_id,))
        try:
            made.append(report_conflict(db, report, actor="bench", scope=EVERYWHERE)["id"])
        except Exception:  # noqa: S112 - a visit already in a conflict: take the next
            continue
        if len(made) == count:
            break
    return made


def _round(db: Database, url: str, conflicts: list[str]) -> tuple[list[float], list[float], int]:
    timed, bare, found = [], [], 0
    with psycopg.connect(url.replace("+psycopg", "")) as connection:
        for conflict_id in conflicts:
            began = time.perf_counter()
            answer = candidates(db, conflict_id, EVERYWHERE)
            timed.append(time.perf_counter() - began)
            found += len(answer["candidates"])
            [visit] = answer["visits"]
            start = dt.datetime.fromisoformat(visit["starts_at"])
            end = dt.datetime.fromisoformat(visit["ends_at"])
            monday = start.astimezone(LONDON).date() - dt.timedelta(days=start.astimezone(LONDON).weekday())
            week = dt.datetime.combine(monday, dt.time(), LONDON)
            row = connection.execute(
                "SELECT r.location, r.id FROM resource r WHERE r.code = %s", (answer["staff"],)
            ).fetchone()
            assert row is not None
            began = time.perf_counter()
            margin = dt.timedelta(minutes=30)
            span = {"start": start - margin, "end": end + margin}
            week_span = {"week": week, "week_end": week + dt.timedelta(days=7)}
            connection.execute(
                REFERENCE_SQL, {"location": row[0], "absent": row[1], **span, **week_span}
            ).fetchall()
            bare.append(time.perf_counter() - began)
    return timed, bare, found


def add_network_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--locations", type=int, default=50)
    parser.add_argument("--staff", type=int, default=5000)
    parser.add_argument("--visits", type=int, default=200_000)
    parser.add_argument("--searches", type=int, default=200)
    parser.add_argument("--keep", action="store_true", help="keep the seeded database (its URL is printed)")
    parser.add_argument("--database", help="measure on a database seeded by an earlier --keep run")


def measure_candidates(args: argparse.Namespace) -> None:
    """Seed the network (or take ``--database``), report conflicts, time ``candidates`` and the
    plain SQL in ``--rounds`` rounds, and print the table."""

    def seed(url: str, workdir: Path) -> Database:
        network = _network_file(workdir, args.locations, args.staff)
        return seed_network(
            url, network, 5000, functools.partial(_visits, url=url, wanted=args.visits), "visits"
        )

    with network_database(args, seed) as (url, db):
        conflicts = _conflicts(db, args.searches)
        results = []
        for _ in range(args.rounds):
            timed, bare, found = _round(db, url, conflicts)
            c50, c95 = percentiles(timed)
            b50, b95 = percentiles(bare)
            results.append((c50, c95, b50, b95, c95 / b95, found / len(conflicts)))
        columns = ("candidates p50", "p95", "plain SQL p50", "p95", "ratio p95", "candidates/search")
        console.print(
            rounds_table(f"Candidate search on PostgreSQL, {dt.date.today()} (ms)", columns, results)
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_network_arguments(parser)
    parser.add_argument("--rounds", type=int, default=3)
    measure_candidates(parser.parse_args())


if __name__ == "__main__":
    main()
