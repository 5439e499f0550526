"""Real `careops worker` processes on PostgreSQL with a controllable clock: a rule waiting on a
4-hour timer survives `kill -9` of the worker and fires exactly once after the restart, with two
workers sweeping at once; a scheduled action's tick fires once across them."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from careops.automation.store import activate
from careops.automation.templates import load_text
from careops.db import Database
from careops.domain.automation import AutomationCursor, AutomationTimer, QueuedMessage, ScheduleTick
from careops.domain.models import Task
from tests.conftest import referral
from tests.e2e.test_crash_recovery import CAREOPS

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
LATER = """
name: four-hours-later
version: "1"
owner: intake_coordinator
run_as: intake_coordinator
rules:
  - name: follow-up
    on: {after: {event: case.created, delay: 4h}}
    steps: [{name: task, action: create_task, with: {kind: four-hours-later}}]
  - name: hourly
    on: {schedule: {cron: "0 * * * *", catch_up: latest}}
    steps:
      - name: note
        action: send_message
        with: {to: "role:intake_coordinator", subject: hourly, body: hourly}
"""


def _worker(env: dict[str, str], name: str, offset: float = 0.0) -> subprocess.Popen[bytes]:
    settings = {"CAREOPS_EXECUTOR_ID": name, "CAREOPS_AUTOMATION_CLOCK_OFFSET_SECONDS": str(offset)}
    return subprocess.Popen([CAREOPS, "worker"], env={**env, **settings}, start_new_session=True)


def _until(check: Callable[[], bool], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError("not within the time allowed")


def _count(db: Database, *where: object, model: object = Task) -> int:
    with db.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_a_four_hour_timer_survives_kill_9_and_fires_once_with_two_workers(
    client: TestClient, db: Database, database_url: str
) -> None:
    with db.transaction() as session:
        activate(session, load_text(LATER), LATER, actor="test", reason="durability")
    env = {**os.environ, "CAREOPS_DATABASE_URL": database_url}
    first = _worker(env, "first")
    try:
        _until(lambda: _count(db, model=AutomationCursor) == 1)  # the engine has started
        case_id = client.post("/api/v1/referrals", json=referral()).json()["case_id"]
        _until(lambda: _count(db, AutomationTimer.subject_id == case_id, model=AutomationTimer) == 1)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(10)
    assert _count(db, Task.case_id == case_id) == 0
    later = [_worker(env, name, offset=4 * 3600 + 60) for name in ("second", "third")]
    try:
        _until(lambda: _count(db, Task.case_id == case_id, Task.kind == "four-hours-later") == 1)
        _until(lambda: _count(db, model=ScheduleTick) >= 4)  # four hours of hourly ticks, caught up
        time.sleep(2)  # both workers sweep and tick again: nothing fires twice
        assert _count(db, Task.case_id == case_id, Task.kind == "four-hours-later") == 1
        ran = _count(db, ScheduleTick.status == "ok", model=ScheduleTick)
        assert 1 <= ran <= 2 and _count(db, QueuedMessage.subject == "hourly", model=QueuedMessage) == ran
        with db.sessions() as session:
            [timer] = session.scalars(
                select(AutomationTimer).where(AutomationTimer.subject_id == case_id)
            ).all()
            assert timer.status == "fired"
    finally:
        for process in later:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(20)
