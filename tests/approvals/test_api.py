"""The approvals API on SQLite and PostgreSQL, with personal tokens: ask, the queue waiting for
me, decide (a system's token is refused: decisions are a person's), the trace with the policy
version, a delegation and an absence over HTTP, policy activation refused with its table's gaps,
metrics; and signed decision links: bound to their approver, once, before they expire."""

from __future__ import annotations

import datetime as dt

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from careops.approvals.links import decide_by_link, open_link
from careops.approvals.requests import LINK_PATH
from careops.db import Database
from careops.domain.approvals import ApprovalLink
from careops.domain.automation import QueuedMessage
from careops.domain.models import utcnow
from careops.errors import Conflict, Forbidden, ValidationFailed
from careops.governance.tokens import create_token
from tests.approvals.conftest import People
from tests.approvals.test_requests import replenishment

API = "/api/v1/approvals"


def personal(db: Database, username: str, scopes: list[str]) -> dict[str, str]:
    secret, _ = create_token(db, f"{username}-laptop", scopes, actor="test", user=username)
    return {"Authorization": f"Bearer {secret}"}


def links_of(db: Database, username: str) -> list[str]:
    """The decision links in the messages queued for ``username``, newest last."""
    with db.sessions() as session:
        bodies = session.scalars(
            select(QueuedMessage.body)
            .where(QueuedMessage.recipient == f"user:{username}")
            .order_by(QueuedMessage.created_at)
        ).all()
    return [body.split(LINK_PATH, 1)[1].split()[0] for body in bodies if LINK_PATH in body]


def test_ask_decide_and_trace_over_http(client: TestClient, db: Database, people: People) -> None:
    record = replenishment(db, 1000)
    asked = client.post(
        API, json={"subject_type": "replenishment", "subject_id": record, "policy": "replenishment"}
    )
    assert asked.status_code == 201, asked.text
    approval = asked.json()
    assert approval["matched"] == ["medium"] and approval["steps"][0]["who"] == "role:procurement"
    refused = client.post(f"{API}/{approval['id']}/decision", json={"decision": "approve"})
    assert refused.status_code == 403 and "people" in refused.json()["detail"]
    bea = personal(db, "bea", ["approvals:decide", "approvals:read"])
    waiting = client.get(API, params={"waiting_for_me": True}, headers=bea).json()["items"]
    assert [w["id"] for w in waiting] == [approval["id"]]
    returned = client.post(f"{API}/{approval['id']}/decision", json={"decision": "return"}, headers=bea)
    assert returned.status_code == 422 and "missing" in returned.json()["detail"]
    done = client.post(
        f"{API}/{approval['id']}/decision", json={"decision": "approve", "comment": "ok"}, headers=bea
    )
    assert done.status_code == 200 and done.json()["steps"][1]["status"] == "active"
    trace = client.get(f"{API}/{approval['id']}/trace").json()
    assert trace["policy_version"] == "1" and trace["matched"] == ["medium"]
    assert [e["type"] for e in trace["events"]][:4] == [
        "approval.requested",
        "approval.notified",
        "approval.decision_recorded",
        "approval.notified",
    ]
    assert client.get(API, params={"status": "pending"}).json()["items"][0]["id"] == approval["id"]
    with pytest.raises(ValidationFailed, match="do not grant"):
        create_token(db, "too-much", ["admin"], actor="test", user="bea")


def test_delegation_absence_and_metrics_over_http(client: TestClient, db: Database, people: People) -> None:
    bea = personal(db, "bea", ["approvals:decide", "approvals:read"])
    now = utcnow()
    body = {"to": "max", "starts_at": now.isoformat(), "ends_at": (now + dt.timedelta(days=1)).isoformat()}
    made = client.post("/api/v1/approval-delegations", json=body, headers=bea)
    assert made.status_code == 201 and made.json()["delegate"] == people.ids["max"]
    assert (
        client.get("/api/v1/approval-delegations", headers=bea).json()["items"][0]["id"] == made.json()["id"]
    )
    revoked = client.post(f"/api/v1/approval-delegations/{made.json()['id']}/revoke", json={}, headers=bea)
    assert revoked.json()["revoked_at"] is not None
    backwards = {"starts_at": now.isoformat(), "ends_at": (now - dt.timedelta(hours=1)).isoformat()}
    assert client.post("/api/v1/approval-absences", json=backwards, headers=bea).status_code == 422
    metrics = client.get("/api/v1/approval-metrics").json()
    assert set(metrics["rates"]) == {"escalation", "fallback", "returned"}


def test_a_policy_with_a_gap_is_refused_with_it(client: TestClient, db: Database, people: People) -> None:
    gap = """
name: replenishment
version: "2"
owner: me
applies_to: replenishment
inputs: {amount: {type: number, min: 0}}
rules:
  - {name: small, when: {amount: {below: 500}}, chain: [{name: s, role: procurement}]}
"""
    answer = client.post("/api/v1/approval-policies", json={"content": gap, "reason": "try"})
    assert answer.status_code == 422 and "no rule covers amount 500 and above" in answer.json()["detail"]
    listed = client.get("/api/v1/approval-policies").json()["items"]
    assert {p["name"]: p["version"] for p in listed}["replenishment"] == "1"


def test_a_decision_link_is_its_approvers_once_and_until_it_expires(db: Database, people: People) -> None:
    client_record = replenishment(db, 32)
    from tests.approvals.test_requests import ask

    request_id = ask(db, client_record)
    [bea_link] = links_of(db, "bea")
    with pytest.raises(Forbidden, match="someone else"):
        open_link(db, bea_link, people.principal("bo"))
    shown = open_link(db, bea_link, people.principal("bea"))
    assert shown["id"] == request_id and shown["status"] == "pending"  # opening decides nothing
    done = decide_by_link(db, bea_link, people.principal("bea"), "approve", None)
    assert done["status"] == "approved" and done["decisions"][0]["via"] == "link"
    with pytest.raises(Conflict, match="used already"):
        decide_by_link(db, bea_link, people.principal("bea"), "approve", None)
    ask(db, replenishment(db, 33))
    late = links_of(db, "bo")[-1]
    with db.transaction() as session:
        session.execute(
            update(ApprovalLink)
            .values(expires_at=utcnow() - dt.timedelta(seconds=1))
            .where(ApprovalLink.used_at.is_(None))
        )
    with pytest.raises(Conflict, match="expired"):
        decide_by_link(db, late, people.principal("bo"), "approve", None)
