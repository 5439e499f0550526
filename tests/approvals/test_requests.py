"""Approval requests on SQLite and PostgreSQL, on real replenishment requests of the demo: the
policy's table chooses the chain, approvers are notified with links, decisions move the chain on
and the record with it; separation of duties, a changed record, delegation windows, absences
covered by fallbacks, escalation exactly once."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import func, select

from careops.approvals import delegation
from careops.approvals.escalation import sweep
from careops.approvals.requests import decide, request_in, resubmit, withdraw
from careops.db import Database
from careops.domain.approvals import ApprovalLink, ApprovalRequest
from careops.domain.automation import QueuedMessage
from careops.domain.models import BusinessEvent, utcnow
from careops.domain.stock import Replenishment
from careops.errors import Conflict, Forbidden, NotFound
from careops.governance.scoping import EVERYWHERE
from careops.orchestration.replenishment import draft
from tests.approvals.conftest import People


def replenishment(db: Database, quantity: int, urgency: str = "routine") -> str:
    """A draft for SALINE-100ML at 0.80 each in the south: 32 is 25.60, 1,000 is 800.00."""
    return str(
        draft(db, "south", [("SALINE-100ML", quantity)], actor="pat", scope=EVERYWHERE, urgency=urgency)["id"]
    )


def ask(db: Database, record_id: str, policy: str = "replenishment", **given: Any) -> str:
    with db.transaction() as session:
        return request_in(session, "replenishment", record_id, policy, actor="pat", given=given).id


def events(db: Database, request_id: str) -> list[dict[str, Any]]:
    with db.sessions() as session:
        rows = session.scalars(
            select(BusinessEvent)
            .where(BusinessEvent.subject_type == "approval", BusinessEvent.subject_id == request_id)
            .order_by(BusinessEvent.id)
        )
        return [{"type": e.type, "actor": e.actor, **e.payload} for e in rows]


def status(db: Database, model: Any, id_: str) -> str:
    with db.sessions() as session:
        return str(session.get(model, id_).status)


def test_the_table_chooses_the_chain_and_an_approval_approves_the_record(
    db: Database, people: People
) -> None:
    record = replenishment(db, 32)
    request_id = ask(db, record)
    assert status(db, Replenishment, record) == "requested"  # asking submitted the draft
    with db.sessions() as session:
        request = session.get(ApprovalRequest, request_id)
        assert request is not None and request.matched == ["small"] and request.facts["amount"] == 25.6
        links = session.scalar(
            select(func.count()).select_from(ApprovalLink).where(ApprovalLink.request_id == request_id)
        )
        messages = session.scalars(
            select(QueuedMessage.recipient).where(QueuedMessage.subject.like("Approval%"))
        ).all()
    assert links == 3 and sorted(messages) == ["user:bea", "user:bo", "user:mo"]  # zed sees only the north
    with pytest.raises(Forbidden, match="not an approver"):
        decide(db, request_id, people.principal("fin"), "approve", None, via="api")
    with pytest.raises(NotFound):  # zed sees only the north: the south's request is not there for them
        decide(db, request_id, people.principal("zed"), "approve", None, via="api")
    done = decide(db, request_id, people.principal("bea"), "approve", "fine", via="api")
    assert done["status"] == "approved" and done["decisions"][0]["decided_by"] == people.ids["bea"]
    assert status(db, Replenishment, record) == "approved"
    kinds = [e["type"] for e in events(db, request_id)]
    assert kinds == [
        "approval.requested",
        "approval.notified",
        "approval.decision_recorded",
        "approval.decided",
    ]
    assert events(db, request_id)[-1]["outcome"] == "approved"
    with pytest.raises(Conflict, match="approved"):
        decide(db, request_id, people.principal("bo"), "approve", None, via="api")


def test_a_two_step_chain_needs_two_people_and_a_rejection_ends_it(db: Database, people: People) -> None:
    request_id = ask(db, replenishment(db, 1000))  # 800: medium, buyer then manager
    decide(db, request_id, people.principal("mo"), "approve", None, via="api")  # mo is both
    with pytest.raises(Forbidden, match="two steps"):
        decide(db, request_id, people.principal("mo"), "approve", None, via="api")
    rejected = decide(db, request_id, people.principal("max"), "reject", "too much", via="api")
    assert rejected["status"] == "rejected" and [s["status"] for s in rejected["steps"]] == [
        "approved",
        "rejected",
    ]


def test_separation_of_duties_and_a_changed_record(db: Database, people: People) -> None:
    record = replenishment(db, 32)
    with db.transaction() as session:
        request_id = request_in(session, "replenishment", record, "replenishment", actor=people.ids["bea"]).id
    with pytest.raises(Forbidden, match="requested"):
        decide(db, request_id, people.principal("bea"), "approve", None, via="api")
    with db.transaction() as session:
        row = session.get(Replenishment, record)
        assert row is not None
        row.lines, row.value = [{"item": "SALINE-100ML", "quantity": 10_000, "unit_price": 0.8}], 8000.0
    with pytest.raises(Conflict, match="changed since"):
        decide(db, request_id, people.principal("bo"), "approve", None, via="api")
    again = resubmit(db, request_id, people.principal("bo"))
    assert again["matched"] == ["large"] and again["status"] == "pending"
    with pytest.raises(Forbidden, match="changed the amounts"):
        decide(db, request_id, people.principal("bo"), "approve", None, via="api")
    with pytest.raises(Forbidden, match="withdraws"):
        withdraw(db, request_id, people.principal("bo"), "not mine")
    withdrawn = withdraw(db, request_id, people.principal("bea"), "no longer needed")
    assert withdrawn["status"] == "withdrawn"


def test_a_delegate_decides_on_behalf_within_the_window_only(db: Database, people: People) -> None:
    now = utcnow()
    given = delegation.delegate(db, people.principal("bea"), "max", now, now + dt.timedelta(days=2), "leave")
    request_id = ask(db, replenishment(db, 32))
    done = decide(db, request_id, people.principal("max"), "approve", None, via="api")
    assert done["decisions"][0]["on_behalf_of"] == people.ids["bea"]
    delegation.revoke(db, people.principal("bea"), given["id"])
    later = ask(db, replenishment(db, 33))
    with pytest.raises(Forbidden, match="not an approver"):
        decide(db, later, people.principal("max"), "approve", None, via="api")
    delegation.delegate(
        db, people.principal("bo"), "max", now + dt.timedelta(days=1), now + dt.timedelta(days=2), None
    )
    with pytest.raises(Forbidden, match="not an approver"):  # not yet
        decide(db, later, people.principal("max"), "approve", None, via="api")
    with pytest.raises(Exception, match="does not see every location"):
        delegation.delegate(db, people.principal("bea"), "zed", now, now + dt.timedelta(days=1), None)


def test_a_fallback_covers_absent_approvers(db: Database, people: People) -> None:
    now = utcnow()
    for name in ("bea", "bo", "mo"):
        delegation.record_absence(
            db, people.principal(name), now - dt.timedelta(hours=1), now + dt.timedelta(days=1)
        )
    request_id = ask(db, replenishment(db, 32))
    kinds = {e["type"]: e for e in events(db, request_id)}
    assert kinds["approval.fallback_used"]["reason"] == "absent"
    done = decide(db, request_id, people.principal("max"), "approve", None, via="api")
    assert done["status"] == "approved" and done["steps"][0]["approvers"] == [
        {"user": people.ids["max"], "via": "fallback"}
    ]


def test_a_step_past_its_limit_escalates_exactly_once(db: Database, people: People) -> None:
    request_id = ask(db, replenishment(db, 1000))  # medium: buyer 4 h, then the next level joins
    assert sweep(db, now=utcnow() + dt.timedelta(hours=3)) == 0
    later = utcnow() + dt.timedelta(hours=5)
    assert sweep(db, now=later) == 1
    assert sweep(db, now=later + dt.timedelta(hours=1)) == 0
    escalated = [e for e in events(db, request_id) if e["type"] == "approval.escalated"]
    assert (
        len(escalated) == 1
        and escalated[0]["action"] == "add_next"
        and escalated[0]["added"] == [people.ids["max"]]
    )  # mo is one already
    done = decide(db, request_id, people.principal("max"), "approve", None, via="api")  # the upper level, now
    assert done["steps"][0]["status"] == "approved" and len(done["steps"]) == 2
