"""A real `careops worker` on PostgreSQL delivering to a slow receiver is killed with `kill -9`
mid-way; after a restart every delivery arrives, none is lost, and each event reaches the
receiver under one idempotency key (a resend of a leased delivery repeats its key)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from careops.db import Database
from careops.domain.deliveries import Delivery
from careops.governance.signing import create_connector
from tests.conftest import referral
from tests.e2e.test_automation_durability import _until, _worker
from tests.integrations.test_deliveries import Receiver, receiver

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
__all__ = ["receiver"]  # the fixture


def _count(db: Database, *where: object) -> int:
    with db.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(Delivery).where(*where)) or 0)


@pytest.mark.parametrize(
    "database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_deliveries_survive_kill_9_of_the_worker(
    client: TestClient, db: Database, database_url: str, receiver: str, tmp_path: Path
) -> None:
    create_connector(db, "billing", "outbound", receiver, actor="test")
    connectors = tmp_path / "connectors.yaml"
    connectors.write_text(
        "connectors:\n  - {name: billing, kind: webhook, events: [case.created], fields: [status],"
        " retry: {attempts: 20, first: 1s, longest: 2s}}\n"
    )
    Receiver.script = staticmethod(lambda n: "slow" if n % 3 == 0 else "ok")  # a second each: work in flight
    env = {**os.environ, "CAREOPS_DATABASE_URL": database_url, "CAREOPS_CONNECTORS_FILE": str(connectors),
           "CAREOPS_DELIVERY_INTERVAL_SECONDS": "0.2",
           "CAREOPS_DELIVERY_LEASE_SECONDS": "3", "CAREOPS_DELIVERY_TIMEOUT_SECONDS": "1.5"}  # fmt: skip
    first = _worker(env, "first")
    try:
        _until(lambda: _worker_has_started(db))
        made = [client.post("/api/v1/referrals", json=referral()).json()["case_id"] for _ in range(12)]
        _until(lambda: len(Receiver.requests) >= 3)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(10)
    assert _count(db, Delivery.status == "delivered") < 12  # it died with work left
    second = _worker(env, "second")
    try:
        _until(lambda: _count(db, Delivery.status == "delivered") == 12, seconds=120)
    finally:
        os.killpg(second.pid, signal.SIGTERM)
        second.wait(20)
    by_case: dict[str, set[str]] = {}
    for key, body in Receiver.requests:
        by_case.setdefault(body["event"]["case_id"], set()).add(key)
    assert set(by_case) == set(made)  # none lost
    assert all(len(keys) == 1 for keys in by_case.values())  # none doubled: one key per event
    assert _count(db) == 12


def _worker_has_started(db: Database) -> bool:
    from careops.domain.automation import AutomationCursor

    with db.sessions() as session:
        return session.get(AutomationCursor, "deliveries") is not None
