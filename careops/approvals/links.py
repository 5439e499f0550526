"""Signed decision links: a random token (its SHA-256 stored) bound to one approver and one step
of one request. Opening one shows a confirmation page (a GET never decides); the decision is a
POST by the logged-in approver it was sent to, taken once, before it expires; a link of a step
that has moved on, or of a changed record, is refused with the reason."""

from __future__ import annotations

import datetime as dt
from typing import Any

from careops.approvals.requests import active_step, decide_in, event, link_token_digest, steps_of, view
from careops.db import Database
from careops.domain.approvals import ApprovalLink, ApprovalRequest
from careops.domain.events import EventType, record_events
from careops.domain.models import find, utcnow
from careops.errors import Conflict, Forbidden, NotFound
from careops.governance.principal import Principal


def _usable(link: ApprovalLink | None, principal: Principal, now: dt.datetime) -> ApprovalLink:
    if link is None:
        raise NotFound("this decision link is not known: open the approval from your queue instead")
    if link.approver != principal.user_id:
        raise Forbidden("this decision link was sent to someone else: it is bound to its approver")
    if link.used_at is not None:
        raise Conflict("this decision link was used already: each link decides once", reason="link_used")
    if link.expires_at <= now:
        raise Conflict(
            "this decision link has expired: open the approval from your queue", reason="link_expired"
        )
    return link


def open_link(db: Database, token: str, principal: Principal) -> dict[str, Any]:
    """What the confirmation page shows (and ``approval.viewed``); nothing is decided."""
    now = utcnow()
    with db.transaction() as session:
        link = _usable(session.get(ApprovalLink, link_token_digest(token)), principal, now)
        request = find(session, ApprovalRequest, link.request_id)
        assert request is not None
        steps = steps_of(session, request.id)
        active_step(steps, request, link.position)
        record_events(session, event(EventType.APPROVAL_VIEWED, request, principal.id, via="link"))
        return view(session, request, steps)


def decide_by_link(
    db: Database, token: str, principal: Principal, decision: str, comment: str | None
) -> dict[str, Any]:
    """Decide with a link: the link is marked used in the same transaction as the decision."""
    now = utcnow()
    with db.transaction() as session:
        digest = link_token_digest(token)
        link = _usable(session.get(ApprovalLink, digest, with_for_update=True), principal, now)
        request = find(session, ApprovalRequest, link.request_id, for_update=True)
        assert request is not None and principal.user_id is not None
        link.used_at = now  # the link is locked: whoever reads it next finds it used
        return decide_in(
            session,
            request,
            principal.user_id,
            decision,
            comment,
            via="link",
            now=now,
            position=link.position,
        )
