"""Real processes racing for one slot: two `careops serve` on one PostgreSQL database, 100 booking
attempts each, all for the same start of the one X-ray room at north (each for its own case).
Exactly one is booked; every other attempt gets 409 naming the conflict, and nothing is left half
done (no appointment without its bookings, no case scheduled without an appointment)."""

from __future__ import annotations

import os
import threading
import uuid

import httpx
import pytest
from sqlalchemy import func, select

from careops.db import Database
from careops.domain.models import Appointment, ResourceBooking, ServiceCase
from careops.domain.staffing import ServicePlan
from tests.conftest import referral
from tests.e2e.test_crash_recovery import Server, cli, free_port
from tests.orchestration.test_scheduling import next_monday

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
ATTEMPTS = 100


@pytest.mark.parametrize(
    "database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_two_servers_booking_one_slot_200_times_book_it_once(database_url: str) -> None:
    env = {**os.environ, "CAREOPS_DATABASE_URL": database_url}
    cli(env, "migrate")
    cli(env, "seed", "--demo")
    token = cli(env, "token", "create", "--name", "race", "--all-scopes")
    servers = [Server(env, free_port()), Server(env, free_port())]
    headers = {"Authorization": f"Bearer {token}"}
    start = next_monday(10).isoformat()
    try:
        for server in servers:
            server.start()
        with httpx.Client(
            base_url=f"http://127.0.0.1:{servers[0].port}", headers=headers, timeout=30
        ) as client:
            cases = []
            for _ in range(2 * ATTEMPTS):
                patient = {**referral()["patient"], "mrn": f"MRN-{uuid.uuid4().hex[:10]}"}  # type: ignore[dict-item]
                created = client.post("/api/v1/referrals", json=referral(patient=patient))
                assert created.status_code == 201, created.text
                cases.append(created.json()["case_id"])
        answers: list[tuple[int, str]] = []
        lock = threading.Lock()
        go = threading.Barrier(8)

        def attempt(port: int, mine: list[str]) -> None:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30) as client:
                go.wait()
                for case_id in mine:
                    answer = client.post(
                        "/api/v1/appointments", json={"case_id": case_id, "starts_at": start}
                    )
                    with lock:
                        answers.append((answer.status_code, answer.json().get("detail", "")))

        threads = [
            threading.Thread(target=attempt, args=(servers[n % 2].port, cases[n::8])) for n in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    finally:
        for server in servers:
            server.stop()
    statuses = [status for status, _ in answers]
    assert len(answers) == 2 * ATTEMPTS
    assert statuses.count(201) == 1 and statuses.count(409) == 2 * ATTEMPTS - 1
    assert all(
        "no free resources" in detail or "taken by another booking" in detail
        for status, detail in answers
        if status == 409
    )
    db = Database(database_url)
    with db.sessions() as session:  # (the demo's home-care plans are not in the race)
        booked = select(Appointment.id).where(Appointment.plan_id.is_(None))
        assert len(session.scalars(booked).all()) == 1
        scheduled = session.scalar(
            select(func.count())
            .select_from(ServiceCase)
            .where(ServiceCase.status == "scheduled", ServiceCase.id.not_in(select(ServicePlan.case_id)))
        )
        assert scheduled == 1
        # The room and the radiographer, for the 10 minutes of a chest X-ray (two 5-minute slots).
        taken = select(func.count()).select_from(ResourceBooking)
        assert session.scalar(taken.where(ResourceBooking.appointment_id.in_(booked))) == 4
    db.dispose()
