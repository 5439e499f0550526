"""The automation API and console pages on SQLite and PostgreSQL: activation from YAML (a 422
naming the line, an audited event), the list, a location's effective workflow with its graph, a
dry run that changes nothing, runs, deactivation, the metrics and the console's pages."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from careops.approvals.store import activate_directory as activate_policies
from careops.approvals.store import shipped_directory as policies_directory
from careops.automation.store import shipped_directory
from careops.db import Database
from careops.domain.models import BusinessEvent, Task

TEXT = (shipped_directory() / "intake-triage-deadline.yaml").read_text()


def test_activation_lists_and_shows_the_effective_workflow_of_a_location(
    client: TestClient, db: Database
) -> None:
    bad = client.post(
        "/api/v1/workflows", json={"content": TEXT.replace("not_in:", "nott_in:"), "reason": "x"}
    )
    assert bad.status_code == 422
    assert bad.json()["detail"].startswith(
        "<request>:19 rules[0].when.all[1].case.status.nott_in: unknown operator"
    )
    made = client.post("/api/v1/workflows", json={"content": TEXT, "reason": "go live"})
    assert made.status_code == 201 and made.json()["changed"] is True
    again = client.post("/api/v1/workflows", json={"content": "# same\n" + TEXT, "reason": "again"})
    assert again.json()["changed"] is False
    [listed] = client.get("/api/v1/workflows").json()["items"]
    assert listed["name"] == "intake-triage-deadline" and listed["activated_by"]
    south = client.get("/api/v1/workflows/intake-triage-deadline", params={"location": "south"}).json()
    assert south["overlay"] == "home-care-sites" and south["parameters"] == {"triage_hours": 8}
    assert "8 h after case.created" in south["graph"]
    central = client.get("/api/v1/workflows/intake-triage-deadline", params={"location": "central"}).json()
    assert central["overlay"] is None and "4 h after case.created" in central["graph"]
    assert client.get("/api/v1/workflows/nothing-here").status_code == 404
    with db.sessions() as session:
        [event] = session.scalars(
            select(BusinessEvent).where(BusinessEvent.type == "workflow.activated")
        ).all()
        assert event.payload["reason"] == "go live"


def test_a_dry_run_says_what_would_happen_and_changes_nothing(client: TestClient, db: Database) -> None:
    text = (shipped_directory() / "stock-replenishment.yaml").read_text()
    refused = client.post("/api/v1/workflows", json={"content": text, "reason": "go"})
    assert (
        refused.status_code == 422
        and "policy 'replenishment', which is not active" in refused.json()["detail"]
    )
    activate_policies(db, policies_directory(), actor="test", reason="go live")
    assert client.post("/api/v1/workflows", json={"content": text, "reason": "go"}).status_code == 201
    with db.sessions() as session:
        before = session.scalar(select(func.count()).select_from(BusinessEvent))
    event = {
        "type": "stock.below_threshold",
        "subject_type": "item",
        "payload": {"item": "GLOVES-M", "on_hand": 0, "minimum": 50},
    }
    answer = client.post("/api/v1/workflows/all/dry-run", json={"event": event, "location": "south"})
    assert answer.status_code == 200, answer.text
    [planned] = answer.json()["items"]
    assert planned["outcome"] == "fires"
    assert planned["steps"][0]["with"] == {"item": "GLOVES-M", "quantity": "100", "urgency": "urgent"}
    with db.sessions() as session:
        assert session.scalar(select(func.count()).select_from(BusinessEvent)) == before
        assert session.scalar(select(func.count()).select_from(Task)) == 0
    assert client.post("/api/v1/workflows/none-such/dry-run", json={"event": event}).status_code == 404


def test_runs_deactivation_metrics_and_console_pages(client: TestClient, db: Database) -> None:
    assert client.post("/api/v1/workflows", json={"content": TEXT, "reason": "go"}).status_code == 201
    assert client.get("/api/v1/automation/runs").json() == {"items": []}
    assert client.get("/api/v1/automation/schedules/failing").json() == {"items": []}
    assert "careops_automation_pending_timers" in client.get("/metrics").text
    stopped = client.post("/api/v1/workflows/intake-triage-deadline/deactivate", json={"reason": "paused"})
    assert stopped.status_code == 200
    assert client.get("/api/v1/workflows").json() == {"items": []}
    assert (
        client.post("/api/v1/workflows/intake-triage-deadline/deactivate", json={"reason": "x"}).status_code
        == 404
    )
