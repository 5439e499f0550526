"""Scheduling on SQLite and PostgreSQL: availability within working hours and free resources; a
case scheduled only by booking, back to ready_to_schedule when its appointment is cancelled or
missed, completed by completing it; no resource ever booked twice, under random sequences
(hypothesis) and under concurrent bookings of one slot."""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import threading
import uuid
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from careops.db import Database
from careops.domain.models import Appointment, BusinessEvent, ResourceBooking, ServiceCase
from careops.errors import Conflict, NotFound
from careops.governance.scoping import EVERYWHERE
from careops.orchestration.appointments import book, end_appointment, reschedule
from careops.orchestration.scheduling import availability
from tests.conftest import referral

LONDON = ZoneInfo("Europe/London")


def next_monday(hour: int = 9, minute: int = 0) -> dt.datetime:
    today = dt.datetime.now(LONDON).date()
    monday = today + dt.timedelta(days=7 - today.weekday())
    return dt.datetime.combine(monday, dt.time(hour, minute), LONDON).astimezone(dt.UTC)


def _cases(client: TestClient, count: int, **overrides: object) -> list[str]:
    ids = []
    for _ in range(count):
        patient = {**referral()["patient"], "mrn": f"MRN-{uuid.uuid4().hex[:10]}"}  # type: ignore[dict-item]
        answer = client.post("/api/v1/referrals", json=referral(patient=patient, **overrides))
        assert answer.status_code == 201, answer.text
        ids.append(answer.json()["case_id"])
    return ids


def _status(db: Database, case_id: str) -> str:
    with db.sessions() as session:
        return session.scalars(select(ServiceCase.status).where(ServiceCase.id == case_id)).one()


def test_availability_offers_starts_within_hours_with_free_resources(db: Database) -> None:
    monday = next_monday(0)
    week = monday + dt.timedelta(days=7)
    slots = availability(db, "XRAY-CHEST", "north", monday, week, EVERYWHERE, limit=500).slots
    assert slots, "a week of a demo location has room for a chest X-ray"
    for slot in slots:
        local = slot.starts_at.astimezone(LONDON)
        assert (
            local.weekday() < 5
            and dt.time(8) <= local.time()
            and slot.ends_at.astimezone(LONDON).time() <= dt.time(18)
        )
        assert slot.resources == ("NORTH-XR-1", "NORTH-RAD-1")
        assert slot.ends_at - slot.starts_at == dt.timedelta(minutes=10)
    with pytest.raises(NotFound, match="no location 'nowhere'"):
        availability(db, "XRAY-CHEST", "nowhere", monday, monday + dt.timedelta(days=1), EVERYWHERE)
    at_south = availability(db, "XRAY-CHEST", "south", monday, monday + dt.timedelta(days=1), EVERYWHERE)
    assert (
        at_south.slots == []
        and at_south.unavailable == "south has no x-ray-room, radiographer for XRAY-CHEST"
    )


def test_a_case_is_scheduled_by_booking_and_moves_with_its_appointment(
    client: TestClient, db: Database
) -> None:
    first, second = _cases(client, 2)
    start = next_monday(9)
    refused = client.post(f"/api/v1/cases/{first}/transitions", json={"action": "schedule"})
    assert refused.status_code == 409 and "book" in refused.json()["detail"]
    booked = client.post("/api/v1/appointments", json={"case_id": first, "starts_at": start.isoformat()})
    assert booked.status_code == 201, booked.text
    appointment = booked.json()
    assert appointment["resources"] == ["NORTH-XR-1", "NORTH-RAD-1"] and _status(db, first) == "scheduled"
    taken = client.post("/api/v1/appointments", json={"case_id": second, "starts_at": start.isoformat()})
    assert taken.status_code == 409 and "no free resources" in taken.json()["detail"]  # one X-ray room
    offered = client.get(
        "/api/v1/availability",
        params={"service": "XRAY-CHEST", "location": "north", "from": start.isoformat(),
                "to": (start + dt.timedelta(hours=1)).isoformat()},
    ).json()["slots"]  # fmt: skip
    assert start.isoformat() not in [s["starts_at"] for s in offered]
    cancelled = client.post(
        f"/api/v1/appointments/{appointment['id']}/cancel", json={"reason": "patient asked"}
    )
    assert cancelled.status_code == 200 and _status(db, first) == "ready_to_schedule"
    again = client.post("/api/v1/appointments", json={"case_id": second, "starts_at": start.isoformat()})
    assert again.status_code == 201  # the slot is free again
    done = client.post(f"/api/v1/appointments/{again.json()['id']}/complete")
    # A chest X-ray needs no result, and its NHS checklist (a procedure code) passes at once.
    assert done.status_code == 200 and _status(db, second) == "billing_ready"
    assert client.post(f"/api/v1/appointments/{again.json()['id']}/cancel").status_code == 409
    with db.sessions() as session:
        kinds = session.scalars(
            select(BusinessEvent.type)
            .where(BusinessEvent.subject_type == "appointment")
            .order_by(BusinessEvent.id)
        ).all()
    assert kinds == [
        "appointment.booked",
        "appointment.cancelled",
        "appointment.booked",
        "appointment.completed",
    ]
    off_grid = client.post(
        "/api/v1/appointments",
        json={"case_id": first, "starts_at": (start + dt.timedelta(minutes=2)).isoformat()},
    )
    assert off_grid.status_code == 422


def _no_double_booking(db: Database) -> None:
    """No resource in two live appointments at once, and each holds exactly its own slots."""
    with db.sessions() as session:
        live = session.scalars(select(Appointment).where(Appointment.status == "confirmed")).all()
        held = session.scalar(select(func.count()).select_from(ResourceBooking)) or 0
    assert held == sum(
        len(a.resource_codes) * (a.ends_at - a.starts_at) // dt.timedelta(minutes=5) for a in live
    )
    for resource in {code for a in live for code in a.resource_codes}:
        spans = sorted((a.starts_at, a.ends_at) for a in live if resource in a.resource_codes)
        assert all(earlier[1] <= later[0] for earlier, later in itertools.pairwise(spans)), resource


@hypothesis_settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    steps=st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 11), st.sampled_from(["book", "cancel", "reschedule"])),
        min_size=1,
        max_size=25,
    )
)
def test_random_bookings_reschedules_and_cancellations_never_double_book(
    client: TestClient, db: Database, steps: list[tuple[int, int, str]]
) -> None:
    cases = _cases(client, 4)
    base = next_monday(9)
    for case_index, quarter_hour, action in steps:
        case_id = cases[case_index]
        at = base + dt.timedelta(minutes=5 * quarter_hour)
        with db.sessions() as session:
            mine = session.scalars(
                select(Appointment.id).where(
                    Appointment.case_id == case_id, Appointment.status == "confirmed"
                )
            ).first()
        with contextlib.suppress(Conflict):
            if action == "book":
                book(db, case_id, at, actor="test", scope=EVERYWHERE)
            elif mine and action == "cancel":
                end_appointment(db, mine, "cancel", actor="test", scope=EVERYWHERE)
            elif mine:
                reschedule(db, mine, at, actor="test", scope=EVERYWHERE)
        _no_double_booking(db)
    with db.sessions() as session:  # the next example starts from no appointments
        confirmed = session.scalars(select(Appointment.id).where(Appointment.status == "confirmed")).all()
    for appointment_id in confirmed:
        end_appointment(db, appointment_id, "cancel", actor="test", scope=EVERYWHERE)


def test_concurrent_bookings_of_one_slot_end_with_one_appointment(client: TestClient, db: Database) -> None:
    cases = _cases(client, 12)
    start = next_monday(11)
    outcomes: list[str] = []
    barrier = threading.Barrier(len(cases))

    def attempt(case_id: str) -> None:
        barrier.wait()
        try:
            book(db, case_id, start, actor="test", scope=EVERYWHERE)
            outcomes.append("booked")
        except Conflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=attempt, args=(case_id,)) for case_id in cases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["booked"] + ["conflict"] * (len(cases) - 1)
    _no_double_booking(db)
