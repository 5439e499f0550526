"""What the API, the console and the CLI read of approvals: the queue of what waits for a person,
lists by status, one request with its record and trace, the export for auditors."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from careops.approvals import routing, store
from careops.approvals.policies import load_text
from careops.approvals.requests import event, routing_of, view
from careops.db import Database
from careops.domain.approvals import OPEN, ApprovalDecision, ApprovalRequest, ApprovalStep
from careops.domain.events import EventType, record_events
from careops.domain.models import BusinessEvent, User, find, utcnow
from careops.errors import NotFound
from careops.governance.principal import Principal


def _visible(session: Session, request_id: str, principal: Principal) -> ApprovalRequest:
    request = find(session, ApprovalRequest, request_id)
    if request is None or not principal.scope.allows(request.location_id):
        raise NotFound("no approval request with this id")
    return request


def waiting_for(db: Database, principal: Principal, limit: int = 200) -> list[dict[str, Any]]:
    """Pending requests whose active step ``principal`` may decide (as approver or delegate),
    oldest due first."""
    if principal.user_id is None:
        return []
    now = utcnow()
    with db.sessions() as session:
        mine = {principal.user_id} | {
            d.delegator for d in routing.delegations_to(session, principal.user_id, now)
        }
        rows = session.execute(
            select(ApprovalRequest, ApprovalStep)
            .join(ApprovalStep, ApprovalStep.request_id == ApprovalRequest.id)
            .where(ApprovalRequest.status == OPEN, ApprovalStep.status == "active")
            .order_by(ApprovalStep.due_at)
        ).all()
        found = []
        for request, step in rows:
            if principal.scope.allows(request.location_id) and {a["user"] for a in step.approvers} & mine:
                due = step.due_at
                found.append(
                    {**_summary(request), "step": step.name,
                     "due_at": due.isoformat() if due else None, "overdue": bool(due and due <= now)}
                )  # fmt: skip
                if len(found) >= limit:
                    break
        return found


def policies(db: Database) -> list[dict[str, Any]]:
    """The active policies: version, who activated it and why, and each rule's chain."""
    found = []
    for row in store.active_versions(db):
        policy = load_text(row.content, row.name)
        found.append(
            {"name": row.name, "version": row.version, "content_hash": row.content_hash, "owner": row.owner,
             "applies_to": policy.applies_to, "hit_policy": policy.hit_policy,
             "activated_by": row.activated_by, "reason": row.reason,
             "activated_at": row.activated_at.isoformat() if row.activated_at else None,
             "rules": [{"name": r.name, "when": {k: list(v) if isinstance(v, tuple) else v.describe()
                                                  for k, v in r.when.items()},
                        "chain": [f"{s.name} ({s.who.describe()})" for s in r.chain]} for r in policy.rules],
             "overlays": [{"name": o.name, "locations": list(o.locations)} for o in policy.overlays],
             "content": row.content}
        )  # fmt: skip
    return found


def activate_text(db: Database, text: str, actor: str, reason: str) -> dict[str, Any]:
    with db.transaction() as session:
        made = store.activate(session, text, "<posted policy>", actor=actor, reason=reason)
    return {
        "name": made.name,
        "version": made.version,
        "content_hash": made.content_hash,
        "changed": made.changed,
    }


def _summary(request: ApprovalRequest) -> dict[str, Any]:
    return {
        "id": request.id,
        "policy": request.policy,
        "subject_type": request.subject_type,
        "subject_id": request.subject_id,
        "status": request.status,
        "facts": request.facts,
        "requested_at": request.requested_at.isoformat(),
    }


def list_requests(
    db: Database, principal: Principal, status: str | None, limit: int = 200
) -> list[dict[str, Any]]:
    with db.sessions() as session:
        query = select(ApprovalRequest).order_by(ApprovalRequest.requested_at.desc())
        if status:
            query = query.where(ApprovalRequest.status == status)
        if principal.scope.ids is not None:
            query = query.where(ApprovalRequest.location_id.in_(principal.scope.ids))
        return [_summary(r) for r in session.scalars(query.limit(limit))]


def names(session: Session, ids: set[str]) -> dict[str, str]:
    """User id → username, for showing approvers (ids of systems stay as they are)."""
    rows = session.execute(select(User.id, User.username).where(User.id.in_(ids)))
    return {id_: name for id_, name in rows}


def detail(db: Database, request_id: str, principal: Principal) -> dict[str, Any]:
    """One request: its steps, decisions and trace, with people named; viewing is audited."""
    with db.transaction() as session:
        request = _visible(session, request_id, principal)
        shown = view(session, request)
        shown["trace"] = _trace(session, request)
        people = (
            {a["user"] for s in shown["steps"] for a in s["approvers"]}
            | {d[k] for d in shown["decisions"] for k in ("decided_by", "on_behalf_of") if d[k]}
            | {request.requested_by}
        )
        shown["people"] = names(session, people)
        record_events(session, event(EventType.APPROVAL_VIEWED, request, principal.id, via="page"))
        return shown


def _trace(session: Session, request: ApprovalRequest) -> list[dict[str, Any]]:
    rows = session.scalars(
        select(BusinessEvent)
        .where(BusinessEvent.subject_type == "approval", BusinessEvent.subject_id == request.id)
        .order_by(BusinessEvent.id)
    )
    return [
        {"at": e.occurred_at.isoformat(), "type": e.type, "actor": e.actor, "seq": e.seq,
         "details": {k: v for k, v in e.payload.items() if k not in ("policy", "subject_type")}}
        for e in rows
    ]  # fmt: skip


def trace(db: Database, request_id: str, principal: Principal) -> dict[str, Any]:
    """The whole story of a request: the policy version that chose the chain, every event."""
    with db.sessions() as session:
        request = _visible(session, request_id, principal)
        return {"id": request.id, **routing_of(request), "events": _trace(session, request)}


def export(db: Database, since: dt.datetime, until: dt.datetime) -> Iterator[dict[str, Any]]:
    """One row per request made in [since, until), with its decisions, for auditors."""
    with db.sessions() as session:
        requests = session.scalars(
            select(ApprovalRequest)
            .where(ApprovalRequest.requested_at >= since, ApprovalRequest.requested_at < until)
            .order_by(ApprovalRequest.requested_at)
            .execution_options(yield_per=500)
        )
        for request in requests:
            decisions = session.scalars(
                select(ApprovalDecision)
                .where(ApprovalDecision.request_id == request.id)
                .order_by(ApprovalDecision.decided_at)
            ).all()
            yield {
                **_summary(request),
                "policy_version": request.policy_version,
                "policy_hash": request.policy_hash,
                "matched": request.matched,
                "requested_by": request.requested_by,
                "decided_at": request.decided_at.isoformat() if request.decided_at else None,
                "decisions": [
                    {"step": d.position, "decision": d.decision, "by": d.decided_by, "for": d.on_behalf_of,
                     "via": d.via, "at": d.decided_at.isoformat()}
                    for d in decisions
                ],
            }  # fmt: skip
