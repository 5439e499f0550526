"""The demo's home-care work at ``south``: a nurse's registration expiring soon, the nurses'
shifts for the next two weeks, home-care patients with service plans of visits, and (in the
simulated traffic) plans for new home-care referrals, staffing conflicts and reassignments.

Everything goes through the same service functions as the API and the console.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from zoneinfo import ZoneInfo

from sqlalchemy import select

from careops.db import Database
from careops.domain.master_data import WEEKDAYS
from careops.domain.models import Appointment, Location, Resource, Service, ServiceCase, utcnow
from careops.domain.referrals import ReferralIn
from careops.errors import CareopsError
from careops.governance.scoping import EVERYWHERE
from careops.orchestration.intake import CatalogueCache, IntakeRequest, accept_referral
from careops.orchestration.reference_files import get_record, put_record
from careops.orchestration.scheduling import works_at
from careops.orchestration.service_plans import PlanRequest, create_plan, plan_shift
from careops.orchestration.staffing import ConflictReport, candidates, reassign, report_conflict
from careops.settings import Settings

ACTOR = "demo-supervisor"
SERVICE = "HOME-WOUND"
LOCATION = "south"
ZONES = ("N1", "E4", "W2", "S3")
TIMES = (dt.time(9), dt.time(10, 30), dt.time(13), dt.time(14, 30))
PATTERNS = (("mon", "wed", "fri"), ("tue", "thu"), ("mon", "thu"), ("wed", "fri"))
PATIENTS = (("Maeve", "Doherty"), ("Idris", "Okafor"), ("Lena", "Kowalski"), ("Tomas", "Reyes"))


def _next_monday(today: dt.date) -> dt.date:
    return today + dt.timedelta(days=7 - today.weekday())


def seed_home_care(db: Database, settings: Settings, today: dt.date | None = None) -> int:
    """Seed the home-care work; how many visits the plans booked."""
    today = today or utcnow().date()
    _expire_soon(db, "SOUTH-NURSE-2", today + dt.timedelta(days=21))
    _shifts(db, today)
    catalogue = CatalogueCache(0)
    monday = _next_monday(today)
    visits = 0
    for number, (given, family) in enumerate(PATIENTS):
        case_id = _home_referral(db, settings, catalogue, given, family)
        pattern = [(day, TIMES[number]) for day in PATTERNS[number]]
        staff = "SOUTH-NURSE-1" if number % 2 == 0 else "SOUTH-NURSE-2"
        request = PlanRequest(case_id, ZONES[number], pattern, monday, monday + dt.timedelta(days=11), staff)
        visits += len(create_plan(db, request, actor=ACTOR, scope=EVERYWHERE)["visits"])
    return visits


def _expire_soon(db: Database, code: str, expires: dt.date) -> None:
    """The member of staff's first credential expires on ``expires`` (a renewal is due)."""
    record = get_record(db, "resources", (code,))
    record.pop("retired_at")
    record["credentials"][0]["expires"] = expires.isoformat()
    put_record(db, "resources", record, actor="seed:demo", reason="registration renewal due")


def _shifts(db: Database, today: dt.date) -> None:
    """A shift at ``south`` for each working day of each of its community nurses, two weeks on."""
    with db.sessions() as session:
        zone = ZoneInfo(session.scalars(select(Location.timezone).where(Location.slug == LOCATION)).one())
        nurses = [
            (r.code, r.hours)
            for r in session.scalars(
                select(Resource)
                .where(Resource.staff.is_(True), works_at(session, LOCATION))
                .order_by(Resource.code)
            )
            if "community-nurse" in r.kinds
        ]
    for offset in range(14):
        day = today + dt.timedelta(days=offset)
        for code, hours in nurses:
            for span in hours.get(WEEKDAYS[day.weekday()], []):
                start = dt.datetime.combine(day, dt.time.fromisoformat(span[:5]), zone)
                end = dt.datetime.combine(day, dt.time.fromisoformat(span[6:]), zone)
                plan_shift(db, code, LOCATION, start, end, actor="seed:demo", scope=EVERYWHERE)


def _home_referral(
    db: Database, settings: Settings, catalogue: CatalogueCache, given: str, family: str
) -> str:
    body = {
        "location": LOCATION,
        "service_code": SERVICE,
        "priority": "routine",
        "patient": {
            "mrn": f"HC-{uuid.uuid4().hex[:8].upper()}",
            "given_name": given,
            "family_name": family,
            "birth_date": "1941-03-09",
            "phone": "020 7946 0123",
        },
        "referrer": {"code": "GP-005"},
        "payer_code": "NHS",
    }
    referral = ReferralIn.model_validate(body)
    request = IntakeRequest(raw=referral.model_dump_json().encode(), content_type="application/json",
                            channel="api", principal_id="seed:demo")  # fmt: skip
    answer = accept_referral(db, request, referral, settings, catalogue)
    return str(answer.body["case_id"])


class HomeCareTraffic:
    """One step at a time: plans for home-care cases waiting to be scheduled, now and then a nurse
    off sick for a day of visits, and a supervisor who reassigns most such conflicts to the best
    candidate (the rest wait on the console's *Staffing* page)."""

    def __init__(self, db: Database, rng: random.Random) -> None:
        self.db = db
        self.random = rng

    def step(self, done: dict[str, int]) -> None:
        self._plan(done)
        if self.random.random() < 0.1:
            self._conflict(done)

    def _plan(self, done: dict[str, int]) -> None:
        with self.db.sessions() as session:
            waiting = session.scalars(
                select(ServiceCase.id)
                .join(Service, Service.id == ServiceCase.service_id)
                .where(ServiceCase.status == "ready_to_schedule", Service.home_visit.is_(True))
                .order_by(ServiceCase.id)
                .limit(3)
            ).all()
        for case_id in waiting:
            first = utcnow().date() + dt.timedelta(days=self.random.randint(1, 21))
            pattern = [(day, self.random.choice(TIMES)) for day in self.random.choice(PATTERNS)]
            request = PlanRequest(
                case_id, self.random.choice(ZONES), pattern, first, first + dt.timedelta(days=13)
            )
            try:
                create_plan(self.db, request, actor=ACTOR, scope=EVERYWHERE)
                done["plans"] += 1
            except CareopsError:
                done["plans refused"] += 1  # no nurse free for some visit: tried again another day

    def _conflict(self, done: dict[str, int]) -> None:
        with self.db.sessions() as session:
            soon = session.scalars(
                select(Appointment)
                .where(
                    Appointment.plan_id.is_not(None),
                    Appointment.status == "confirmed",
                    Appointment.starts_at > utcnow(),
                )
                .order_by(Appointment.starts_at)
                .limit(20)
            ).all()
        if not soon:
            return
        visit = self.random.choice(soon)
        report = ConflictReport(visit.resource_codes[0], self.random.choice(("sickness", "vehicle_failure")),
                                appointment_ids=(visit.id,))  # fmt: skip
        try:
            conflict = report_conflict(self.db, report, actor=ACTOR, scope=EVERYWHERE)
            done["staff conflicts"] += 1
            if self.random.random() < 0.7:
                best = candidates(self.db, conflict["id"], EVERYWHERE, limit=1)["candidates"]
                if best:
                    reassign(self.db, conflict["id"], best[0]["staff"], actor=ACTOR, scope=EVERYWHERE)
                    done["reassigned"] += 1
        except CareopsError:
            done["refused"] += 1
