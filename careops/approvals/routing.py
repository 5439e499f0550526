"""Who decides a step: the users a step names (a role at the request's location, a user, a
group), less those away or disabled, with the fallback covering when too few remain; and whom a
user may decide for (their active delegations)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from careops.approvals.policies import Policy, Step, Who
from careops.domain.approvals import ApprovalAbsence, ApprovalDelegation
from careops.domain.models import User
from careops.governance.permissions import RoleSpec, grants
from careops.governance.roles import effective_roles

DECIDE = "approvals:decide"


@dataclass(frozen=True)
class Resolved:
    approvers: list[dict[str, str]]  # [{"user": id, "via": ...}]
    fallback_reason: str | None  # why the fallback covers, or None


def can_decide_at(user: User, location_id: str | None, roles: dict[str, RoleSpec]) -> bool:
    """Whether ``user`` is enabled, sees ``location_id`` (None: any) and holds approvals:decide
    (``roles``: the effective roles, read once by the caller)."""
    if user.disabled_at is not None:
        return False
    if location_id is not None and user.locations is not None and location_id not in user.locations:
        return False
    return grants(
        frozenset(p for name in user.roles if name in roles for p in roles[name].permissions), DECIDE
    )


def _named(session: Session, policy: Policy, who: Who) -> list[User]:
    if who.kind == "role":
        users = session.scalars(select(User).where(User.disabled_at.is_(None)).order_by(User.username)).all()
        return [u for u in users if who.name in (u.roles or [])]
    names = [who.name] if who.kind == "user" else list(policy.groups.get(who.name, ()))
    return list(session.scalars(select(User).where(User.username.in_(names)).order_by(User.username)))


def away(session: Session, user_ids: list[str], now: dt.datetime) -> set[str]:
    rows = session.scalars(
        select(ApprovalAbsence.user_id).where(
            ApprovalAbsence.user_id.in_(user_ids),
            ApprovalAbsence.starts_at <= now,
            ApprovalAbsence.ends_at > now,
        )
    )
    return set(rows)


def delegations_to(session: Session, delegate: str, now: dt.datetime) -> list[ApprovalDelegation]:
    """The delegations ``delegate`` may act on now."""
    return list(
        session.scalars(
            select(ApprovalDelegation).where(
                ApprovalDelegation.delegate == delegate,
                ApprovalDelegation.revoked_at.is_(None),
                ApprovalDelegation.starts_at <= now,
                ApprovalDelegation.ends_at > now,
            )
        )
    )


def _delegated(session: Session, user_ids: list[str], now: dt.datetime) -> set[str]:
    rows = session.scalars(
        select(ApprovalDelegation.delegator).where(
            ApprovalDelegation.delegator.in_(user_ids),
            ApprovalDelegation.revoked_at.is_(None),
            ApprovalDelegation.starts_at <= now,
            ApprovalDelegation.ends_at > now,
        )
    )
    return set(rows)


class Resolver:
    """Approvers for steps at locations, at one moment: the roles read once, and for each ``who``
    its users with those away (and not delegating) read once; locations then filter them (a sweep
    resolves many steps)."""

    def __init__(self, session: Session, policy: Policy, now: dt.datetime) -> None:
        self.session, self.policy, self.now = session, policy, now
        self._roles: dict[str, RoleSpec] | None = None
        self._named: dict[str, tuple[list[User], set[str]]] = {}

    def _eligible(self, who: Who, location_id: str) -> tuple[list[User], int]:
        """Those ``who`` names who can decide now at ``location_id`` (an absent one with a delegate
        counts: the delegate decides for them), and how many were left out as absent."""
        if self._roles is None:
            self._roles = effective_roles(self.session)
        if who.describe() not in self._named:
            users = [u for u in _named(self.session, self.policy, who) if can_decide_at(u, None, self._roles)]
            ids = [u.id for u in users]
            self._named[who.describe()] = (
                users,
                away(self.session, ids, self.now) - _delegated(self.session, ids, self.now),
            )
        users, absent = self._named[who.describe()]
        here = [u for u in users if u.locations is None or location_id in u.locations]
        return [u for u in here if u.id not in absent], sum(1 for u in here if u.id in absent)

    def resolve(self, step: Step, location_id: str, need: int) -> Resolved:
        """The approvers of ``step`` at ``location_id``; the fallback joins when fewer than
        ``need`` (the quorum) can decide, saying why."""
        present, absent = self._eligible(step.who, location_id)
        approvers = [{"user": u.id, "via": step.who.describe()} for u in present]
        if len(approvers) >= need or step.fallback is None:
            return Resolved(approvers, None)
        known = {a["user"] for a in approvers}
        approvers += [a for a in self.fallback(step, location_id) if a["user"] not in known]
        return Resolved(approvers, "absent" if absent else "nobody holds it here")

    def fallback(self, step: Step, location_id: str) -> list[dict[str, str]]:
        if step.fallback is None:
            return []
        return [{"user": u.id, "via": "fallback"} for u in self._eligible(step.fallback, location_id)[0]]
