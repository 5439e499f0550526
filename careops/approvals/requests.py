"""Approval requests: asking (the policy chooses the chain), each step's start (its approvers
resolved, notified with signed decision links), deciding (who may, separation of duties, a record
changed since the request), resubmitting with new amounts and withdrawing.

Every change is a business event about the request (``subject_type`` "approval") in the same
transaction; ``approval.decided`` carries the outcome and the cycle time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from careops.approvals import routing, store, subjects
from careops.approvals.policies import Policy, Step, effective
from careops.approvals.tables import NoRule, choose
from careops.db import Database
from careops.domain.approvals import (
    DECISIONS,
    OPEN,
    ApprovalDecision,
    ApprovalLink,
    ApprovalRequest,
    ApprovalStep,
)
from careops.domain.automation import QueuedMessage
from careops.domain.events import Event, EventType, record_events
from careops.domain.models import Location, User, find, new_id, utcnow
from careops.errors import Conflict, Forbidden, NotFound, ValidationFailed
from careops.governance.principal import Principal

LINK_PATH = "/console/approvals/link/"


def link_token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def event(kind: EventType, request: ApprovalRequest, actor: str, **payload: Any) -> Event:
    return Event(
        kind,
        "approval",
        request.id,
        actor,
        case_id=request.case_id,
        location_id=request.location_id,
        payload={"policy": request.policy, "subject_type": request.subject_type, **payload},
    )


# Effective policies by (content hash, location slug, groups): both are immutable inputs.
_EFFECTIVE: dict[tuple[str, str, tuple[str, ...]], Policy] = {}


def policy_at(policy: Policy, location: Location | None) -> Policy:
    """``policy`` as it applies at ``location`` (its overlay, if one covers it)."""
    if location is None or not policy.overlays:
        return policy
    key = (policy.content_hash, location.slug, tuple(location.groups or []))
    if key not in _EFFECTIVE:
        _EFFECTIVE[key] = effective(policy, location.slug, list(location.groups or []))
    return _EFFECTIVE[key]


def chain_of(policy: Policy, matched: list[str]) -> list[Step]:
    return [step for rule in policy.rules if rule.name in matched for step in rule.chain]


def quorum(step: Step, approvers: int) -> int:
    if step.quorum == "any":
        return 1
    if step.quorum == "all":
        return max(approvers, 1)
    return int(step.quorum)


def request_in(
    session: Session,
    subject_type: str,
    subject_id: str,
    policy_name: str,
    *,
    actor: str,
    given: dict[str, Any] | None = None,
    now: dt.datetime | None = None,
) -> ApprovalRequest:
    """In the caller's transaction: an approval of a record under the active version of a policy
    (the open one, if the record already waits on that policy)."""
    now = now or utcnow()
    open_one = session.scalars(
        select(ApprovalRequest).where(
            ApprovalRequest.subject_type == subject_type,
            ApprovalRequest.subject_id == subject_id,
            ApprovalRequest.policy == policy_name,
            ApprovalRequest.status == OPEN,
        )
    ).first()
    if open_one is not None:
        return open_one
    record = subjects.load(session, subject_type, subject_id, lock=True)
    policy = store.active(session, policy_name)
    if policy.applies_to != subject_type:
        raise ValidationFailed(f"the policy {policy_name} decides on {policy.applies_to}, not {subject_type}")
    submit = subjects.SUBJECTS[subject_type].on_requested
    if submit is not None:
        submit(session, record, actor)
    request = ApprovalRequest(
        id=new_id(),
        subject_type=subject_type,
        subject_id=subject_id,
        case_id=subjects.SUBJECTS[subject_type].case_id(record),
        location_id=record.location_id,
        policy=policy.name,
        policy_hash=policy.content_hash,
        policy_version=policy.version,
        requested_by=actor,
        requested_at=now,
        amended_by=[],
        separation=dict(policy.separation),
    )
    _route(session, request, policy, record, given or {})
    session.add(request)
    session.flush()
    events = [
        event(EventType.APPROVAL_REQUESTED, request, actor, policy_version=policy.version,
              policy_hash=policy.content_hash, matched=request.matched, facts=request.facts)
    ]  # fmt: skip
    start_step(session, request, 0, now, events)
    record_events(session, *events)
    return request


def ask(
    db: Database, principal: Principal, subject_type: str, subject_id: str, policy: str, given: dict[str, Any]
) -> dict[str, Any]:
    """``request_in`` for a caller, who must see the record's location."""
    with db.transaction() as session:
        record = subjects.load(session, subject_type, subject_id)
        if not principal.scope.allows(record.location_id):
            raise NotFound(f"no {subject_type} with this id")
        return view(
            session, request_in(session, subject_type, subject_id, policy, actor=principal.id, given=given)
        )


def _route(
    session: Session, request: ApprovalRequest, policy: Policy, record: Any, given: dict[str, Any]
) -> None:
    facts = subjects.facts_of(session, request.subject_type, record, given)
    try:
        matched = choose(policy_at(policy, session.get(Location, request.location_id)), facts)
    except NoRule as exc:
        raise ValidationFailed(str(exc)) from None
    request.facts = {k: v for k, v in facts.items() if k in policy.inputs}
    request.matched = [rule.name for rule in matched]
    request.fingerprint = subjects.fingerprint(request.subject_type, record)


def steps_of(session: Session, request_id: str) -> list[ApprovalStep]:
    return list(
        session.scalars(
            select(ApprovalStep).where(ApprovalStep.request_id == request_id).order_by(ApprovalStep.position)
        )
    )


def start_step(
    session: Session, request: ApprovalRequest, position: int, now: dt.datetime, events: list[Event]
) -> ApprovalStep | None:
    """Start step ``position`` of the request's chain (None past its end): resolve its approvers
    (the fallback covering, recorded), set its due time, notify each approver. Its events are
    added to ``events``, which the caller records."""
    pinned = store.pinned(session, request.policy, request.policy_hash)
    if position >= len(chain_of(pinned, request.matched)):  # overlays change steps, never their number
        return None
    policy = policy_at(pinned, session.get(Location, request.location_id))
    chain = chain_of(policy, request.matched)
    spec = chain[position]
    need = quorum(spec, 1) if spec.quorum != "all" else 1
    resolved = routing.Resolver(session, policy, now).resolve(spec, request.location_id, need)
    step = ApprovalStep(
        id=new_id(),
        request_id=request.id,
        position=position,
        name=spec.name,
        spec={"who": spec.who.describe(), "quorum": spec.quorum, "within_seconds": spec.within_seconds,
              "on_timeout": spec.on_timeout, "fallback": spec.fallback.describe() if spec.fallback else None},
        approvers=resolved.approvers,
        quorum=quorum(spec, len(resolved.approvers)),
        status="active",
        started_at=now,
        due_at=now + dt.timedelta(seconds=spec.within_seconds),
    )  # fmt: skip
    session.add(step)
    if resolved.fallback_reason:
        events.append(
            event(EventType.APPROVAL_FALLBACK_USED, request, "careops", step=spec.name, position=position,
                  reason=resolved.fallback_reason, fallback=step.spec["fallback"])
        )  # fmt: skip
    notify(session, request, step, resolved.approvers, now, policy.link_hours, "careops", events)
    return step


def notify(
    session: Session,
    request: ApprovalRequest,
    step: ApprovalStep,
    approvers: list[dict[str, str]],
    now: dt.datetime,
    link_hours: float,
    actor: str,
    events: list[Event],
    usernames: dict[str, str] | None = None,
) -> None:
    """A message with a signed, one-time decision link for each approver (bound to them);
    ``usernames`` (id → username) when the caller has them."""
    ids = [a["user"] for a in approvers]
    if usernames is None:
        rows = session.execute(select(User.id, User.username).where(User.id.in_(ids)))
        usernames = {id_: name for id_, name in rows}
    for user_id in ids:
        username = usernames.get(user_id)
        if username is None:
            continue
        token = secrets.token_urlsafe(32)
        session.add(
            ApprovalLink(
                token_sha256=link_token_digest(token),
                request_id=request.id,
                position=step.position,
                approver=user_id,
                expires_at=now + dt.timedelta(hours=link_hours),
            )
        )
        session.add(
            QueuedMessage(
                id=new_id(),
                channel="email",
                recipient=f"user:{username}"[:200],
                subject=f"Approval waiting for you: {request.policy} ({request.subject_type})"[:200],
                body=(
                    f"An approval ({request.policy}, step {step.name}) waits for your decision by "
                    f"{step.due_at:%Y-%m-%d %H:%M} UTC.\nOpen {LINK_PATH}{token} in the careops console "
                    f"(the link is yours alone, works once and expires in {link_hours:g} hours)."
                ),
                case_id=request.case_id,
                location_id=request.location_id,
            )
        )
    if ids:
        events.append(
            event(EventType.APPROVAL_NOTIFIED, request, actor, step=step.name, position=step.position,
                  approvers=ids)
        )  # fmt: skip


@dataclass(frozen=True)
class Decider:
    """Who decides: the person, and whom they decide for (a delegation), or None."""

    user: str
    on_behalf_of: str | None


def _decider(session: Session, step: ApprovalStep, user_id: str, now: dt.datetime) -> Decider:
    listed = {a["user"] for a in step.approvers}
    if user_id in listed:
        return Decider(user_id, None)
    for delegation in routing.delegations_to(session, user_id, now):
        if delegation.delegator in listed:
            return Decider(user_id, delegation.delegator)
    raise Forbidden("you are not an approver of this step, nor anyone's delegate for it")


def _check_duties(
    request: ApprovalRequest, step: ApprovalStep, who: Decider, decisions: list[ApprovalDecision]
) -> None:
    """Separation of duties as the request's policy set it, against its decisions so far."""
    people = {who.user, who.on_behalf_of} - {None}
    rules = request.separation
    if rules.get("requester", True) and request.requested_by in people:
        raise Forbidden(
            "separation of duties: nobody decides on an approval they requested (ask a colleague)"
        )
    if rules.get("amenders", True) and people & set(request.amended_by):
        raise Forbidden(
            "separation of duties: whoever changed the amounts after the request cannot approve it"
        )
    earlier = [d for d in decisions if d.position != step.position]
    if rules.get("one_step_each", True) and any({d.decided_by, d.on_behalf_of} & people for d in earlier):
        raise Forbidden("separation of duties: one person cannot fill two steps of one chain")
    if any({d.decided_by, d.on_behalf_of} & people for d in decisions if d.position == step.position):
        raise Conflict("you have decided on this step already")


def locked_request(session: Session, request_id: str, principal: Principal) -> ApprovalRequest:
    request = find(session, ApprovalRequest, request_id, for_update=True)
    if request is None or not principal.scope.allows(request.location_id):
        raise NotFound("no approval request with this id")
    return request


def active_step(
    steps: list[ApprovalStep], request: ApprovalRequest, position: int | None = None
) -> ApprovalStep:
    """The step waiting for decisions; Conflict when none does, or (``position`` given: the step a
    decision link was sent for) when that step is over."""
    if request.status != OPEN:
        raise Conflict(
            f"this approval is {request.status}: nothing to decide", approval_status=request.status
        )
    step = next((s for s in steps if s.status == "active"), None)
    assert step is not None, "a pending request has an active step"
    if position is not None and step.position != position:
        raise Conflict("the step this link was sent for is over", reason="link_stale")
    return step


def decisions_of(session: Session, request_id: str) -> list[ApprovalDecision]:
    return list(
        session.scalars(
            select(ApprovalDecision)
            .where(ApprovalDecision.request_id == request_id)
            .order_by(ApprovalDecision.decided_at)
        )
    )


def decide_in(
    session: Session,
    request: ApprovalRequest,
    user_id: str,
    decision: str,
    comment: str | None,
    *,
    via: str,
    now: dt.datetime,
    position: int | None = None,
) -> dict[str, Any]:
    """Record ``user_id``'s decision on the request's active step (``position``: the step it must
    be, for a decision link), and move the request on."""
    if decision not in DECISIONS:
        raise ValidationFailed(f"a decision is one of {', '.join(DECISIONS)}")
    steps = steps_of(session, request.id)
    step = active_step(steps, request, position)
    _location = session.get(Location, request.location_id)  # held, so later look-ups find it mapped
    record = subjects.load(session, request.subject_type, request.subject_id, lock=True)
    if subjects.fingerprint(request.subject_type, record) != request.fingerprint:
        raise Conflict(
            "the record changed since this approval was requested: it must be resubmitted with what it "
            "says now before anyone decides",
            reason="record_changed",
        )
    who = _decider(session, step, user_id, now)
    decisions = decisions_of(session, request.id)
    _check_duties(request, step, who, decisions)
    if decision == "return" and not (comment or "").strip():
        raise ValidationFailed("say what information is missing when returning a request")
    made = ApprovalDecision(
        id=new_id(), request_id=request.id, position=step.position, decision=decision, via=via,
        decided_by=who.user, on_behalf_of=who.on_behalf_of, comment=(comment or None), decided_at=now,
    )  # fmt: skip
    session.add(made)
    decisions.append(made)
    events = [
        event(EventType.APPROVAL_DECISION_RECORDED, request, who.user, step=step.name, position=step.position,
              decision=decision, on_behalf_of=who.on_behalf_of, via=via)
    ]  # fmt: skip
    approvals = [d for d in decisions if d.position == step.position and d.decision == "approve"]
    with session.no_autoflush:  # what changes is flushed once, at the commit
        if decision != "approve":
            outcome = "rejected" if decision == "reject" else "returned"
            finish(session, request, outcome, who.user, now, events, steps, record)
        elif len(approvals) >= step.quorum:
            step.status, step.finished_at = "approved", now
            following = start_step(session, request, step.position + 1, now, events)
            if following is not None:
                steps.append(following)
            else:
                finish(session, request, "approved", who.user, now, events, steps, record)
        record_events(session, *events)
        return view(session, request, steps, decisions)


def finish(
    session: Session,
    request: ApprovalRequest,
    outcome: str,
    actor: str,
    now: dt.datetime,
    events: list[Event],
    steps: list[ApprovalStep],
    record: Any | None = None,
) -> None:
    """The request's outcome: its status, open steps closed, ``approval.decided`` with the cycle
    time (added to ``events``), and for an approval what it does to the record."""
    request.status, request.decided_at = outcome, now
    for step in steps:
        if step.status == "active":
            step.status, step.finished_at = outcome, now
    cycle = max(0.0, (now - request.requested_at).total_seconds())
    events.append(
        event(EventType.APPROVAL_DECIDED, request, actor, outcome=outcome, cycle_seconds=round(cycle, 3),
              subject_id=request.subject_id)
    )  # fmt: skip
    hook = subjects.SUBJECTS[request.subject_type].on_approved
    if outcome == "approved" and hook is not None:
        subject = record or subjects.load(session, request.subject_type, request.subject_id, lock=True)
        hook(session, subject, actor, events)


def decide(
    db: Database,
    request_id: str,
    principal: Principal,
    decision: str,
    comment: str | None,
    *,
    via: str,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    if principal.user_id is None:
        raise Forbidden(
            "decisions are taken by people: use the console or a personal token (careops token create --user)"
        )
    with db.transaction() as session:
        request = locked_request(session, request_id, principal)
        return decide_in(session, request, principal.user_id, decision, comment, via=via, now=now or utcnow())


def resubmit(
    db: Database, request_id: str, principal: Principal, given: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Route a pending or returned request again on what its record says now; its chain starts
    over, and whoever resubmits it may not approve it."""
    now = utcnow()
    with db.transaction() as session:
        request = locked_request(session, request_id, principal)
        if request.status not in (OPEN, "returned"):
            raise Conflict(
                f"this approval is {request.status}: ask for a new one", approval_status=request.status
            )
        record = subjects.load(session, request.subject_type, request.subject_id, lock=True)
        policy = store.active(session, request.policy)
        for step in steps_of(session, request.id):
            session.delete(step)
        session.flush()
        request.policy_hash, request.policy_version = policy.content_hash, policy.version
        _route(session, request, policy, record, {**request.facts, **(given or {})})
        request.amended_by = sorted({*request.amended_by, principal.id})
        request.status, request.decided_at = OPEN, None
        events = [event(EventType.APPROVAL_RESUBMITTED, request, principal.id, matched=request.matched,
                        facts=request.facts)]  # fmt: skip
        start_step(session, request, 0, now, events)
        record_events(session, *events)
        return view(session, request)


def withdraw(db: Database, request_id: str, principal: Principal, reason: str) -> dict[str, Any]:
    with db.transaction() as session:
        request = locked_request(session, request_id, principal)
        steps = steps_of(session, request.id)
        active_step(steps, request)
        if principal.id != request.requested_by and not principal.can("admin"):
            raise Forbidden("only whoever requested an approval (or an administrator) withdraws it")
        events: list[Event] = []
        finish(session, request, "withdrawn", principal.id, utcnow(), events, steps)
        record_events(session, *events)
        return view(session, request, steps)


def routing_of(request: ApprovalRequest) -> dict[str, Any]:
    """How a request was routed (the policy version, the rules, the facts) and where it stands."""
    return {
        "policy": request.policy,
        "policy_version": request.policy_version,
        "policy_hash": request.policy_hash,
        "matched": request.matched,
        "facts": request.facts,
        "status": request.status,
    }


def view(
    session: Session,
    request: ApprovalRequest,
    steps: list[ApprovalStep] | None = None,
    decisions: list[ApprovalDecision] | None = None,
) -> dict[str, Any]:
    """The request as the API and the console show it (its steps and decisions, when the caller
    has them loaded, are not read again)."""
    location = session.get(Location, request.location_id)
    steps = steps if steps is not None else steps_of(session, request.id)
    decisions = decisions if decisions is not None else decisions_of(session, request.id)
    return {
        "id": request.id,
        "subject_type": request.subject_type,
        "subject_id": request.subject_id,
        "case_id": request.case_id,
        "location": location.slug if location else None,
        **routing_of(request),
        "requested_by": request.requested_by,
        "requested_at": request.requested_at.isoformat(),
        "decided_at": request.decided_at.isoformat() if request.decided_at else None,
        "steps": [
            {"position": s.position, "name": s.name, "status": s.status, "who": s.spec.get("who"),
             "quorum": s.quorum, "approvers": s.approvers,
             "due_at": s.due_at.isoformat() if s.due_at else None,
             "escalated_at": s.escalated_at.isoformat() if s.escalated_at else None}
            for s in sorted(steps, key=lambda s: s.position)
        ],
        "decisions": [
            {"position": d.position, "decision": d.decision, "decided_by": d.decided_by,
             "on_behalf_of": d.on_behalf_of, "comment": d.comment, "via": d.via,
             "at": d.decided_at.isoformat()}
            for d in decisions
        ],
    }  # fmt: skip
