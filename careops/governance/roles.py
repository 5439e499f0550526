"""Roles as data: the shipped defaults, overridden or extended by an administrator's rows."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from careops.db import Database
from careops.domain.events import Event, EventType, record_events
from careops.domain.models import Role, utcnow
from careops.domain.phi import PhiCategory
from careops.errors import ValidationFailed
from careops.governance.permissions import (
    DEFAULT_MASKING,
    PERMISSIONS,
    SHIPPED_ROLES,
    Masking,
    RoleSpec,
    Visibility,
)


def effective_roles(session: Session) -> dict[str, RoleSpec]:
    """Every role: the shipped ones, with an administrator's version winning, plus added ones."""
    roles = dict(SHIPPED_ROLES)
    for row in session.scalars(select(Role)):
        masking = {PhiCategory(k): Visibility(v) for k, v in row.masking.items()}
        roles[row.name] = RoleSpec(row.description, frozenset(row.permissions), masking)
    return roles


def held_by(session: Session, role_names: list[str]) -> frozenset[str]:
    """The permissions the named roles grant together (unknown names grant nothing)."""
    known = effective_roles(session)
    return frozenset(p for name in role_names if name in known for p in known[name].permissions)


def roles(db: Database) -> dict[str, RoleSpec]:
    with db.sessions() as session:
        return effective_roles(session)


def check_roles(session: Session, names: list[str]) -> list[str]:
    known = effective_roles(session)
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ValidationFailed(f"unknown roles: {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return sorted(set(names))


def parse_masking(spec: dict[str, str]) -> Masking:
    """``{"name": "clear", ...}`` checked against the categories; unnamed categories keep the default."""
    try:
        given = {PhiCategory(k): Visibility(v) for k, v in spec.items()}
    except ValueError as error:
        raise ValidationFailed(
            f"{error}; categories: {', '.join(PhiCategory)}; visibilities: {', '.join(Visibility)}"
        ) from None
    return {**DEFAULT_MASKING, **given}


def set_role(
    db: Database,
    name: str,
    permissions: list[str],
    *,
    actor: str,
    description: str | None = None,
    masking: dict[str, str] | None = None,
) -> RoleSpec:
    """Define or redefine a role (audited as ``role.changed`` with before and after)."""
    unknown = sorted(set(permissions) - set(PERMISSIONS))
    if unknown:
        raise ValidationFailed(f"unknown permissions: {', '.join(unknown)}; known: {', '.join(PERMISSIONS)}")
    with db.transaction() as session:
        before = effective_roles(session).get(name)
        row = session.get(Role, name) or Role(name=name)
        row.description = description or (before.description if before else name)
        row.permissions = sorted(set(permissions))
        new_masking = (
            parse_masking(masking or {}) if masking is not None or before is None else before.masking
        )
        row.masking = {str(k): str(v) for k, v in new_masking.items()}
        row.updated_at = utcnow()
        session.add(row)
        payload = {
            "role": name,
            "permissions_before": sorted(before.permissions) if before else None,
            "permissions": row.permissions,
            "masking": row.masking,
        }
        record_events(session, Event(EventType.ROLE_CHANGED, "role", name[:32], actor=actor, payload=payload))
    return RoleSpec(row.description, frozenset(row.permissions), new_masking)
