"""Delegations and absences. A delegate must hold approvals:decide and see every location the
delegator does; a delegation is for a period and revocable. An absence makes the fallback cover
the absent approver (unless they delegated). Both are audited events."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from careops.approvals.routing import DECIDE
from careops.db import Database
from careops.domain.approvals import ApprovalAbsence, ApprovalDelegation
from careops.domain.events import Event, EventType, record_events
from careops.domain.models import User, new_id, utcnow
from careops.errors import Forbidden, NotFound, ValidationFailed
from careops.governance.permissions import grants
from careops.governance.principal import Principal
from careops.governance.roles import held_by
from careops.governance.users import find_user


def _user(session: Session, username: str) -> User:
    user = find_user(session, username)
    if user.disabled_at is not None:
        raise NotFound(f"no enabled user {username!r}")
    return user


def _period(starts_at: dt.datetime, ends_at: dt.datetime) -> None:
    if ends_at <= starts_at:
        raise ValidationFailed("the period must end after it starts")
    if ends_at - starts_at > dt.timedelta(days=366):
        raise ValidationFailed("a period is at most a year: renew it when it ends")


def _person(principal: Principal) -> str:
    if principal.user_id is None:
        raise Forbidden("delegations and absences are a person's: use the console or a personal token")
    return principal.user_id


def delegate(
    db: Database,
    principal: Principal,
    to: str,
    starts_at: dt.datetime,
    ends_at: dt.datetime,
    reason: str | None,
) -> dict[str, Any]:
    """``principal`` lets the user ``to`` decide in their place for the period."""
    _period(starts_at, ends_at)
    delegator = _person(principal)
    with db.transaction() as session:
        target = _user(session, to)
        if target.id == delegator:
            raise ValidationFailed("delegate to someone else")
        if not grants(held_by(session, target.roles), DECIDE):
            raise ValidationFailed(f"{to} may not decide approvals (their roles lack {DECIDE})")
        me = session.get(User, delegator)
        assert me is not None
        if target.locations is not None and (
            me.locations is None or set(me.locations) - set(target.locations)
        ):
            raise ValidationFailed(f"{to} does not see every location you do: choose someone who does")
        row = ApprovalDelegation(id=new_id(), delegator=delegator, delegate=target.id, starts_at=starts_at,
                                 ends_at=ends_at, reason=reason, created_by=principal.id)  # fmt: skip
        session.add(row)
        session.flush()
        payload = {"delegate": target.id, "starts_at": starts_at.isoformat(), "ends_at": ends_at.isoformat()}
        record_events(
            session,
            Event(EventType.APPROVAL_DELEGATED, "approval_delegation", row.id, principal.id, payload=payload),
        )
        return delegation_view(row)


def revoke(db: Database, principal: Principal, delegation_id: str) -> dict[str, Any]:
    with db.transaction() as session:
        row = session.get(ApprovalDelegation, delegation_id)
        if row is None or (row.delegator != principal.user_id and not principal.can("admin")):
            raise NotFound("no delegation of yours with this id")
        if row.revoked_at is None:
            row.revoked_at = utcnow()
            record_events(
                session,
                Event(EventType.APPROVAL_DELEGATION_REVOKED, "approval_delegation", row.id, principal.id,
                      payload={"delegate": row.delegate}),
            )  # fmt: skip
        return delegation_view(row)


def delegations(db: Database, principal: Principal) -> list[dict[str, Any]]:
    """The delegations the caller gave or received (none for a system's token)."""
    me = principal.user_id
    with db.sessions() as session:
        rows = session.scalars(
            select(ApprovalDelegation)
            .where((ApprovalDelegation.delegator == me) | (ApprovalDelegation.delegate == me))
            .order_by(ApprovalDelegation.starts_at.desc())
        )
        return [delegation_view(r) for r in rows]


def record_absence(
    db: Database,
    principal: Principal,
    starts_at: dt.datetime,
    ends_at: dt.datetime,
    username: str | None = None,
) -> dict[str, Any]:
    """An absence of the caller (or, for an administrator, of ``username``)."""
    _period(starts_at, ends_at)
    with db.transaction() as session:
        if username is not None and not principal.can("admin"):
            raise Forbidden("only an administrator records someone else's absence")
        user_id = _user(session, username).id if username is not None else _person(principal)
        row = ApprovalAbsence(
            id=new_id(), user_id=user_id, starts_at=starts_at, ends_at=ends_at, created_by=principal.id
        )
        session.add(row)
        session.flush()
        payload = {"user": user_id, "starts_at": starts_at.isoformat(), "ends_at": ends_at.isoformat()}
        record_events(
            session,
            Event(
                EventType.APPROVAL_ABSENCE_RECORDED, "approval_absence", row.id, principal.id, payload=payload
            ),
        )
        return {"id": row.id, **payload}


def delegation_view(row: ApprovalDelegation) -> dict[str, Any]:
    return {
        "id": row.id,
        "delegator": row.delegator,
        "delegate": row.delegate,
        "starts_at": row.starts_at.isoformat(),
        "ends_at": row.ends_at.isoformat(),
        "reason": row.reason,
        "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None,
    }
