"""Appointments on SQLite and PostgreSQL: proposed then confirmed, rescheduled, preparation time
held, closures kept, staff booked only with a valid credential (also by the database's trigger,
whatever writes), home visits apart by the travel time between zones; and the appointment records
made from the SIU events of earlier versions (migration 0017)."""

from __future__ import annotations

import datetime as dt
import importlib
import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from careops.db import Database
from careops.domain.events import Event, EventType, record_events
from careops.domain.models import Appointment, Location, Resource, ResourceBooking, ServiceCase
from careops.governance.scoping import EVERYWHERE
from careops.orchestration.scheduling import availability
from tests.conftest import referral
from tests.orchestration.test_scheduling import LONDON, _cases, _status, next_monday


def _post(client: TestClient, body: dict[str, object]) -> dict[str, object]:
    answer = client.post("/api/v1/appointments", json=body)
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def test_a_proposal_holds_its_resources_until_confirmed_and_can_be_moved(
    client: TestClient, db: Database
) -> None:
    first, second = _cases(client, 2)
    start = next_monday(9)
    proposed = _post(client, {"case_id": first, "starts_at": start.isoformat(), "propose": True})
    assert proposed["status"] == "proposed" and _status(db, first) == "ready_to_schedule"
    held = client.post("/api/v1/appointments", json={"case_id": second, "starts_at": start.isoformat()})
    assert held.status_code == 409  # the proposal holds the X-ray room
    again = client.post("/api/v1/appointments", json={"case_id": first, "starts_at": start.isoformat()})
    assert again.status_code == 409 and "open appointment" in again.json()["detail"]
    later = start + dt.timedelta(hours=1)
    moved = client.patch(f"/api/v1/appointments/{proposed['id']}", json={"starts_at": later.isoformat()})
    assert moved.status_code == 200 and moved.json()["starts_at"] == later.isoformat()
    assert (
        client.post(
            "/api/v1/appointments", json={"case_id": second, "starts_at": start.isoformat()}
        ).status_code
        == 201
    )
    taken = client.patch(f"/api/v1/appointments/{proposed['id']}", json={"starts_at": start.isoformat()})
    assert taken.status_code == 409  # it stays where it was
    assert client.get(f"/api/v1/cases/{first}").json()["appointments"][0]["starts_at"] == later.isoformat()
    confirmed = client.post(f"/api/v1/appointments/{proposed['id']}/confirm")
    assert confirmed.status_code == 200 and _status(db, first) == "scheduled"
    assert client.post(f"/api/v1/appointments/{proposed['id']}/confirm").status_code == 409
    kinds = [e["type"] for e in client.get(f"/api/v1/cases/{first}").json()["timeline"]]
    assert [k for k in kinds if k.startswith("appointment.")] == [
        "appointment.proposed",
        "appointment.rescheduled",
        "appointment.confirmed",
    ]


def test_preparation_time_holds_the_resources_before_the_start(client: TestClient, db: Database) -> None:
    [case_id] = _cases(client, 1, service_code="MRI-KNEE")
    start = next_monday(10)
    booked = _post(client, {"case_id": case_id, "starts_at": start.isoformat()})
    with db.sessions() as session:
        slots = sorted(
            session.scalars(
                select(ResourceBooking.slot_start).where(ResourceBooking.appointment_id == booked["id"])
            )
        )
    assert slots[0] == start - dt.timedelta(minutes=10) and slots[-1] == start + dt.timedelta(minutes=25)
    # The first start of the day leaves room for the preparation: 08:10, not 08:00.
    monday = next_monday(0)
    offered = availability(db, "MRI-KNEE", "north", monday, monday + dt.timedelta(days=1), EVERYWHERE).slots
    assert offered[0].starts_at.astimezone(LONDON).time() == dt.time(8, 15)


def test_closed_days_offer_nothing(db: Database) -> None:
    monday = next_monday(0)
    day = monday.astimezone(LONDON).date().isoformat()
    with db.transaction() as session:  # central closed that Monday, north open
        session.execute(update(Location).where(Location.slug == "central").values(closures=[{"first": day}]))
    closed = availability(db, "XRAY-CHEST", "central", monday, monday + dt.timedelta(days=1), EVERYWHERE)
    assert closed.slots == []
    open_day = availability(db, "XRAY-CHEST", "north", monday, monday + dt.timedelta(days=1), EVERYWHERE)
    assert open_day.slots
    tuesday = availability(
        db, "XRAY-CHEST", "central", monday + dt.timedelta(days=1), monday + dt.timedelta(days=2), EVERYWHERE
    )
    assert tuesday.slots  # the closure is that day only


def test_staff_are_booked_only_with_a_valid_credential(client: TestClient, db: Database) -> None:
    first, second = _cases(client, 2, service_code="MRI-KNEE")
    start = next_monday(14)
    booked = _post(client, {"case_id": first, "starts_at": start.isoformat()})
    assert booked["resources"] == ["NORTH-MRI-1", "NORTH-RAD-1"]
    # Only radiographer A holds an MRI credential: B is free but may not take the second scan.
    xray = _cases(client, 1)[0]
    assert _post(client, {"case_id": xray, "starts_at": (start + dt.timedelta(hours=1)).isoformat()})[
        "resources"
    ] == [
        "NORTH-XR-1",
        "NORTH-RAD-1",
    ]
    with db.transaction() as session:
        session.execute(
            update(Resource)
            .where(Resource.code == "NORTH-RAD-1")
            .values(credentials=[{"type": "HCPC", "expires": "2020-01-01", "services": ["MRI-KNEE"]}])
        )
    expired = client.post(
        "/api/v1/appointments",
        json={"case_id": second, "starts_at": (start + dt.timedelta(hours=2)).isoformat()},
    )
    assert expired.status_code == 409  # A's credential has expired, B has none for MRI
    # The database refuses it too, whatever writes: a booking of B for the MRI appointment.
    with db.sessions() as session:
        rad_2 = session.scalars(select(Resource.id).where(Resource.code == "NORTH-RAD-2")).one()
    with pytest.raises(IntegrityError, match="staff_not_credentialed"), db.transaction() as session:
        session.execute(
            insert(ResourceBooking).values(
                resource_id=rad_2, slot_start=start + dt.timedelta(hours=5), appointment_id=booked["id"]
            )
        )


def test_home_visits_leave_travel_time_between_zones(client: TestClient, db: Database) -> None:
    body = {**referral(), "location": "south", "service_code": "HOME-WOUND"}
    cases = []
    for _ in range(4):
        patient = {**referral()["patient"], "mrn": f"MRN-{uuid.uuid4().hex[:10]}"}  # type: ignore[dict-item]
        cases.append(client.post("/api/v1/referrals", json={**body, "patient": patient}).json()["case_id"])
    nine = next_monday(9)
    no_zone = client.post("/api/v1/appointments", json={"case_id": cases[0], "starts_at": nine.isoformat()})
    assert no_zone.status_code == 422 and "address zone" in no_zone.json()["detail"]
    first = _post(client, {"case_id": cases[0], "starts_at": nine.isoformat(), "zone": "N1"})
    assert first["resources"] == ["SOUTH-NURSE-1"]
    after = nine + dt.timedelta(minutes=45)  # nurse A ends at 09:45 in N1
    same_zone = _post(client, {"case_id": cases[1], "starts_at": after.isoformat(), "zone": "N1"})
    assert same_zone["resources"] == ["SOUTH-NURSE-1"]  # no travel within a zone
    elsewhere = _post(
        client,
        {"case_id": cases[2], "starts_at": (after + dt.timedelta(minutes=45)).isoformat(), "zone": "E4"},
    )
    assert elsewhere["resources"] == ["SOUTH-NURSE-2"]  # A would need 30 minutes to get to E4
    both_busy = client.post(
        "/api/v1/appointments",
        json={"case_id": cases[3], "starts_at": (after + dt.timedelta(minutes=45)).isoformat(), "zone": "W2"},
    )
    assert both_busy.status_code == 409
    offered = client.get(
        "/api/v1/availability",
        params={"service": "HOME-WOUND", "location": "south", "zone": "W2", "from": nine.isoformat(),
                "to": (nine + dt.timedelta(hours=3)).isoformat()},
    ).json()["slots"]  # fmt: skip
    starts = {s["starts_at"]: s["resources"] for s in offered}
    assert starts[nine.isoformat()] == ["SOUTH-NURSE-2"]  # B reaches E4 from W2 in time
    assert (after + dt.timedelta(minutes=45)).isoformat() not in starts


def test_siu_appointment_events_become_appointment_records(client: TestClient, db: Database) -> None:
    """Migration 0017 makes the records from the events the version before it wrote for HL7 SIU
    messages (events about the case, with the message's start and ids)."""
    [case_id] = _cases(client, 1)
    with db.transaction() as session:
        case = session.get(ServiceCase, case_id)
        assert case is not None
        record_events(
            session,
            *(
                Event.about_case(kind, case, actor="hl7", payload={"start": start, "filler_id": "F-1"})
                for kind, start in (
                    (EventType.APPOINTMENT_BOOKED, "2026-12-14T09:00:00+00:00"),
                    (EventType.APPOINTMENT_MODIFIED, "2026-12-15T10:00:00+00:00"),
                )
            ),
        )
    migration = importlib.import_module("careops.migrations.versions.0017_results_charges_invoices")
    with db.transaction() as session:
        migration.external_appointments_to_records(session.connection())
    with db.sessions() as session:
        [record] = session.scalars(select(Appointment).where(Appointment.case_id == case_id)).all()
    assert (record.source, record.external_id, record.status) == ("hl7", "F-1", "confirmed")
    assert record.starts_at == dt.datetime(2026, 12, 15, 10, tzinfo=dt.UTC)
    assert record.ends_at - record.starts_at == dt.timedelta(minutes=10)  # the service's duration
