"""/metrics keeps technical and process failures apart (channel series and outbox gauges against
queue gauges), without PHI; the shipped alert rules and Grafana dashboard name only metrics
careops exposes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from fastapi.testclient import TestClient
from sqlalchemy import update

from careops.db import Database
from careops.domain.models import OutboxMessage
from tests.conftest import referral

DEPLOY = Path(__file__).parents[2] / "deploy"


def _exposition(client: TestClient) -> str:
    client.post("/api/v1/referrals", json=referral(service_code="NO-SUCH-SCAN"))
    client.post("/api/v1/referrals", content=b'{"x', headers={"Content-Type": "application/json"})
    answer = client.get("/metrics")
    assert answer.status_code == 200
    return answer.text


def test_queues_are_gauges_beside_the_channel_counters_and_carry_no_phi(client: TestClient) -> None:
    text = _exposition(client)
    assert re.search(r'careops_queue_open_items\{queue="intake"\} 1\.0', text)
    assert re.search(r'careops_queue_past_sla_items\{queue="intake"\} 0\.0', text)
    assert "careops_channel_quarantined_total" in text
    assert "Example" not in text and "MRN-" not in text  # the referral's patient is nowhere


def test_follow_ups_waiting_and_dead_are_technical_gauges_per_destination(
    client: TestClient, db: Database
) -> None:
    assert client.post("/api/v1/referrals", json=referral()).status_code == 201  # a case: a follow-up
    waiting = client.get("/metrics").text
    assert re.search(r'careops_outbox_backlog\{destination="workflow.await_triage"\} 1\.0', waiting)
    assert re.search(r'careops_outbox_dead_letters\{destination="workflow.await_triage"\} 0\.0', waiting)
    with db.transaction() as session:
        session.execute(update(OutboxMessage).values(status="dead", attempts=20, last_error="ConnectError"))
    dead = client.get("/metrics").text
    assert re.search(r'careops_outbox_backlog\{destination="workflow.await_triage"\} 0\.0', dead)
    assert re.search(r'careops_outbox_dead_letters\{destination="workflow.await_triage"\} 1\.0', dead)


def _metric_names(expression: str) -> set[str]:
    return set(re.findall(r"\b(careops_[a-z_]+?)(?:_bucket|_total)?\b", expression))


def test_alert_rules_and_dashboard_name_only_exposed_metrics(client: TestClient) -> None:
    declared = re.findall(r"^# TYPE (careops_[a-z_]+) ", _exposition(client), re.M)  # with or without samples
    exposed = {re.sub(r"_(total|bucket|count|sum|created)$", "", name) for name in declared}
    rules = yaml.safe_load((DEPLOY / "prometheus" / "careops-alerts.yml").read_text())
    expressions = []
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["kind"] in ("technical", "process"), rule["alert"]
            expressions.append(rule["expr"])
    dashboard = json.loads((DEPLOY / "grafana" / "careops-dashboard.json").read_text())
    expressions += [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    named = set().union(*(_metric_names(e) for e in expressions))
    assert named and named <= exposed, named - exposed
    kinds = {group["name"] for group in rules["groups"]}
    assert kinds == {"careops-technical", "careops-process"}
