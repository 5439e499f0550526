"""The escalation sweep: active steps past their time limit, read by due time through a partial
index (``status = 'active' AND escalated_at IS NULL``), each claimed with ``FOR UPDATE SKIP
LOCKED`` and marked escalated in the same transaction, so each escalates exactly once however many
workers sweep. What happens is the step's ``on_timeout``:

- ``notify``: the approvers are reminded (new links), ``approval.escalated``;
- ``add_next``: the next step's approvers join this one (a higher level may decide now);
- ``reassign``: the fallback approvers replace the step's approvers;
- ``expire``: the request ends as ``expired``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Select, select

from careops.approvals import routing, store
from careops.approvals.requests import chain_of, event, finish, notify, policy_at
from careops.db import Database
from careops.domain.approvals import ApprovalRequest, ApprovalStep
from careops.domain.events import EventType, record_events
from careops.domain.models import utcnow

ACTOR = "careops:escalation"


def due_steps(now: dt.datetime, limit: int) -> Select[Any]:
    """The indexed query of steps to escalate (the benchmark times it bare)."""
    return (
        select(ApprovalStep)
        .where(
            ApprovalStep.status == "active", ApprovalStep.escalated_at.is_(None), ApprovalStep.due_at <= now
        )
        .order_by(ApprovalStep.due_at)
        .limit(limit)
    )


def sweep(db: Database, limit: int = 200, now: dt.datetime | None = None) -> int:
    """Escalate up to ``limit`` overdue steps in one transaction; how many were escalated."""
    now = now or utcnow()
    with db.sessions() as session:  # an idle sweep reads without taking the write lock
        idle = session.scalars(due_steps(now, 1)).first() is None
    if idle:
        return 0
    with db.transaction() as session:
        steps = list(session.scalars(due_steps(now, limit).with_for_update(skip_locked=True)))
        for step in steps:
            request = session.get(ApprovalRequest, step.request_id)
            assert request is not None
            step.escalated_at = now
            policy = policy_at(session, request, store.pinned(session, request.policy, request.policy_hash))
            spec = chain_of(policy, request.matched)[step.position]
            action, added = spec.on_timeout, []
            if action == "expire":
                record_events(session, event(EventType.APPROVAL_ESCALATED, request, ACTOR, step=step.name,
                                             position=step.position, action="expire"))  # fmt: skip
                finish(session, request, "expired", ACTOR, now)
                continue
            if action == "add_next":
                chain = chain_of(policy, request.matched)
                if step.position + 1 < len(chain):
                    upper = chain[step.position + 1]
                    found = routing.resolve(session, policy, upper, request.location_id, now, 1).approvers
                    known = {a["user"] for a in step.approvers}
                    added = [
                        {"user": a["user"], "via": "escalation"} for a in found if a["user"] not in known
                    ]
                    step.approvers = [*step.approvers, *added]
                else:
                    action = "notify"
            elif action == "reassign":
                added = routing.fallback_approvers(session, policy, spec, request.location_id, now)
                step.approvers = added
                step.quorum = min(step.quorum, max(len(added), 1))
            record_events(
                session,
                event(EventType.APPROVAL_ESCALATED, request, ACTOR, step=step.name, position=step.position,
                      action=action, added=[a["user"] for a in added]),
            )  # fmt: skip
            notify(session, request, step, added if action != "notify" else step.approvers, now,
                   policy.link_hours, ACTOR)  # fmt: skip
        return len(steps)
