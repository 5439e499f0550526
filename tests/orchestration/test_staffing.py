"""Staffing on SQLite and PostgreSQL: shifts, home-care service plans booked whole, conflicts
answered with ranked candidates (credential, role, location, bookings and travel, contracted
hours), reassignment that moves the visits' slots atomically with ``staff.reassigned``, and
credential expiry warnings written once."""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from typing import Any

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import func, select, update

from careops.db import Database
from careops.domain.models import (
    Appointment,
    BusinessEvent,
    ExceptionItem,
    Resource,
    ResourceBooking,
)
from careops.orchestration.credentials import warn_expiring_credentials
from tests.conftest import referral
from tests.orchestration.test_scheduling import LONDON, _status, next_monday

STAFF = "/api/v1/staffing"


def _home_case(client: TestClient) -> str:
    patient = {**referral()["patient"], "mrn": f"MRN-{uuid.uuid4().hex[:10]}"}  # type: ignore[dict-item]
    body = {**referral(patient=patient), "location": "south", "service_code": "HOME-WOUND"}
    answer = client.post("/api/v1/referrals", json=body)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["case_id"])


def _plan(client: TestClient, days: list[str], *, staff: str | None, zone: str = "N1", time: str = "09:00",
          weeks: int = 1) -> dict[str, Any]:  # fmt: skip
    first = next_monday(0).astimezone(LONDON).date()
    body = {
        "case_id": _home_case(client),
        "zone": zone,
        "pattern": [{"weekday": d, "time": time} for d in days],
        "first_day": first.isoformat(),
        "last_day": (first + dt.timedelta(days=7 * weeks - 1)).isoformat(),
        "staff": staff,
    }
    answer = client.post(f"{STAFF}/plans", json=body)
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def _report(client: TestClient, staff: str, visits: list[str], kind: str = "sickness") -> dict[str, Any]:
    answer = client.post(f"{STAFF}/conflicts", json={"staff": staff, "kind": kind, "appointment_ids": visits})
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def _events(db: Database, kind: str) -> list[dict[str, Any]]:
    with db.sessions() as session:
        return [
            dict(payload)
            for payload in session.scalars(
                select(BusinessEvent.payload).where(BusinessEvent.type == kind).order_by(BusinessEvent.id)
            )
        ]


def test_a_service_plan_books_its_visits_with_the_named_nurse_and_keeps_the_case_scheduled(
    client: TestClient, db: Database
) -> None:
    plan = _plan(client, ["mon", "wed"], staff="SOUTH-NURSE-2", weeks=2)
    visits = plan["visits"]
    assert len(visits) == 4 and all(v["resources"] == ["SOUTH-NURSE-2"] for v in visits)
    local = [dt.datetime.fromisoformat(v["starts_at"]).astimezone(LONDON) for v in visits]
    assert [t.strftime("%a %H:%M") for t in local] == ["Mon 09:00", "Wed 09:00", "Mon 09:00", "Wed 09:00"]
    assert _status(db, plan["case_id"]) == "scheduled"
    assert client.get(f"{STAFF}/plans/{plan['id']}").json()["visits"] == visits
    done = client.post(f"/api/v1/appointments/{visits[0]['id']}/complete")
    assert done.status_code == 200, done.text
    assert _status(db, plan["case_id"]) == "scheduled"  # three visits to go
    # The same nurse at the same time for another patient: the plan is refused whole.
    clash = client.post(
        f"{STAFF}/plans",
        json={
            "case_id": _home_case(client), "zone": "E4", "pattern": [{"weekday": "wed", "time": "09:00"}],
            "first_day": local[0].date().isoformat(), "last_day": local[1].date().isoformat(),
            "staff": "SOUTH-NURSE-2",
        },
    )  # fmt: skip
    assert clash.status_code == 201 and clash.json()["visits"][0]["resources"] == ["SOUTH-NURSE-1"]
    with db.sessions() as session:
        assert (
            session.scalar(
                select(func.count()).select_from(Appointment).where(Appointment.plan_id.is_not(None))
            )
            == 5
        )


def test_candidates_are_ranked_and_a_reassignment_moves_the_visits_atomically(
    client: TestClient, db: Database
) -> None:
    # Tuesday visits: nurse C (part-time, based at central, also at south) works Tuesdays.
    plan = _plan(client, ["tue"], staff="SOUTH-NURSE-1", time="10:00")
    [visit] = plan["visits"]
    conflict = _report(client, "SOUTH-NURSE-1", [visit["id"]])
    assert conflict["status"] == "open" and [v["id"] for v in conflict["visits"]] == [visit["id"]]
    with db.sessions() as session:
        item = session.scalars(select(ExceptionItem).where(ExceptionItem.queue == "staffing")).one()
        assert item.status == "open" and item.reason_codes == ["staff_conflict:sickness"]
    ranked = client.get(f"{STAFF}/conflicts/{conflict['id']}/candidates").json()
    codes = [c["staff"] for c in ranked["candidates"]]
    assert set(codes) == {"SOUTH-NURSE-2", "SOUTH-NURSE-3"}
    scores = [c["score"] for c in ranked["candidates"]]
    assert scores == sorted(scores, reverse=True)
    for candidate in ranked["candidates"]:
        expected = round(
            100
            * (0.5 * candidate["continuity"] + 0.3 * candidate["travel"] + 0.2 * candidate["hours_balance"])
        )
        assert abs(candidate["score"] - expected) <= 1
    assert "SOUTH-NURSE-1" not in codes  # the absent member is no candidate
    moved = client.post(f"{STAFF}/conflicts/{conflict['id']}/reassign", json={"staff": "SOUTH-NURSE-3"})
    assert moved.status_code == 200, moved.text
    assert moved.json()["status"] == "resolved" and moved.json()["reassigned_to"] == "SOUTH-NURSE-3"
    with db.sessions() as session:
        holders = set(
            session.scalars(
                select(Resource.code)
                .join(ResourceBooking, ResourceBooking.resource_id == Resource.id)
                .where(ResourceBooking.appointment_id == visit["id"])
            )
        )
        assert holders == {"SOUTH-NURSE-3"}
        assert session.get(Appointment, visit["id"]).resource_codes == ["SOUTH-NURSE-3"]  # type: ignore[union-attr]
        assert (
            session.scalars(select(ExceptionItem.status).where(ExceptionItem.id == item.id)).one()
            == "resolved"
        )
    [event] = _events(db, "staff.reassigned")
    assert (
        event["from"] == "SOUTH-NURSE-1"
        and event["to"] == "SOUTH-NURSE-3"
        and event["conflict_id"] == conflict["id"]
    )
    again = client.post(f"{STAFF}/conflicts/{conflict['id']}/reassign", json={"staff": "SOUTH-NURSE-2"})
    assert again.status_code == 409 and "resolved" in again.json()["detail"]
    timeline = [e["type"] for e in client.get(f"/api/v1/cases/{plan['case_id']}").json()["timeline"]]
    assert "staff.reassigned" in timeline


def test_candidates_exclude_the_booked_the_uncredentialed_the_far_and_the_over_contract(
    client: TestClient, db: Database
) -> None:
    plan = _plan(client, ["tue"], staff="SOUTH-NURSE-1", zone="N1", time="10:00")
    [visit] = plan["visits"]
    start = dt.datetime.fromisoformat(visit["starts_at"])
    # Nurse B has a visit in another zone that ends 15 minutes before: no time to travel (30).
    other = _plan(client, ["tue"], staff="SOUTH-NURSE-2", zone="E4", time="09:00")
    assert other["visits"][0]["resources"] == ["SOUTH-NURSE-2"]
    # Nurse C is contracted for 0 hours this week.
    with db.transaction() as session:
        session.execute(update(Resource).where(Resource.code == "SOUTH-NURSE-3").values(weekly_hours=0))
    conflict = _report(client, "SOUTH-NURSE-1", [visit["id"]])
    ranked = client.get(f"{STAFF}/conflicts/{conflict['id']}/candidates").json()
    assert ranked["candidates"] == []
    assert "travel" in ranked["unavailable"]["SOUTH-NURSE-2"]
    assert "contracted" in ranked["unavailable"]["SOUTH-NURSE-3"]
    refused = client.post(f"{STAFF}/conflicts/{conflict['id']}/reassign", json={"staff": "SOUTH-NURSE-2"})
    assert refused.status_code == 409 and "travel" in refused.json()["detail"]
    # Nurse C back on contract but with the credential expired the day before the visit.
    day_before = (start.astimezone(LONDON).date() - dt.timedelta(days=1)).isoformat()
    with db.transaction() as session:
        nurse = session.scalars(select(Resource).where(Resource.code == "SOUTH-NURSE-3")).one()
        nurse.weekly_hours = 16
        nurse.credentials = [{**nurse.credentials[0], "expires": day_before}]
    ranked = client.get(f"{STAFF}/conflicts/{conflict['id']}/candidates").json()
    assert "credential" in ranked["unavailable"]["SOUTH-NURSE-3"]
    nobody = client.post(f"{STAFF}/conflicts/{conflict['id']}/reassign", json={"staff": "NOBODY-1"})
    assert nobody.status_code == 404
    with db.sessions() as session:  # nothing moved
        assert session.get(Appointment, visit["id"]).resource_codes == ["SOUTH-NURSE-1"]  # type: ignore[union-attr]
    withdrawn = client.post(f"{STAFF}/conflicts/{conflict['id']}/withdraw", json={"reason": "back at work"})
    assert withdrawn.status_code == 200 and withdrawn.json()["status"] == "withdrawn"
    assert client.get(f"{STAFF}/conflicts").json()["items"] == []


def test_shifts_never_overlap_and_a_conflict_over_a_shift_takes_its_visits(
    client: TestClient, db: Database
) -> None:
    plan = _plan(client, ["mon"], staff="SOUTH-NURSE-1")
    monday = next_monday(8)
    shift = {"staff": "SOUTH-NURSE-1", "location": "south", "starts_at": monday.isoformat(),
             "ends_at": (monday + dt.timedelta(hours=8)).isoformat()}  # fmt: skip
    made = client.post(f"{STAFF}/shifts", json=shift)
    assert made.status_code == 201, made.text
    overlapping = {**shift, "starts_at": (monday + dt.timedelta(hours=4)).isoformat(),
                   "ends_at": (monday + dt.timedelta(hours=10)).isoformat()}  # fmt: skip
    assert client.post(f"{STAFF}/shifts", json=overlapping).status_code == 409
    backwards = {**shift, "ends_at": (monday - dt.timedelta(hours=1)).isoformat()}
    assert client.post(f"{STAFF}/shifts", json=backwards).status_code == 422
    listed = client.get(
        f"{STAFF}/shifts", params={"location": "south", "from": monday.isoformat(),
                                    "to": (monday + dt.timedelta(days=1)).isoformat()}
    ).json()["items"]  # fmt: skip
    assert [s["id"] for s in listed] == [made.json()["id"]]
    conflict = client.post(
        f"{STAFF}/conflicts",
        json={"staff": "SOUTH-NURSE-1", "kind": "vehicle_failure", "shift_id": made.json()["id"]},
    )
    assert conflict.status_code == 201, conflict.text
    assert [v["id"] for v in conflict.json()["visits"]] == [plan["visits"][0]["id"]]
    empty = client.post(
        f"{STAFF}/conflicts",
        json={"staff": "SOUTH-NURSE-2", "kind": "sickness", "starts_at": monday.isoformat(),
              "ends_at": (monday + dt.timedelta(hours=2)).isoformat()},
    )  # fmt: skip
    assert empty.status_code == 409 and "no open visit" in empty.json()["detail"]
    assert [e["kind"] for e in _events(db, "staff.conflict_reported")] == ["vehicle_failure"]


def test_credential_expiry_is_warned_once_ahead_of_time(db: Database) -> None:
    today = dt.date(2026, 12, 7)
    with db.transaction() as session:
        nurse = session.scalars(select(Resource).where(Resource.code == "SOUTH-NURSE-2")).one()
        nurse.credentials = [{**nurse.credentials[0], "expires": "2026-12-28"}]
    assert warn_expiring_credentials(db, 30, today) == 1
    assert warn_expiring_credentials(db, 30, today + dt.timedelta(days=1)) == 0  # once per credential
    [warning] = _events(db, "staff.credential_expiring")
    assert warning == {
        "staff": "SOUTH-NURSE-2", "type": "NMC registered nurse", "number": "NMC-91C7",
        "expires": "2026-12-28", "days_left": 21,
    }  # fmt: skip
    with db.sessions() as session:
        assert session.scalars(
            select(ExceptionItem.reason_codes).where(ExceptionItem.queue == "staffing")
        ).one() == ["credential_expiring"]
    assert warn_expiring_credentials(db, 10, today) == 0  # not within 10 days


def _conflict_in(client: TestClient, status: str, at: str) -> str:
    """A conflict over a fresh Tuesday visit of nurse A, taken to ``status``."""
    [visit] = _plan(client, ["tue"], staff="SOUTH-NURSE-1", time=at)["visits"]
    conflict = _report(client, "SOUTH-NURSE-1", [visit["id"]])["id"]
    if status == "resolved":
        assert (
            client.post(f"{STAFF}/conflicts/{conflict}/reassign", json={"staff": "SOUTH-NURSE-2"}).status_code
            == 200
        )
    elif status == "withdrawn":
        assert client.post(f"{STAFF}/conflicts/{conflict}/withdraw", json={}).status_code == 200
    return str(conflict)


def test_each_conflict_step_from_each_status(client: TestClient, db: Database) -> None:
    """open → resolved (reassign) or withdrawn (withdraw); nothing leaves resolved or withdrawn."""
    times = iter(f"{8 + 45 * n // 60:02d}:{45 * n % 60:02d}" for n in range(12))
    for status in ("open", "resolved", "withdrawn"):
        for step, body in (("reassign", {"staff": "SOUTH-NURSE-3"}), ("withdraw", {})):
            conflict = _conflict_in(client, status, next(times))
            before = len(_events(db, "staff.conflict_closed"))
            answer = client.post(f"{STAFF}/conflicts/{conflict}/{step}", json=body)
            if status == "open":
                assert answer.status_code == 200, (status, step, answer.text)
                assert answer.json()["status"] == ("resolved" if step == "reassign" else "withdrawn")
                assert len(_events(db, "staff.conflict_closed")) == before + 1
            else:
                assert answer.status_code == 409 and status in answer.json()["detail"], (status, step)
                assert len(_events(db, "staff.conflict_closed")) == before


TUESDAY_STARTS = ("08:00", "08:45", "09:30", "10:15", "11:00", "11:45")


@hypothesis_settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    steps=st.lists(
        st.tuples(st.integers(0, 5), st.sampled_from(["SOUTH-NURSE-1", "SOUTH-NURSE-2", "SOUTH-NURSE-3"])),
        min_size=1,
        max_size=12,
    )
)
def test_random_conflicts_and_reassignments_never_double_book_anyone(
    client: TestClient, db: Database, steps: list[tuple[int, str]]
) -> None:
    with db.sessions() as session:
        visits = list(
            session.scalars(
                select(Appointment.id).where(Appointment.plan_id.is_not(None)).order_by(Appointment.starts_at)
            )
        )
    if not visits:  # the examples share the database: the six visits are booked once
        for number, at in enumerate(TUESDAY_STARTS):
            nurse = "SOUTH-NURSE-1" if number % 2 else "SOUTH-NURSE-2"
            visits += [
                v["id"] for v in _plan(client, ["tue"], staff=nurse, time=at, zone=f"Z{number % 3}")["visits"]
            ]
    for index, target in steps:
        with db.sessions() as session:
            holder = session.get(Appointment, visits[index]).resource_codes[0]  # type: ignore[union-attr]
        reported = client.post(
            f"{STAFF}/conflicts",
            json={"staff": holder, "kind": "overlap", "appointment_ids": [visits[index]]},
        )
        if reported.status_code != 201:
            assert reported.status_code == 409  # an open conflict covers it already
            continue
        moved = client.post(f"{STAFF}/conflicts/{reported.json()['id']}/reassign", json={"staff": target})
        assert moved.status_code in (200, 409), moved.text
    with db.sessions() as session:
        rows = session.execute(
            select(Appointment, Resource.code)
            .join(ResourceBooking, ResourceBooking.appointment_id == Appointment.id)
            .join(Resource, Resource.id == ResourceBooking.resource_id)
            .where(Appointment.id.in_(visits))
            .distinct()
        ).all()
    holders: dict[str, set[str]] = {}
    spans: dict[str, list[tuple[dt.datetime, dt.datetime, str | None]]] = {}
    for visit, code in rows:
        holders.setdefault(visit.id, set()).add(code)
        assert visit.resource_codes == [code]  # the record names the one nurse holding its slots
        spans.setdefault(code, []).append((visit.starts_at, visit.ends_at, visit.zone))
    assert all(len(codes) == 1 for codes in holders.values()) and len(holders) == len(visits)
    for code, taken in spans.items():
        taken.sort()
        for (_, end, zone), (start, _, next_zone) in itertools.pairwise(taken):
            gap = dt.timedelta(minutes=0 if zone == next_zone else 30)
            assert end + gap <= start, f"{code} cannot make it from {zone} to {next_zone}"
