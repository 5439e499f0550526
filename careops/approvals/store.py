"""Policy versions in the database: validation (the loader, then the decision-table check),
activation (audited, with who and why), the active policy of a name and any pinned version, and
the shipped policies' directory (``workflows/policies/``)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from careops.approvals.policies import Policy, load_text
from careops.approvals.tables import check
from careops.db import Database
from careops.domain.approvals import ApprovalPolicyVersion
from careops.domain.events import EventType
from careops.domain.versions import Activation, activate_version
from careops.errors import NotFound, ValidationFailed
from careops.governance.roles import effective_roles

SHIPPED = Path(__file__).resolve().parents[2] / "workflows" / "policies"


def shipped_directory() -> Path:
    return SHIPPED


def problems(session: Session | None, policy: Policy) -> list[str]:
    """What keeps ``policy`` from being activated: table gaps, shadowed rules, unknown roles."""
    try:
        found = check(policy).problems()
    except ValueError as exc:
        found = [str(exc)]
    if session is not None:
        roles = effective_roles(session)
        named = {who.name for rule in policy.rules for step in rule.chain for who in (step.who, step.fallback)
                 if who is not None and who.kind == "role"}  # fmt: skip
        found += [f"no role {name!r}" for name in sorted(named - set(roles))]
    return [f"{policy.source}: {p}" for p in found]


def parse_valid(session: Session | None, text: str, source: str) -> Policy:
    """The policy in ``text``, or 422 with every problem (the loader's, then the table's)."""
    try:
        policy = load_text(text, source)
    except ValueError as exc:
        raise ValidationFailed(str(exc), errors=[{"field": "content", "message": str(exc)}]) from None
    found = problems(session, policy)
    if found:
        raise ValidationFailed(
            f"the policy does not validate: {found[0]}",
            errors=[{"field": "content", "message": p} for p in found],
        )
    return policy


def activate(session: Session, text: str, source: str, *, actor: str, reason: str) -> Activation:
    policy = parse_valid(session, text, source)
    return activate_version(
        session,
        ApprovalPolicyVersion,
        policy,
        text,
        actor=actor,
        reason=reason,
        event=EventType.APPROVAL_POLICY_ACTIVATED,
        subject_type="approval_policy",
    )


def activate_directory(db: Database, directory: Path, *, actor: str, reason: str) -> list[Activation]:
    """Validate every policy in ``directory``, then activate them all: one bad file activates none."""
    texts = {str(path): path.read_text(encoding="utf-8") for path in sorted(directory.glob("*.yaml"))}
    with db.transaction() as session:
        for source, text in texts.items():
            parse_valid(session, text, source)
        return [activate(session, text, source, actor=actor, reason=reason) for source, text in texts.items()]


# Parsed versions by content hash: a version never changes, so it is parsed once per process.
_PARSED: dict[str, Policy] = {}


def _parsed(session: Session, name: str, content_hash: str) -> Policy:
    policy = _PARSED.get(content_hash)
    if policy is None:
        text = session.scalars(
            select(ApprovalPolicyVersion.content).where(
                ApprovalPolicyVersion.name == name, ApprovalPolicyVersion.content_hash == content_hash
            )
        ).one()
        policy = _PARSED.setdefault(content_hash, load_text(text, name))
    return policy


def active(session: Session, name: str) -> Policy:
    found = session.scalar(
        select(ApprovalPolicyVersion.content_hash).where(
            ApprovalPolicyVersion.name == name, ApprovalPolicyVersion.active.is_(True)
        )
    )
    if found is None:
        raise NotFound(f"no active approval policy {name!r} (careops approvals activate)")
    return _parsed(session, name, found)


def is_active(session: Session, name: str) -> bool:
    found = session.scalar(
        select(ApprovalPolicyVersion.id).where(
            ApprovalPolicyVersion.name == name, ApprovalPolicyVersion.active.is_(True)
        )
    )
    return found is not None


def pinned(session: Session, name: str, content_hash: str) -> Policy:
    """The version a request was routed with (it keeps it, whatever is activated since)."""
    return _parsed(session, name, content_hash)


def active_versions(db: Database) -> list[ApprovalPolicyVersion]:
    with db.sessions() as session:
        return list(
            session.scalars(
                select(ApprovalPolicyVersion)
                .where(ApprovalPolicyVersion.active.is_(True))
                .order_by(ApprovalPolicyVersion.name)
            )
        )
