"""Scheduling at the size of a diagnostic network: availability search and the billing check.

    .venv/bin/python -m bench.scheduling [--locations 50] [--devices 200] [--staff 5000]
                                         [--appointments 200000] [--searches 300] [--rounds 3]

On a fresh PostgreSQL database with the demo organisation, ``--locations`` locations each get
their share of ``--devices`` devices (MRI scanners, X-ray rooms, ultrasound rooms, CT scanners)
and of ``--staff`` staff (radiographers and sonographers, each with the credential the services
need), working Monday to Friday 08:00 to 18:00; then about ``--appointments`` appointments, with
their resource bookings, over the 60 days before and the 30 days after today: the scanners and
X-ray rooms mostly full, so that a search has taken slots to skip. Issue 27's targets:

1. *Availability*: ``availability`` (what ``GET /api/v1/availability`` runs) for MRI knee and
   chest X-ray at a random location over the next 14 days, 50 offers at the most: p95 ≤ 50 ms.
   The reference, measured in the same run: the bare SQL query behind it (the bookings of the
   location's candidate resources in the window), on a plain psycopg connection.
2. *Billing check*: ``discrepancies`` of a case (what every completion, result and charge runs),
   on cases of the seeded network: ≤ 5 ms per case.

Each is measured in ``--rounds`` rounds; the table gives each round's p50 and p95 and the median.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from statistics import median, quantiles
from zoneinfo import ZoneInfo

import psycopg
from rich.table import Table
from sqlalchemy import select

from bench.intake import console, drop_database, fresh_database
from careops.db import Database
from careops.demo.seed import seed_demo
from careops.demo.volume import seed_volume
from careops.domain.models import Location, Resource, Service, ServiceCase, new_id
from careops.governance.keys import load_field_keys
from careops.governance.scoping import EVERYWHERE
from careops.migrate import upgrade
from careops.orchestration.billing import discrepancies
from careops.orchestration.reference_files import apply_file, read_reference_file
from careops.orchestration.scheduling import SLOT_MINUTES, availability
from careops.settings import Settings

LONDON = ZoneInfo("Europe/London")
WEEK = {day: ["08:00-18:00"] for day in ("mon", "tue", "wed", "thu", "fri")}
DEVICES = ("mri-scanner", "x-ray-room", "ultrasound", "ct-scanner")
# Per service benched: its minutes, the device and the staff kind it needs.
BOOKED = {"MRI-KNEE": (30, "mri-scanner", "radiographer"), "XRAY-CHEST": (10, "x-ray-room", "radiographer")}
# The query availability runs for the bookings (``scheduling.bookings_query``), as plain SQL.
BOOKINGS_SQL = (
    "SELECT resource_id, min(slot_start), max(slot_start) FROM resource_booking"
    " WHERE resource_id = ANY(%s) AND slot_start >= %s AND slot_start < %s"
    " GROUP BY resource_id, appointment_id"
)


def _network_file(workdir: Path, locations: int, devices: int, staff: int) -> Path:
    """A reference file of the locations and their resources (YAML, as an operator would import)."""
    lines = ["locations:"]
    lines += [f"- {{slug: site-{n:03d}, name: Site {n}, timezone: Europe/London}}" for n in range(locations)]
    lines.append("resources:")
    hours = "{" + ", ".join(f'{day}: ["08:00-18:00"]' for day in WEEK) + "}"
    for n in range(devices):
        site, kind = n % locations, DEVICES[(n // locations) % len(DEVICES)]
        lines.append(
            f"- {{code: D{n:05d}, location: site-{site:03d}, name: {kind} {n}, kinds: [{kind}],"
            f" hours: {hours}}}"
        )
    for n in range(staff):
        kind = "radiographer" if (n // locations) % 5 < 3 else "sonographer"
        services = "[MRI-KNEE, XRAY-CHEST, CT-HEAD]" if kind == "radiographer" else "[US-ABDO]"
        credential = f"{{type: registration, expires: '2030-12-31', services: {services}}}"
        lines.append(
            f"- {{code: S{n:05d}, location: site-{n % locations:03d}, name: Staff {n}, kinds: [{kind}],"
            f" hours: {hours}, staff: true, credentials: [{credential}]}}"
        )
    path = workdir / "network.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def seed_network(url: str, network: Path, cases: int, fill: Callable[[Database], int], what: str) -> Database:
    """A migrated database with the demo organisation and ``cases`` cases, the ``network`` file
    applied (the demo's own locations and resources are retired by it: the network is all there
    is), then ``fill`` (which says how many ``what`` it made, timed), vacuumed and analysed as
    autovacuum keeps a database in use."""
    settings = Settings(database_url=url)
    upgrade(url)
    db = Database(url)
    load_field_keys(db, settings)
    seed_demo(db)
    seed_volume(db, cases)
    read = read_reference_file(network)
    assert not read.problems, read.problems[:3]
    apply_file(db, read, actor="bench", reason=f"benchmark network ({what})")
    started = time.perf_counter()
    count = fill(db)
    console.print(f"seeded {count:,} {what} in {time.perf_counter() - started:.0f} s")
    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as connection:
        connection.execute("VACUUM ANALYZE")
    return db


def _appointments(db: Database, url: str, wanted: int) -> int:
    """Fill each location's devices (and a staff member for each booking) day by day, weekdays
    from 60 days ago to 30 days ahead, until about ``wanted`` appointments; COPY them in."""
    with db.sessions() as session:
        cases = list(session.scalars(select(ServiceCase.id).limit(5000)))
        services = {s.code: s.id for s in session.scalars(select(Service))}
        places = {
            loc.slug: loc.id for loc in session.scalars(select(Location).where(Location.retired_at.is_(None)))
        }
        resources = list(session.scalars(select(Resource).where(Resource.retired_at.is_(None))))
    by_place: dict[tuple[str, str], list[Resource]] = {}
    for resource in resources:
        for kind in resource.kinds:
            by_place.setdefault((resource.location, kind), []).append(resource)
    today = dt.datetime.now(LONDON).date()
    days = [
        today + dt.timedelta(days=d) for d in range(-60, 31) if (today + dt.timedelta(days=d)).weekday() < 5
    ]
    per_day_place = max(1, wanted // (len(days) * len(places)))
    rng = random.Random(27)
    appointments, bookings = [], []
    for slug, place_id in places.items():
        for day in days:
            opening = dt.datetime.combine(day, dt.time(8), LONDON).astimezone(dt.UTC)
            made = 0
            for code, (minutes, device_kind, staff_kind) in BOOKED.items():
                staff = by_place.get((slug, staff_kind), [])
                for device in by_place.get((slug, device_kind), []):
                    for start_minute in range(0, 600 - minutes + 1, minutes):
                        if made >= per_day_place or rng.random() < 0.15:  # 85% full, then stop
                            continue
                        start = opening + dt.timedelta(minutes=start_minute)
                        person = staff[(start_minute // minutes + made) % len(staff)]
                        appointment_id = new_id()
                        past = day < today
                        appointments.append(
                            (appointment_id, rng.choice(cases), place_id, services[code], start,
                             start + dt.timedelta(minutes=minutes), "completed" if past else "confirmed",
                             f'["{device.code}", "{person.code}"]')
                        )  # fmt: skip
                        made += 1
                        if not past:
                            for slot in range(0, minutes, SLOT_MINUTES):
                                at = start + dt.timedelta(minutes=slot)
                                bookings.append((device.id, at, appointment_id))
                                bookings.append((person.id, at, appointment_id))
    now = dt.datetime.now(dt.UTC)
    with psycopg.connect(url.replace("+psycopg", "")) as connection, connection.cursor() as cursor:
        with cursor.copy(
            "COPY appointment (id, case_id, location_id, service_id, starts_at, ends_at, status,"
            " resource_codes, source, created_at, updated_at) FROM STDIN"
        ) as copy:
            for row in appointments:
                copy.write_row((*row, "careops", now, now))
        seen: set[tuple[str, dt.datetime]] = set()
        with cursor.copy(
            "COPY resource_booking (resource_id, slot_start, appointment_id) FROM STDIN"
        ) as copy:
            for resource_id, at, appointment_id in bookings:
                if (resource_id, at) not in seen:  # a staff member double-picked: keep the first
                    seen.add((resource_id, at))
                    copy.write_row((resource_id, at, appointment_id))
    return len(appointments)


@contextmanager
def network_database(
    args: argparse.Namespace, seed: Callable[[str, Path], Database]
) -> Iterator[tuple[str, Database]]:
    """``--database`` as it is (its field keys loaded), or a fresh PostgreSQL database seeded by
    ``seed(url, workdir)``; dropped afterwards unless ``--keep`` (or given), its URL printed then."""
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database or fresh_database("postgres", Path(tmp))
        try:
            if args.database:
                db = Database(url)
                load_field_keys(db, Settings(database_url=url))
            else:
                db = seed(url, Path(tmp))
            yield url, db
            db.dispose()
        finally:
            if args.keep or args.database:
                console.print(f"database kept: {url}")
            else:
                drop_database(url)


def rounds_table(title: str, columns: tuple[str, ...], results: list[tuple[float, ...]]) -> Table:
    """Each round's numbers in a row, then the median of each column."""
    table = Table(title=title)
    for column in ("round", *columns):
        table.add_column(column, justify="right")
    for n, row in enumerate(results, 1):
        table.add_row(str(n), *(f"{value:.2f}" for value in row))
    table.add_row("median", *(f"{median(column):.2f}" for column in zip(*results, strict=True)))
    return table


def percentiles(samples: list[float]) -> tuple[float, float]:
    cuts = quantiles(samples, n=20)
    return median(samples) * 1000, cuts[18] * 1000


def _search_round(db: Database, url: str, searches: int, seed: int) -> tuple[list[float], list[float], int]:
    rng = random.Random(seed)
    with db.sessions() as session:
        slugs = list(session.scalars(select(Location.slug).where(Location.retired_at.is_(None))))
        resources = session.scalars(select(Resource).where(Resource.retired_at.is_(None))).all()
    # What each benched service takes at a location: its devices of the kind and its radiographers.
    candidates = {
        (slug, service): [r.id for r in resources if r.location == slug and {device, staff} & set(r.kinds)]
        for slug in slugs
        for service, (_, device, staff) in BOOKED.items()
    }
    start = dt.datetime.now(dt.UTC)
    end = start + dt.timedelta(days=14)
    timed, bare, offered = [], [], 0
    with psycopg.connect(url.replace("+psycopg", "")) as connection:
        for _ in range(searches):
            slug, service = rng.choice(slugs), rng.choice(list(BOOKED))
            began = time.perf_counter()
            offer = availability(db, service, slug, start, end, EVERYWHERE)
            timed.append(time.perf_counter() - began)
            offered += len(offer.slots)
            began = time.perf_counter()
            connection.execute(BOOKINGS_SQL, (candidates[slug, service], start, end)).fetchall()
            bare.append(time.perf_counter() - began)
    return timed, bare, offered


def _check_round(db: Database, count: int, seed: int) -> list[float]:
    with db.sessions() as session:
        ids = list(session.scalars(select(ServiceCase.id).limit(5000)))
    rng = random.Random(seed)
    timed = []
    for case_id in rng.sample(ids, min(count, len(ids))):
        with db.sessions() as session:
            case = session.get(ServiceCase, case_id)
            assert case is not None
            began = time.perf_counter()
            discrepancies(session, case)
            timed.append(time.perf_counter() - began)
    return timed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--locations", type=int, default=50)
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--staff", type=int, default=5000)
    parser.add_argument("--appointments", type=int, default=200_000)
    parser.add_argument("--cases", type=int, default=5000, help="cases the appointments belong to")
    parser.add_argument("--searches", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = fresh_database("postgres", Path(tmp))
        try:
            network = _network_file(Path(tmp), args.locations, args.devices, args.staff)
            fill = functools.partial(_appointments, url=url, wanted=args.appointments)
            db = seed_network(url, network, args.cases, fill, "appointments")
            results = []
            for round_ in range(args.rounds):
                timed, bare, offered = _search_round(db, url, args.searches, round_)
                checks = _check_round(db, args.searches, round_)
                a50, a95 = percentiles(timed)
                b50, b95 = percentiles(bare)
                c50, c95 = percentiles(checks)
                results.append((a50, a95, b50, b95, a95 / b95, offered / args.searches, c50, c95))
            columns = ("availability p50", "p95", "bare SQL p50", "p95", "ratio p95", "offers/search",
                       "billing check p50", "p95")  # fmt: skip
            title = f"Scheduling on PostgreSQL, {dt.date.today()} (ms)"
            console.print(rounds_table(title, columns, results))
            db.dispose()
        finally:
            drop_database(url)


if __name__ == "__main__":
    main()
