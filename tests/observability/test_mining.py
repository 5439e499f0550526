"""Process mining of the event log: the directly-follows graph of constructed traces against a
hand count; on SQLite and PostgreSQL, CSV, XES and OCEL exports of real cases (XES and OCEL read
back with pm4py hold every case), the CLI, and the console's flow page."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pm4py
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from careops.db import Database
from careops.domain.models import BusinessEvent, ServiceCase
from careops.governance.users import create_user
from careops.observability.mining import Step, directly_follows, steps, write_csv, write_ocel, write_xes
from careops.settings import Settings
from tests.conftest import referral
from tests.governance.test_console_login import PASSWORD, login
from tests.orchestration.test_scheduling import next_monday

T0 = dt.datetime(2026, 12, 7, 9, 0, tzinfo=dt.UTC)
CAREOPS = str(Path(sys.executable).parent / "careops")


def _step(case: str, activity: str, minutes: float) -> Step:
    return Step(case, activity, T0 + dt.timedelta(minutes=minutes), "north", "u", "case", case)


def test_the_directly_follows_graph_counts_each_arc_and_its_median_wait() -> None:
    trace = [
        _step("a", "case.created", 0), _step("a", "case.transitioned", 10), _step("a", "case.triaged", 40),
        _step("b", "case.created", 0), _step("b", "case.transitioned", 30),
        _step("c", "case.created", 0), _step("c", "case.triaged", 5),
    ]  # fmt: skip
    activities, arcs = directly_follows(trace)
    assert activities == {"case.created": 3, "case.transitioned": 2, "case.triaged": 2}
    found = {(a.source, a.target): (a.count, a.median_wait_seconds) for a in arcs}
    assert found == {
        ("case.created", "case.transitioned"): (2, 20 * 60),  # 10 and 30 minutes
        ("case.transitioned", "case.triaged"): (1, 30 * 60),
        ("case.created", "case.triaged"): (1, 5 * 60),
    }  # and nothing from one case's last event to the next case's first
    assert arcs[0].source == "case.created" and arcs[0].count == 2


def _cases(client: TestClient, db: Database) -> int:
    monday = next_monday(9)
    for n in range(3):
        case_id = client.post("/api/v1/referrals", json=referral()).json()["case_id"]
        if n:
            start = (monday + dt.timedelta(minutes=15 * n)).isoformat()
            booked = client.post("/api/v1/appointments", json={"case_id": case_id, "starts_at": start})
            assert booked.status_code == 201, booked.text
    with db.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(ServiceCase)) or 0)


def test_exports_hold_every_case_and_read_back_in_pm4py(
    client: TestClient, db: Database, tmp_path: Path
) -> None:
    cases = _cases(client, db)
    with (tmp_path / "log.csv").open("w", newline="") as out:
        written = write_csv(steps(db), out)
    lines = (tmp_path / "log.csv").read_text().splitlines()
    assert lines[0].startswith("case_id,activity,timestamp") and len(lines) == written + 1
    assert write_xes(steps(db), tmp_path / "log.xes") == written
    log = pm4py.read_xes(str(tmp_path / "log.xes"))
    assert log["case:concept:name"].nunique() == cases
    assert set(log["concept:name"]) >= {"case.created", "case.transitioned"}
    assert write_ocel(steps(db), tmp_path / "log.jsonocel") == written
    ocel = pm4py.read_ocel2_json(str(tmp_path / "log.jsonocel"))
    assert (ocel.objects["ocel:type"] == "case").sum() == cases
    assert len(ocel.events) == written


def test_the_cli_exports_a_period_and_the_export_is_audited(
    database_url: str, db: Database, tmp_path: Path
) -> None:
    env = {**os.environ, "CAREOPS_DATABASE_URL": database_url}
    out = tmp_path / "cases.xes"
    today = dt.datetime.now(dt.UTC).date().isoformat()
    done = subprocess.run(
        [CAREOPS, "events", "export", "--format", "xes", "--from", today, "--to", today, "-o", str(out)],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert out.exists() and "events written" in done.stderr
    wrong = subprocess.run(
        [CAREOPS, "events", "export", "--format", "bpmn", "-o", str(out)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert wrong.returncode != 0 and "csv, xes, ocel" in wrong.stderr
    with db.sessions() as session:
        assert session.scalar(select(func.count()).where(BusinessEvent.type == "events.exported")) == 1


def test_the_flow_page_draws_the_graph_for_a_manager(
    client: TestClient, db: Database, settings: Settings
) -> None:
    _cases(client, db)
    create_user(db, settings, "olga", PASSWORD, ["operations_manager"], actor="test")
    client.headers.pop("Authorization")
    assert login(client, "olga") == 303
    page = client.get("/console/flow")
    assert page.status_code == 200 and "<svg" in page.text
    assert "3 cases" in page.text and "case.created (3)" in page.text
    assert "<td>case.created</td><td>case.transitioned</td><td>2</td>" in page.text
    assert client.get("/console/flow", params={"location": "atlantis"}).status_code == 404
