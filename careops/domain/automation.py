"""The automation records: workflow template versions and their activations, the engine's place
in the event log, every rule run, the timers and waits of rules that act later, the ticks of
scheduled actions and the messages rules queue.

A template version is pinned by its content hash: timers and waits keep the version they started
with, new runs take the active one. ``automation_run.run_key`` (version, rule, event or timer or
tick, step) makes every action run once.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from careops.domain.models import Base, VersionColumns, new_id, utcnow


class WorkflowVersion(VersionColumns, Base):
    """One version of a workflow template as loaded (its YAML text), and whether it is active:
    at most one active version per name. Activation and retirement are audited events."""

    __tablename__ = "workflow_version"
    __table_args__ = (
        Index("ux_workflow_version_hash", "name", "content_hash", unique=True),
        Index(
            "ux_workflow_active",
            "name",
            unique=True,
            postgresql_where=text("active"),
            sqlite_where=text("active"),
        ),
    )


class AutomationCursor(Base):
    """How far the engine has read the audit chain (the sealed events, in ``seq`` order)."""

    __tablename__ = "automation_cursor"
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class AutomationRun(Base):
    """One step of one rule run for one trigger (an event, a timer or a schedule tick): done,
    failed, waiting, rate_limited or loop_stopped. ``depth``: how many rule runs caused the event
    (0 for a person's or a channel's), ``cause_run_id`` the run that wrote it."""

    __tablename__ = "automation_run"
    __table_args__ = (
        Index("ix_automation_run_rule", "workflow", "rule", "started_at"),
        Index("ix_automation_run_started", "started_at"),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    run_key: Mapped[str] = mapped_column(String(200), unique=True)
    workflow: Mapped[str] = mapped_column(String(100))
    content_hash: Mapped[str] = mapped_column(String(64))
    rule: Mapped[str] = mapped_column(String(100))
    step: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(64))
    trigger: Mapped[str] = mapped_column(String(64))  # event type, "timer", "schedule"
    event_id: Mapped[int | None] = mapped_column(BigInteger)
    subject_type: Mapped[str | None] = mapped_column(String(32))
    subject_id: Mapped[str | None] = mapped_column(String(32))
    location_id: Mapped[str | None] = mapped_column(String(32))
    depth: Mapped[int] = mapped_column(Integer, default=0)
    cause_run_id: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)  # ids made, or the error's name
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column()


class AutomationTimer(Base):
    """A rule's later moment: a time trigger (``after`` / ``before``) or a ``wait`` step, due at
    ``due_at`` unless an awaited event comes first. Pending ones are swept by due time (a partial
    index); one sweep claims each (``FOR UPDATE SKIP LOCKED``), so each fires once."""

    __tablename__ = "automation_timer"
    __table_args__ = (
        Index(
            "ix_automation_timer_due",
            "due_at",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
        Index(
            "ix_automation_timer_waiting",
            "subject_id",
            "awaits",
            postgresql_where=text("status = 'pending' AND awaits IS NOT NULL"),
            sqlite_where=text("status = 'pending' AND awaits IS NOT NULL"),
        ),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    timer_key: Mapped[str] = mapped_column(String(200), unique=True)
    workflow: Mapped[str] = mapped_column(String(100))
    content_hash: Mapped[str] = mapped_column(String(64))
    rule: Mapped[str] = mapped_column(String(100))
    next_step: Mapped[int] = mapped_column(Integer, default=0)  # where the rule goes on
    awaits: Mapped[str | None] = mapped_column(String(64))  # an event type that ends a wait early
    on_event: Mapped[str | None] = mapped_column(String(16))  # then: stop (the default) or continue
    event_id: Mapped[int | None] = mapped_column(BigInteger)  # the event that started it
    subject_type: Mapped[str] = mapped_column(String(32))
    subject_id: Mapped[str] = mapped_column(String(32))
    location_id: Mapped[str | None] = mapped_column(String(32))
    depth: Mapped[int] = mapped_column(Integer, default=0)
    due_at: Mapped[dt.datetime] = mapped_column()
    status: Mapped[str] = mapped_column(String(16), default="pending")  # fired, answered, cancelled
    fired_at: Mapped[dt.datetime | None] = mapped_column()
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ScheduleTick(Base):
    """One tick of a scheduled action: run (ok or failed) or skipped by its catch-up policy. The
    primary key makes a tick fire once however many workers reach it."""

    __tablename__ = "schedule_tick"
    schedule: Mapped[str] = mapped_column(String(200), primary_key=True)  # workflow/rule
    tick_at: Mapped[dt.datetime] = mapped_column(primary_key=True)
    status: Mapped[str] = mapped_column(String(16))  # running, ok, failed, skipped
    worker: Mapped[str | None] = mapped_column(String(100))
    error: Mapped[str | None] = mapped_column(String(500))
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column()


class QueuedMessage(Base):
    """A message a rule rendered for a recipient (a role, a user, the patient, the referrer), kept
    until a messaging connector delivers it. The body may hold what the template showed of the
    record, so it is read with ``cases:read`` and never copied into events."""

    __tablename__ = "queued_message"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    channel: Mapped[str] = mapped_column(String(32))
    recipient: Mapped[str] = mapped_column(String(200))
    subject: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    case_id: Mapped[str | None] = mapped_column(ForeignKey("service_case.id"))
    location_id: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
