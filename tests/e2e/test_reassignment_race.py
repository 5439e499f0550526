"""Two supervisors, two real `careops serve` processes on one PostgreSQL database, choosing the same
nurse at the same moment for visits at the same time.

Each round has two home-care visits at one time on a Tuesday, one by nurse A and one by nurse B,
and a conflict for each (A and B both off sick). The only nurse who can cover either is C; the two
supervisors reassign "their" conflict to C at once, through different servers. Every round ends
with exactly one reassignment and one 409, C is never booked twice, and every visit still holds
exactly one nurse. Last, one visit's conflict: one supervisor accepts nurse B, the other nurse C,
at once: exactly one wins."""

from __future__ import annotations

import datetime as dt
import os
import threading
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from careops.db import Database
from careops.domain.models import Appointment, BusinessEvent, Resource, ResourceBooking
from tests.conftest import referral
from tests.e2e.test_crash_recovery import Server, cli, free_port
from tests.orchestration.test_scheduling import LONDON, next_monday

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
# Tuesday starts (location time) clear of the demo's seeded Tuesday visit at 10:30, all in its zone.
STARTS = ("08:00", "08:45", "09:30", "11:15", "12:00", "12:45", "13:30", "14:15", "15:00")
ZONE = "E4"


def _visit(client: httpx.Client, day: dt.date, at: str, nurse: str, weekday: str = "tue") -> str:
    patient = {**referral()["patient"], "mrn": f"MRN-{uuid.uuid4().hex[:10]}"}  # type: ignore[dict-item]
    body = {**referral(patient=patient), "location": "south", "service_code": "HOME-WOUND"}
    case_id = client.post("/api/v1/referrals", json=body).json()["case_id"]
    plan = client.post(
        "/api/v1/staffing/plans",
        json={"case_id": case_id, "zone": ZONE, "pattern": [{"weekday": weekday, "time": at}],
              "first_day": day.isoformat(), "last_day": day.isoformat(), "staff": nurse},
    )  # fmt: skip
    assert plan.status_code == 201, plan.text
    [visit] = plan.json()["visits"]
    assert visit["resources"] == [nurse]
    return str(visit["id"])


@pytest.mark.parametrize(
    "database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_two_supervisors_never_double_book_the_nurse_they_both_choose(database_url: str) -> None:
    env = {**os.environ, "CAREOPS_DATABASE_URL": database_url}
    cli(env, "migrate")
    cli(env, "seed", "--demo")
    token = cli(env, "token", "create", "--name", "supervisors", "--all-scopes")
    headers = {"Authorization": f"Bearer {token}"}
    servers = [Server(env, free_port()), Server(env, free_port())]
    tuesday = next_monday(0).astimezone(LONDON).date() + dt.timedelta(days=8)
    answers: list[tuple[int, int, str]] = []
    try:
        for server in servers:
            server.start()
        # Per round, what each supervisor does: reassign which conflict to whom.
        rounds: list[tuple[tuple[str, str], tuple[str, str]]] = []
        with httpx.Client(base_url=f"http://127.0.0.1:{servers[0].port}", headers=headers, timeout=30) as api:
            for at in STARTS:
                pair = []
                for nurse in ("SOUTH-NURSE-1", "SOUTH-NURSE-2"):
                    visit = _visit(api, tuesday, at, nurse)
                    reported = api.post(
                        "/api/v1/staffing/conflicts",
                        json={"staff": nurse, "kind": "sickness", "appointment_ids": [visit]},
                    )
                    assert reported.status_code == 201, reported.text
                    pair.append(reported.json()["id"])
                ranked = api.get(f"/api/v1/staffing/conflicts/{pair[0]}/candidates").json()
                assert [c["staff"] for c in ranked["candidates"]] == ["SOUTH-NURSE-3"]
                rounds.append(((pair[0], "SOUTH-NURSE-3"), (pair[1], "SOUTH-NURSE-3")))
            # Last: one visit, one conflict, and the two supervisors accept different proposals.
            thursday = tuesday + dt.timedelta(days=2)
            visit = _visit(api, thursday, "08:00", "SOUTH-NURSE-1", weekday="thu")
            one = api.post(
                "/api/v1/staffing/conflicts",
                json={"staff": "SOUTH-NURSE-1", "kind": "vehicle_failure", "appointment_ids": [visit]},
            ).json()["id"]
            ranked = api.get(f"/api/v1/staffing/conflicts/{one}/candidates").json()
            assert {c["staff"] for c in ranked["candidates"]} == {"SOUTH-NURSE-2", "SOUTH-NURSE-3"}
            rounds.append(((one, "SOUTH-NURSE-2"), (one, "SOUTH-NURSE-3")))
        lock = threading.Lock()
        go = threading.Barrier(2)

        def supervise(n: int) -> None:
            with httpx.Client(
                base_url=f"http://127.0.0.1:{servers[n].port}", headers=headers, timeout=30
            ) as client:
                for number, pair in enumerate(rounds):
                    conflict, nurse = pair[n]
                    go.wait()
                    answer = client.post(
                        f"/api/v1/staffing/conflicts/{conflict}/reassign", json={"staff": nurse}
                    )
                    with lock:
                        answers.append((number, answer.status_code, answer.json().get("detail", "")))

        threads = [threading.Thread(target=supervise, args=(n,)) for n in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    finally:
        for server in servers:
            server.stop()
    assert len(answers) == 2 * (len(STARTS) + 1)
    for number in range(len(STARTS) + 1):
        statuses = sorted(status for n, status, _ in answers if n == number)
        assert statuses == [200, 409], (number, answers)
    nurse_race = [detail for n, status, detail in answers if status == 409 and n < len(STARTS)]
    assert all("booked" in detail or "taken" in detail for detail in nurse_race), answers
    [last] = [detail for n, status, detail in answers if status == 409 and n == len(STARTS)]
    assert "resolved" in last
    _check_bookings(database_url, tuesday)


def _check_bookings(database_url: str, tuesday: dt.date) -> None:
    db = Database(database_url)
    with db.sessions() as session:
        nurse_c = session.scalars(select(Resource.id).where(Resource.code == "SOUTH-NURSE-3")).one()
        midnight = dt.datetime.combine(tuesday, dt.time(), LONDON)
        held: dict[str, Any] = dict(
            session.execute(
                select(ResourceBooking.appointment_id, func.count())
                .where(
                    ResourceBooking.resource_id == nurse_c,
                    ResourceBooking.slot_start >= midnight,
                    ResourceBooking.slot_start < midnight + dt.timedelta(days=1),
                )
                .group_by(ResourceBooking.appointment_id)
            ).all()
        )
        # Nurse C took one visit of each Tuesday round: 45 minutes, nine slots each.
        assert len(held) == len(STARTS) and set(held.values()) == {9}
        visits = session.scalars(
            select(Appointment).where(Appointment.zone == ZONE, Appointment.starts_at >= dt.datetime.combine(
                tuesday, dt.time(), LONDON), Appointment.plan_id.is_not(None))
        ).all()  # fmt: skip
        ours = [
            v
            for v in visits
            if v.starts_at.astimezone(LONDON).date() == tuesday
            and v.starts_at.astimezone(LONDON).strftime("%H:%M") in STARTS
        ]
        assert len(ours) == 2 * len(STARTS)
        for visit in ours:
            nurses = session.scalar(
                select(func.count(func.distinct(ResourceBooking.resource_id))).where(
                    ResourceBooking.appointment_id == visit.id
                )
            )
            assert nurses == 1 and len(visit.resource_codes) == 1
        reassigned = session.scalar(
            select(func.count()).select_from(BusinessEvent).where(BusinessEvent.type == "staff.reassigned")
        )
        assert reassigned == len(STARTS) + 1
    db.dispose()
