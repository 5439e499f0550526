"""Real `careops worker` processes on PostgreSQL with a controllable clock: an approval step with
a 4-hour limit is pending while its worker is killed with `kill -9`; two workers started 4 hours
later escalate it exactly once (the next level joins), and the upper level then decides."""

from __future__ import annotations

import os
import signal
import time

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from careops.approvals.requests import decide, request_in
from careops.approvals.store import activate_directory, shipped_directory
from careops.db import Database
from careops.domain.models import BusinessEvent, User
from careops.governance.users import create_user, user_principal
from careops.settings import Settings
from tests.approvals.test_requests import replenishment
from tests.e2e.test_automation_durability import _until, _worker

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _escalations(db: Database, request_id: str) -> list[dict[str, object]]:
    with db.sessions() as session:
        return list(
            session.scalars(
                select(BusinessEvent.payload).where(
                    BusinessEvent.type == "approval.escalated", BusinessEvent.subject_id == request_id
                )
            )
        )


@pytest.mark.parametrize(
    "database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_an_escalation_survives_kill_9_and_fires_once_with_two_workers(
    client: TestClient, db: Database, database_url: str, settings: Settings
) -> None:
    activate_directory(db, shipped_directory(), actor="test", reason="durability")
    buyer = create_user(db, settings, "buyer", None, ["procurement"], actor="test")
    manager = create_user(db, settings, "boss", None, ["operations_manager"], actor="test")
    with db.transaction() as session:  # 800.00: buyer for 4 hours, then the manager joins
        request_id = request_in(
            session, "replenishment", replenishment(db, 1000), "replenishment", actor="pat"
        ).id
    env = {**os.environ, "CAREOPS_DATABASE_URL": database_url}
    first = _worker(env, "first")
    time.sleep(3)  # it sweeps: nothing is due yet
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(10)
    assert _escalations(db, request_id) == []
    later = [_worker(env, name, offset=4 * 3600 + 60) for name in ("second", "third")]
    try:
        _until(lambda: len(_escalations(db, request_id)) == 1)
        time.sleep(3)  # both keep sweeping: it does not escalate twice
        [escalated] = _escalations(db, request_id)
        assert escalated["action"] == "add_next" and escalated["added"] == [manager.id]
    finally:
        for process in later:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(20)
    with db.sessions() as session:
        boss = session.get(User, manager.id)
        assert boss is not None and buyer.id
        principal = user_principal(session, boss)
    done = decide(db, request_id, principal, "approve", None, via="api")
    assert done["steps"][0]["status"] == "approved"  # the upper level decided the escalated step
