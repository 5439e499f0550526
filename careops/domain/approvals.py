"""The approval records: policy versions, requests, the steps of their chains, each person's
decision, delegations, absences and signed decision links.

A request names the record it decides on (``subject_type``, ``subject_id``), the facts it was
routed on (amount, urgency, risk, service, payer, location) and a fingerprint of what is decided
(a decision on a record changed since is refused). Its chain is a sequence of steps; one step is
``active`` at a time, with its approvers resolved when it started (who covers whom, and why) and a
due time that the escalation sweep reads through a partial index.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from careops.domain.models import Base, VersionColumns, new_id, utcnow

OPEN = "pending"
OUTCOMES = ("approved", "rejected", "returned", "expired", "withdrawn")
DECISIONS = ("approve", "reject", "return")


class ApprovalPolicyVersion(VersionColumns, Base):
    """One version of an approval policy as loaded (its YAML), at most one active per name."""

    __tablename__ = "approval_policy_version"
    __table_args__ = (
        Index("ux_approval_policy_hash", "name", "content_hash", unique=True),
        Index(
            "ux_approval_policy_active",
            "name",
            unique=True,
            postgresql_where=text("active"),
            sqlite_where=text("active"),
        ),
    )


class ApprovalRequest(Base):
    """An approval asked for a record: pending → approved / rejected / returned / expired /
    withdrawn. ``amended_by``: who re-submitted it with changed amounts (they may not approve)."""

    __tablename__ = "approval_request"
    __table_args__ = (
        Index("ix_approval_request_status", "status", "location_id", "requested_at"),
        Index("ix_approval_request_subject", "subject_type", "subject_id"),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    subject_type: Mapped[str] = mapped_column(String(32))
    subject_id: Mapped[str] = mapped_column(String(32))
    case_id: Mapped[str | None] = mapped_column(String(32))
    location_id: Mapped[str] = mapped_column(String(32))
    policy: Mapped[str] = mapped_column(String(100))
    policy_hash: Mapped[str] = mapped_column(String(64))
    policy_version: Mapped[str] = mapped_column(String(32))
    matched: Mapped[list[str]] = mapped_column(default=list)  # the table rows that chose the chain
    facts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    fingerprint: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=OPEN)
    requested_by: Mapped[str] = mapped_column(String(100))
    amended_by: Mapped[list[str]] = mapped_column(default=list)
    separation: Mapped[dict[str, Any]] = mapped_column(default=dict)
    requested_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    decided_at: Mapped[dt.datetime | None] = mapped_column()


class ApprovalStep(Base):
    """One step of a request's chain. ``approvers``: ``[{"user": id, "via": "role:X" | "user" |
    "group:G" | "fallback" | "escalation"}]``; ``quorum``: how many approvals it needs."""

    __tablename__ = "approval_step"
    __table_args__ = (
        Index(
            "ix_approval_step_due",
            "due_at",
            postgresql_where=text("status = 'active' AND escalated_at IS NULL"),
            sqlite_where=text("status = 'active' AND escalated_at IS NULL"),
        ),
        Index("ix_approval_step_request", "request_id", "position", unique=True),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    request_id: Mapped[str] = mapped_column(ForeignKey("approval_request.id"))
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(100))
    spec: Mapped[dict[str, Any]] = mapped_column(default=dict)  # the policy's step, as routed
    approvers: Mapped[list[dict[str, Any]]] = mapped_column(default=list)
    quorum: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(16), default="waiting")  # active, approved, rejected, …
    started_at: Mapped[dt.datetime | None] = mapped_column()
    due_at: Mapped[dt.datetime | None] = mapped_column()
    escalated_at: Mapped[dt.datetime | None] = mapped_column()
    finished_at: Mapped[dt.datetime | None] = mapped_column()


class ApprovalDecision(Base):
    """One person's decision on one step: who decided, on whose behalf (a delegation), how."""

    __tablename__ = "approval_decision"
    __table_args__ = (Index("ix_approval_decision_request", "request_id", "position"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    request_id: Mapped[str] = mapped_column(ForeignKey("approval_request.id"))
    position: Mapped[int] = mapped_column(Integer)
    decision: Mapped[str] = mapped_column(String(16))
    decided_by: Mapped[str] = mapped_column(String(100))
    on_behalf_of: Mapped[str | None] = mapped_column(String(100))
    comment: Mapped[str | None] = mapped_column(String(1000))
    via: Mapped[str] = mapped_column(String(16))  # console, api, link
    decided_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ApprovalDelegation(Base):
    """``delegator`` lets ``delegate`` decide in their place from ``starts_at`` to ``ends_at``."""

    __tablename__ = "approval_delegation"
    __table_args__ = (Index("ix_approval_delegation_delegator", "delegator", "ends_at"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    delegator: Mapped[str] = mapped_column(String(32))
    delegate: Mapped[str] = mapped_column(String(32))
    starts_at: Mapped[dt.datetime] = mapped_column()
    ends_at: Mapped[dt.datetime] = mapped_column()
    reason: Mapped[str | None] = mapped_column(String(500))
    created_by: Mapped[str] = mapped_column(String(100))
    revoked_at: Mapped[dt.datetime | None] = mapped_column()
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ApprovalAbsence(Base):
    """A user away (out of office) from ``starts_at`` to ``ends_at``: fallbacks cover them."""

    __tablename__ = "approval_absence"
    __table_args__ = (Index("ix_approval_absence_user", "user_id", "ends_at"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(String(32))
    starts_at: Mapped[dt.datetime] = mapped_column()
    ends_at: Mapped[dt.datetime] = mapped_column()
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ApprovalLink(Base):
    """A signed decision link: its token kept as SHA-256, bound to one approver and one step,
    refused after ``used_at`` or ``expires_at``."""

    __tablename__ = "approval_link"
    token_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("approval_request.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    approver: Mapped[str] = mapped_column(String(32))
    expires_at: Mapped[dt.datetime] = mapped_column()
    used_at: Mapped[dt.datetime | None] = mapped_column()
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
