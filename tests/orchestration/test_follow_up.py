"""The dispatcher starts one durable workflow per claimed batch of case.created; silence escalates."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from careops.db import Database
from careops.domain.models import ExceptionItem, OutboxMessage
from careops.orchestration.dispatcher import CLAIM_TIMEOUT, MAX_ATTEMPTS, claim, settle, workflow_events
from careops.orchestration.worker import run_worker
from careops.settings import Settings
from tests.conftest import referral


@pytest.fixture
def worker(settings: Settings, db: Database) -> Iterator[None]:
    stop = threading.Event()
    thread = threading.Thread(target=lambda: asyncio.run(run_worker(settings, stop.is_set)), daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(20)
    assert not thread.is_alive()


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


def triage_overdue_items(db: Database, case_id: str) -> int:
    with db.sessions() as session:
        return (
            session.scalar(
                select(func.count())
                .select_from(ExceptionItem)
                .where(ExceptionItem.case_id == case_id, ExceptionItem.queue == "triage")
            )
            or 0
        )


def all_dispatched(db: Database) -> bool:
    with db.sessions() as session:
        statuses = set(session.scalars(select(OutboxMessage.status)))
    return statuses == {"dispatched"}


def test_untriaged_case_lands_in_the_triage_queue_once(
    client: TestClient, db: Database, worker: None
) -> None:
    case_id = client.post("/api/v1/referrals", json=referral()).json()["case_id"]
    wait_for(lambda: all_dispatched(db))
    wait_for(lambda: triage_overdue_items(db, case_id) == 1)
    time.sleep(1.0)
    assert triage_overdue_items(db, case_id) == 1
    queue = client.get("/api/v1/exceptions", params={"queue": "triage"}).json()["items"]
    assert [(i["case_id"], i["reason_codes"]) for i in queue] == [(case_id, ["triage_overdue"])]


def test_triage_in_time_ends_the_wait_without_escalation(
    client: TestClient, db: Database, settings: Settings, worker: None
) -> None:
    case_id = client.post("/api/v1/referrals", json=referral()).json()["case_id"]
    response = client.post(f"/api/v1/cases/{case_id}/triage", json={"urgency": "urgent"})
    assert response.status_code == 200, response.text
    assert response.json() == {"case_id": case_id, "urgency": "urgent"}
    wait_for(lambda: all_dispatched(db))
    time.sleep(settings.triage_timeout_seconds + 1.5)
    assert triage_overdue_items(db, case_id) == 0
    assert client.get(f"/api/v1/cases/{case_id}").json()["priority"] == "urgent"


def test_one_workflow_per_batch_escalates_only_the_untriaged(
    client: TestClient, db: Database, settings: Settings
) -> None:
    case_ids = [client.post("/api/v1/referrals", json=referral()).json()["case_id"] for _ in range(6)]
    for case_id in case_ids[:2]:
        assert client.post(f"/api/v1/cases/{case_id}/triage", json={"urgency": "routine"}).status_code == 200
    stop = threading.Event()
    thread = threading.Thread(target=lambda: asyncio.run(run_worker(settings, stop.is_set)), daemon=True)
    thread.start()
    try:
        wait_for(lambda: all_dispatched(db))
        wait_for(lambda: sum(triage_overdue_items(db, c) for c in case_ids) == 4)
        time.sleep(1.0)
    finally:
        stop.set()
        thread.join(20)
    assert [triage_overdue_items(db, c) for c in case_ids] == [0, 0, 1, 1, 1, 1]
    with db.sessions() as session:
        assert len(set(session.scalars(select(OutboxMessage.workflow_id)))) == 1


def test_a_re_claim_starts_its_workflow_with_every_member(client: TestClient, db: Database) -> None:
    case_ids = [client.post("/api/v1/referrals", json=referral()).json()["case_id"] for _ in range(3)]
    first = claim(db, "worker-a", batch_size=10)
    assert len({f.workflow_id for f in first}) == 1
    with db.transaction() as session:  # worker-a died: its claims age past the timeout
        for message in session.scalars(select(OutboxMessage)):
            message.claimed_at -= CLAIM_TIMEOUT * 2
    again = claim(db, "worker-b", batch_size=2)
    assert [f.workflow_id for f in again] == [first[0].workflow_id] * 2
    assert [case_id for case_id, _ in workflow_events(db, first[0].workflow_id)] == case_ids


def test_a_failing_follow_up_is_retried_then_dead(client: TestClient, db: Database) -> None:
    client.post("/api/v1/referrals", json=referral())
    statuses = []
    for _ in range(MAX_ATTEMPTS):
        (follow_up,) = claim(db, "worker-a", batch_size=10)
        settle(db, {follow_up.outbox_id: "ConnectionError"})
        with db.sessions() as session:
            message = session.get_one(OutboxMessage, follow_up.outbox_id)
            statuses.append((message.status, message.attempts, message.last_error))
    assert statuses[0] == ("pending", 1, "ConnectionError")
    assert statuses[-1] == ("dead", MAX_ATTEMPTS, "ConnectionError")
    assert claim(db, "worker-a", batch_size=10) == []
