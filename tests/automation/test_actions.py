"""Every server action through the engine on SQLite and PostgreSQL, on real records: what each
changes, with its event written by the run; messages masked as for the workflow's role."""

from __future__ import annotations

import textwrap

from fastapi.testclient import TestClient
from sqlalchemy import select

from careops.approvals.store import activate_directory as activate_policies
from careops.approvals.store import shipped_directory as policies_directory
from careops.db import Database
from careops.domain.approvals import ApprovalRequest
from careops.domain.automation import QueuedMessage
from careops.domain.models import (
    BusinessEvent,
    ExceptionItem,
    InvoiceRequest,
    ServiceCase,
    Task,
)
from careops.settings import Settings
from tests.automation.test_engine import Clock, _drain, _engine, _use, go_live
from tests.conftest import referral
from tests.orchestration.test_results_and_billing import ack, booked_case, result_message
from tests.orchestration.test_staffing import _plan, _report

EVERYTHING = """
name: every-action
version: "1"
owner: administrator
run_as: administrator
rules:
  - name: on-new-case
    on: {event: case.created}
    steps:
      - {name: urgent, action: set_field, with: {record: case, field: priority, value: urgent}}
      - {name: task, action: create_task, with: {kind: call-patient, assignee: ada, due_in: 1d}}
      - {name: item, action: open_exception, with: {queue: triage, reason: look_at_this}}
      - {name: give, action: assign, with: {queue: triage, to: "role:scheduler"}}
      - {name: approve, action: request_approval, with: {policy: prior-authorisation}}
      - {name: tell, action: send_message, with: {to: patient, channel: sms, subject: hello,
                                                  body: "Hello {{ patient.given_name }}"}}
      - {name: odoo, action: call_connector, with: {connector: odoo, message: case-created}}
      - {name: ai, action: ask_ai, with: {task: summarise}}
      - {name: sub, action: start_workflow, with: {workflow: every-action, rule: later}}
  - name: later
    on: {event: case.triaged}
    steps:
      - {name: hold, action: transition, with: {action: hold, reason: waiting_for_documents}}
"""


def test_every_general_action_changes_its_record_with_its_event(
    client: TestClient, db: Database, settings: Settings
) -> None:
    activate_policies(db, policies_directory(), actor="test", reason="the shipped policies")
    _use(db, EVERYTHING)
    engine = _engine(db, Clock())
    _drain(engine, settings)
    case_id = client.post("/api/v1/referrals", json=referral()).json()["case_id"]
    _drain(engine, settings)
    with db.sessions() as session:
        case = session.get(ServiceCase, case_id)
        assert case is not None and case.priority == "urgent" and case.status == "on_hold"
        tasks = {t.kind: t for t in session.scalars(select(Task).where(Task.case_id == case_id))}
        assert set(tasks) == {"call-patient", "ai:summarise"} and tasks["call-patient"].due_at is not None
        items = {
            i.queue: i for i in session.scalars(select(ExceptionItem).where(ExceptionItem.case_id == case_id))
        }
        assert (
            items["triage"].reason_codes == ["look_at_this"] and items["triage"].assignee == "role:scheduler"
        )
        approval = session.scalars(select(ApprovalRequest).where(ApprovalRequest.case_id == case_id)).one()
        assert approval.policy == "prior-authorisation" and approval.requested_by.startswith("automation:")
        [message] = session.scalars(select(QueuedMessage).where(QueuedMessage.case_id == case_id)).all()
        given = referral()["patient"]["given_name"]  # type: ignore[index]
        assert message.body.startswith("Hello ") and given not in message.body  # masked for the role
        kinds = [
            e.type for e in session.scalars(select(BusinessEvent).where(BusinessEvent.case_id == case_id))
        ]
        wanted = {
            "record.field_set",
            "task.created",
            "exception.opened",
            "exception.assigned",
            "approval.requested",
            "message.queued",
            "connector.call_queued",
            "ai.recommendation_requested",
            "case.transitioned",
        }
        assert wanted <= set(kinds)
        call = session.scalars(
            select(BusinessEvent).where(BusinessEvent.type == "connector.call_queued")
        ).one()
        assert call.actor.startswith("automation:") and call.payload["connector"] == "odoo"


def test_billing_readiness_and_invoice_and_the_referrer_report_run_on_a_result(
    client: TestClient, db: Database, settings: Settings
) -> None:
    go_live(db)
    engine = _engine(db)
    _drain(engine, settings)
    case_id, order, mrn = booked_case(client, diagnosis_codes=["m25.561"])
    assert ack(client, result_message(order, mrn))[0] == "AA"
    _drain(engine, settings)
    with db.sessions() as session:
        invoice = session.scalars(select(InvoiceRequest).where(InvoiceRequest.case_id == case_id)).one()
        assert invoice.status == "requested"
        requested = session.scalars(
            select(BusinessEvent).where(
                BusinessEvent.type == "invoice.requested", BusinessEvent.case_id == case_id
            )
        ).one()
        assert requested.actor.startswith("automation:")
        [report] = session.scalars(
            select(QueuedMessage).where(
                QueuedMessage.case_id == case_id, QueuedMessage.recipient == "referrer"
            )
        ).all()
        assert report.subject == f"Result available for order {order}"


def test_a_staffing_conflict_gets_its_candidates_proposed_to_the_supervisors(
    client: TestClient, db: Database, settings: Settings
) -> None:
    go_live(db)
    engine = _engine(db)
    _drain(engine, settings)
    plan = _plan(client, ["tue"], staff="SOUTH-NURSE-1")
    conflict = _report(client, "SOUTH-NURSE-1", [plan["visits"][0]["id"]])
    _drain(engine, settings)
    with db.sessions() as session:
        [message] = session.scalars(
            select(QueuedMessage).where(QueuedMessage.subject == "Staffing conflict: candidates")
        )
        assert message.recipient == "role:field_supervisor"
        assert textwrap.shorten(message.body, 300).startswith(
            f"Conflict {conflict['id']} (sickness, 1 visits)"
        )
        assert "SOUTH-NURSE-2" in message.body or "nobody can take" in message.body
