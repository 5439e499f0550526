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
from sqlalchemy.orm import Session

from careops.approvals import store
from careops.approvals.policies import Step
from careops.approvals.requests import chain_of, event, finish, notify, policy_at
from careops.approvals.routing import Resolver
from careops.db import Database
from careops.domain.approvals import ApprovalRequest, ApprovalStep
from careops.domain.events import Event, EventType, record_events
from careops.domain.models import Location, User, utcnow

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


def sweep(db: Database, limit: int = 100, now: dt.datetime | None = None) -> int:
    """Escalate up to ``limit`` overdue steps in one transaction; how many were escalated."""
    now = now or utcnow()
    with db.sessions() as session:  # an idle sweep reads without taking the write lock
        idle = session.scalars(due_steps(now, 1)).first() is None
    if idle:
        return 0
    with db.transaction() as session, session.no_autoflush:  # flushed together at the commit
        steps = list(session.scalars(due_steps(now, limit).with_for_update(skip_locked=True)))
        ids = [s.request_id for s in steps]
        requests = {
            r.id: r for r in session.scalars(select(ApprovalRequest).where(ApprovalRequest.id.in_(ids)))
        }
        places = {r.location_id for r in requests.values()}
        locations = {loc.id: loc for loc in session.scalars(select(Location).where(Location.id.in_(places)))}
        resolvers: dict[tuple[str, str | None], Resolver] = {}
        events: list[Event] = []
        reminders = []
        for step in steps:
            request = requests[step.request_id]
            pinned = store.pinned(session, request.policy, request.policy_hash)
            policy = policy_at(pinned, locations.get(request.location_id))
            resolver = resolvers.setdefault(
                (policy.content_hash, policy.overlay), Resolver(session, policy, now)
            )
            remind = _escalate(
                session, request, step, chain_of(policy, request.matched), resolver, now, events
            )
            if remind:
                reminders.append((request, step, remind, policy.link_hours))
        wanted = {a["user"] for _, _, approvers, _ in reminders for a in approvers}
        usernames = dict(session.execute(select(User.id, User.username).where(User.id.in_(wanted))).all())
        for request, step, approvers, hours in reminders:
            notify(session, request, step, approvers, now, hours, ACTOR, events, usernames)
        record_events(session, *events)
        return len(steps)


def _escalate(
    session: Session,
    request: ApprovalRequest,
    step: ApprovalStep,
    chain: list[Step],
    resolver: Resolver,
    now: dt.datetime,
    events: list[Event],
) -> list[dict[str, str]]:
    """What the step's time limit does to it (its event added to ``events``); whom to remind."""
    step.escalated_at = now
    action, added = chain[step.position].on_timeout, []
    if action == "add_next" and step.position + 1 < len(chain):
        found = resolver.resolve(chain[step.position + 1], request.location_id, 1).approvers
        known = {a["user"] for a in step.approvers}
        added = [{"user": a["user"], "via": "escalation"} for a in found if a["user"] not in known]
        step.approvers = [*step.approvers, *added]
    elif action == "reassign":
        added = resolver.fallback(chain[step.position], request.location_id)
        step.approvers, step.quorum = added, min(step.quorum, max(len(added), 1))
    elif action != "expire":
        action = "notify"
    events.append(
        event(EventType.APPROVAL_ESCALATED, request, ACTOR, step=step.name, position=step.position,
              action=action, added=[a["user"] for a in added])
    )  # fmt: skip
    if action == "expire":
        finish(session, request, "expired", ACTOR, now, events, [step])
        return []
    return added if action != "notify" else list(step.approvers)
