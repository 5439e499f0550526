"""The service case state machine: one transition table, one function that applies it."""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy.orm import Session

from careops.domain.events import Event, EventType, record_events
from careops.domain.models import ServiceCase, utcnow
from careops.errors import InvalidTransition


class CaseStatus(StrEnum):
    RECEIVED = "received"
    VALIDATED = "validated"
    AWAITING_AUTHORISATION = "awaiting_authorisation"
    READY_TO_SCHEDULE = "ready_to_schedule"
    SCHEDULED = "scheduled"
    COMPLETED = "completed"
    BILLING_READY = "billing_ready"
    INVOICED = "invoiced"
    CLOSED = "closed"
    ON_HOLD = "on_hold"
    CANCELLED = "cancelled"


class CaseAction(StrEnum):
    VALIDATE = "validate"
    REQUIRE_AUTHORISATION = "require_authorisation"
    MARK_READY = "mark_ready"
    AUTHORISE = "authorise"
    SCHEDULE = "schedule"
    UNSCHEDULE = "unschedule"
    COMPLETE = "complete"
    MARK_BILLING_READY = "mark_billing_ready"
    INVOICE = "invoice"
    CLOSE = "close"
    HOLD = "hold"
    RESUME = "resume"
    CANCEL = "cancel"


S, A = CaseStatus, CaseAction

# The forward path. HOLD, RESUME and CANCEL are added below for every open state.
_FORWARD: dict[tuple[CaseStatus, CaseAction], CaseStatus] = {
    (S.RECEIVED, A.VALIDATE): S.VALIDATED,
    (S.VALIDATED, A.REQUIRE_AUTHORISATION): S.AWAITING_AUTHORISATION,
    (S.VALIDATED, A.MARK_READY): S.READY_TO_SCHEDULE,
    (S.AWAITING_AUTHORISATION, A.AUTHORISE): S.READY_TO_SCHEDULE,
    (S.READY_TO_SCHEDULE, A.SCHEDULE): S.SCHEDULED,
    (S.SCHEDULED, A.UNSCHEDULE): S.READY_TO_SCHEDULE,
    (S.SCHEDULED, A.COMPLETE): S.COMPLETED,
    (S.COMPLETED, A.MARK_BILLING_READY): S.BILLING_READY,
    (S.BILLING_READY, A.INVOICE): S.INVOICED,
    (S.INVOICED, A.CLOSE): S.CLOSED,
}
TERMINAL = frozenset({S.CLOSED, S.CANCELLED})
# Actions only a record takes: an appointment (booked, cancelled or missed, completed), an
# approved prior authorisation, a passed billing checklist, an invoice sent. A case is not
# scheduled, completed, authorised, made billing-ready or invoiced by hand.
BY_RECORD = frozenset({A.SCHEDULE, A.UNSCHEDULE, A.COMPLETE, A.AUTHORISE, A.MARK_BILLING_READY, A.INVOICE})
HOLDABLE = frozenset(s for s in CaseStatus if s not in TERMINAL and s is not S.ON_HOLD)
TRANSITIONS: dict[tuple[CaseStatus, CaseAction], CaseStatus] = {
    **_FORWARD,
    **{(s, A.HOLD): S.ON_HOLD for s in HOLDABLE},
    **{(s, A.CANCEL): S.CANCELLED for s in (*HOLDABLE, S.ON_HOLD)},
}


def allowed_actions(status: CaseStatus) -> list[CaseAction]:
    actions = [action for (state, action) in TRANSITIONS if state is status]
    if status is S.ON_HOLD:
        actions.insert(0, A.RESUME)
    return actions


def next_status(status: CaseStatus, action: CaseAction, held_from: CaseStatus | None) -> CaseStatus:
    """The status an action leads to, or InvalidTransition naming the allowed actions."""
    if status is S.ON_HOLD and action is A.RESUME and held_from is not None:
        return held_from
    target = TRANSITIONS.get((status, action))
    if target is None:
        allowed = [str(a) for a in allowed_actions(status)]
        raise InvalidTransition(
            f"cannot {action} a case that is {status}; allowed: {', '.join(allowed) or 'none'}",
            allowed=allowed,
        )
    return target


def transition(
    session: Session, case: ServiceCase, action: CaseAction, *, actor: str, reason_code: str | None = None
) -> CaseStatus:
    """Apply an action to a case and write ``case.transitioned`` in the same transaction."""
    current = CaseStatus(case.status)
    held_from = CaseStatus(case.held_from) if case.held_from else None
    target = next_status(current, action, held_from)
    case.held_from = str(current) if target is S.ON_HOLD else None
    case.status = str(target)
    case.updated_at = utcnow()
    payload = {"from": str(current), "to": str(target), "action": str(action)}
    if reason_code:
        payload["reason_code"] = reason_code
    record_events(session, Event.about_case(EventType.CASE_TRANSITIONED, case, actor=actor, payload=payload))
    return target
