"""What a period of approvals tells, on SQLite and PostgreSQL: the what-if replay of a proposed
policy through the command line (changed chains, approver load, expected cycle time; nothing
written), the export for auditors, the trace, the metrics and the KPIs counted from the events."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from sqlalchemy import func, select

from careops.approvals.escalation import sweep
from careops.approvals.metrics import summary
from careops.approvals.requests import decide
from careops.db import Database
from careops.domain.approvals import ApprovalRequest
from careops.domain.models import BusinessEvent, utcnow
from careops.governance.audit import seal_all
from careops.governance.scoping import EVERYWHERE
from careops.observability.rollup import report, roll_up
from careops.settings import Settings
from tests.approvals.conftest import People
from tests.approvals.test_requests import ask, replenishment
from tests.test_cli import careops

# The shipped replenishment policy with the small band raised to 1,000: an 800.00 order needs
# one buyer instead of a buyer then the manager.
PROPOSED = (
    (Path(__file__).parents[2] / "workflows" / "policies" / "replenishment.yaml")
    .read_text()
    .replace("when: {amount: {below: 500}}", "when: {amount: {below: 1000}}")
    .replace("when: {amount: {from: 500, below: 5000}}", "when: {amount: {from: 1000, below: 5000}}")
)


def history(db: Database, people: People) -> list[str]:
    """Four requests: two small (one approved), two medium (one escalated, then approved)."""
    made = [ask(db, replenishment(db, q)) for q in (32, 40, 1000, 1100)]
    decide(db, made[0], people.principal("bea"), "approve", None, via="api")
    sweep(db, now=utcnow() + dt.timedelta(hours=5))
    decide(db, made[2], people.principal("bea"), "approve", None, via="api")
    decide(db, made[2], people.principal("max"), "approve", None, via="api")
    return made


def test_the_what_if_replay_compares_without_writing(
    db: Database, people: People, database_url: str, tmp_path: Path
) -> None:
    made = history(db, people)
    proposal = tmp_path / "replenishment.yaml"
    proposal.write_text(PROPOSED)
    with db.sessions() as session:
        before = session.scalar(select(func.count()).select_from(BusinessEvent))
    today = utcnow().date().isoformat()
    result = careops(
        database_url,
        "approvals",
        "simulate",
        "--policy",
        str(proposal),
        "--from",
        today,
        "--to",
        today,
        "--json",
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert (found["requests"], found["changed_chain"], found["uncovered"]) == (4, 2, 0)
    assert found["load"]["role:operations_manager"] == {"current": 2, "proposed": 0}
    assert found["load"]["role:procurement"] == {"current": 4, "proposed": 4}
    expected = found["expected_cycle_seconds"]
    assert expected["proposed"]["mean"] < expected["current"]["mean"]
    with db.sessions() as session:
        assert session.scalar(select(func.count()).select_from(BusinessEvent)) == before
    shown = careops(
        database_url, "approvals", "simulate", "--policy", str(proposal), "--from", today, "--to", today
    )
    assert "2 would change chain" in shown.stdout
    exported = careops(database_url, "approvals", "export", "--from", today,
                       "--to", (utcnow().date() + dt.timedelta(days=1)).isoformat())  # fmt: skip
    rows = [json.loads(line) for line in exported.stdout.splitlines()]
    assert sorted(r["id"] for r in rows) == sorted(made)
    assert {r["id"]: len(r["decisions"]) for r in rows}[made[2]] == 2
    traced = json.loads(careops(database_url, "approvals", "trace", made[2]).stdout)
    assert [e["type"] for e in traced["events"]].count("approval.escalated") == 1
    gap = tmp_path / "gap"
    gap.mkdir()
    (gap / "p.yaml").write_text(
        PROPOSED.replace("when: {amount: {from: 5000}}", "when: {amount: {from: 9000}}")
    )
    refused = careops(database_url, "approvals", "validate", "--directory", str(gap), COLUMNS="200")
    assert refused.returncode == 1 and "no rule covers amount 5000 to 9000" in refused.stderr


def test_metrics_and_kpis_count_the_period(db: Database, people: People, settings: Settings) -> None:
    history(db, people)
    found = summary(db, EVERYWHERE)
    assert found["requests"] == 4 and found["pending"]["count"] == 2
    by_policy = {row["key"]: row for row in found["cycle_time"]["by_policy"]}
    assert by_policy["replenishment"]["count"] == 2
    assert found["rates"]["escalation"] is not None and found["rates"]["escalation"] > 0
    seal_all(db, settings.secret_key)
    while roll_up(db):
        pass
    today = utcnow().date()
    kpis = report(db, None, today, today)["kpis"]
    assert kpis["approval_outcome"]["by_dimension"] == {"replenishment/approved": 2}
    assert kpis["approval_escalations"]["by_dimension"] == {"add_next": 2}
    assert kpis["approval_cycle_seconds"]["mean"] is not None and kpis["approval_cycle_seconds"]["p50"] == 1
    with db.sessions() as session:
        assert session.scalar(select(func.count()).select_from(ApprovalRequest)) == 4


def test_absences_delegations_and_listings_from_the_command_line(
    db: Database, people: People, database_url: str
) -> None:
    now = utcnow()
    later = (now + dt.timedelta(days=3)).isoformat(timespec="minutes")
    away = careops(
        database_url, "approvals", "absence", "--user", "bea", "--from", now.isoformat(), "--to", later
    )
    assert away.returncode == 0, away.stderr
    assert json.loads(away.stdout)["user"] == people.ids["bea"]
    given = careops(database_url, "approvals", "delegate", "--user", "bo", "--to", "max",
                    "--from", now.isoformat(), "--until", later, "--why", "leave")  # fmt: skip
    assert json.loads(given.stdout)["delegate"] == people.ids["max"]
    refused = careops(database_url, "approvals", "delegate", "--user", "bo", "--to", "zed",
                      "--from", now.isoformat(), "--until", later, COLUMNS="200")  # fmt: skip
    assert refused.returncode == 1 and "does not see every location" in refused.stderr
    made = ask(db, replenishment(db, 32))
    listed = careops(database_url, "approvals", "list", "--status", "pending", COLUMNS="200")
    assert made in listed.stdout
    assert "replenishment" in careops(database_url, "approvals", "policies", COLUMNS="200").stdout
    assert json.loads(careops(database_url, "approvals", "metrics").stdout)["pending"]["count"] == 1
    swept = careops(database_url, "approvals", "sweep")
    assert swept.returncode == 0 and "0 steps escalated" in swept.stderr
    with db.sessions() as session:
        request = session.get(ApprovalRequest, made)
        assert request is not None
    kinds = [
        e["type"] for e in json.loads(careops(database_url, "approvals", "trace", made).stdout)["events"]
    ]
    assert "approval.fallback_used" not in kinds  # bea is away, but bo (delegating) and mo remain
