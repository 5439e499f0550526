"""The catalogue of business events and the one function (``record_events``) that records them.

An event is written in the caller's transaction together with the change it describes, and with
an outbox row for each follow-up the change needs. Payloads carry ids and codes, never free-text PHI.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from sqlalchemy import BindParameter, Table, TextClause, bindparam, insert, text
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from careops.db import Tail, insert_together, row_parameters, run, values_sql
from careops.domain.models import Base, BusinessEvent, ExceptionItem, OutboxMessage, ServiceCase, utcnow


class EventType(StrEnum):
    REFERRAL_RECEIVED = "referral.received"
    REFERRAL_VALIDATED = "referral.validated"
    REFERRAL_INCOMPLETE = "referral.incomplete"
    REFERRAL_DUPLICATE_DETECTED = "referral.duplicate_detected"
    REFERRAL_QUARANTINED = "referral.quarantined"
    QUARANTINE_REPLAYED = "quarantine.replayed"
    QUARANTINE_REPLAY_FAILED = "quarantine.replay_failed"
    QUARANTINE_DISCARDED = "quarantine.discarded"
    CASE_CREATED = "case.created"
    CASE_TRANSITIONED = "case.transitioned"
    CASE_TRIAGED = "case.triaged"
    AUTHORISATION_REQUIRED = "authorisation.required"
    AUTHORISATION_REQUESTED = "authorisation.requested"
    AUTHORISATION_APPROVED = "authorisation.approved"
    AUTHORISATION_DENIED = "authorisation.denied"
    AUTHORISATION_EXPIRED = "authorisation.expired"
    PATIENT_REGISTERED = "patient.registered"
    PATIENT_UPDATED = "patient.updated"
    APPOINTMENT_PROPOSED = "appointment.proposed"
    APPOINTMENT_CONFIRMED = "appointment.confirmed"
    APPOINTMENT_BOOKED = "appointment.booked"
    APPOINTMENT_MODIFIED = "appointment.modified"
    APPOINTMENT_CANCELLED = "appointment.cancelled"
    APPOINTMENT_NO_SHOW = "appointment.no_show"
    APPOINTMENT_COMPLETED = "appointment.completed"
    APPOINTMENT_RESCHEDULED = "appointment.rescheduled"
    REFERRAL_MODIFIED = "referral.modified"
    PATIENT_MERGE_REQUESTED = "patient.merge_requested"
    RESULT_RECEIVED = "result.received"
    CHARGES_RECORDED = "charges.recorded"
    BILLING_DISCREPANCIES_FOUND = "billing.discrepancies_found"
    STOCK_MOVED = "stock.moved"
    STOCK_BELOW_THRESHOLD = "stock.below_threshold"
    REPLENISHMENT_DRAFTED = "replenishment.drafted"
    REPLENISHMENT_REQUESTED = "replenishment.requested"
    REPLENISHMENT_APPROVED = "replenishment.approved"
    REPLENISHMENT_ORDERED = "replenishment.ordered"
    REPLENISHMENT_RECEIVED = "replenishment.received"
    REPLENISHMENT_CANCELLED = "replenishment.cancelled"
    SHIFT_PLANNED = "shift.planned"
    SERVICE_PLAN_CREATED = "service_plan.created"
    STAFF_CONFLICT_REPORTED = "staff.conflict_reported"
    STAFF_REASSIGNED = "staff.reassigned"
    STAFF_CONFLICT_CLOSED = "staff.conflict_closed"
    STAFF_CREDENTIAL_EXPIRING = "staff.credential_expiring"
    INVOICE_REQUESTED = "invoice.requested"
    INVOICE_APPROVED = "invoice.approved"
    INVOICE_SENT = "invoice.sent"
    INVOICE_PAID = "invoice.paid"
    INVOICE_REJECTED = "invoice.rejected"
    EXCEPTION_OPENED = "exception.opened"
    EXCEPTION_RESOLVED = "exception.resolved"
    EXCEPTION_ASSIGNED = "exception.assigned"
    TOKEN_CREATED = "token.created"  # noqa: S105 - an event name, not a secret
    TOKEN_REVOKED = "token.revoked"  # noqa: S105 - an event name, not a secret
    TOKEN_ROTATED = "token.rotated"  # noqa: S105 - an event name, not a secret
    TOKEN_USED = "token.used"  # noqa: S105 - an event name, not a secret
    KEYS_ROTATED = "keys.rotated"
    KEYS_REWRAPPED = "keys.rewrapped"
    AUDIT_EXPORTED = "audit.exported"
    USER_CREATED = "user.created"
    USER_DISABLED = "user.disabled"
    USER_ROLES_CHANGED = "user.roles_changed"
    USER_PASSWORD_CHANGED = "user.password_changed"  # noqa: S105 - an event name, not a secret
    USER_LOGGED_IN = "user.logged_in"
    USER_LOGIN_FAILED = "user.login_failed"
    USER_LOCKED = "user.locked"
    USER_LOGGED_OUT = "user.logged_out"
    ROLE_CHANGED = "role.changed"
    PHI_REVEALED = "phi.revealed"
    PHI_READ = "phi.read"
    CASES_EXPORTED = "cases.exported"
    KPIS_EXPORTED = "kpis.exported"
    EVENTS_EXPORTED = "events.exported"
    CONNECTOR_CREATED = "connector.created"
    REFERENCE_ADDED = "reference.added"
    REFERENCE_CHANGED = "reference.changed"
    REFERENCE_RETIRED = "reference.retired"
    CONNECTOR_SECRET_ROTATED = "connector.secret_rotated"  # noqa: S105 - an event name, not a secret
    WORKFLOW_ACTIVATED = "workflow.activated"
    WORKFLOW_DEACTIVATED = "workflow.deactivated"
    AUTOMATION_FAILED = "automation.failed"
    AUTOMATION_LOOP_STOPPED = "automation.loop_stopped"
    AUTOMATION_RATE_LIMITED = "automation.rate_limited"
    SCHEDULE_FAILED = "schedule.failed"
    SCHEDULE_SKIPPED = "schedule.skipped"
    TASK_CREATED = "task.created"
    MESSAGE_QUEUED = "message.queued"
    RECORD_FIELD_SET = "record.field_set"
    CONNECTOR_CALL_QUEUED = "connector.call_queued"
    AI_RECOMMENDATION_REQUESTED = "ai.recommendation_requested"
    ANOMALY_DETECTED = "anomaly.detected"
    APPROVAL_POLICY_ACTIVATED = "approval.policy_activated"
    APPROVAL_REQUESTED = "approval.requested"
    APPROVAL_NOTIFIED = "approval.notified"
    APPROVAL_VIEWED = "approval.viewed"
    APPROVAL_DECISION_RECORDED = "approval.decision_recorded"
    APPROVAL_DECIDED = "approval.decided"
    APPROVAL_ESCALATED = "approval.escalated"
    APPROVAL_FALLBACK_USED = "approval.fallback_used"
    APPROVAL_RESUBMITTED = "approval.resubmitted"
    APPROVAL_DELEGATED = "approval.delegated"
    APPROVAL_DELEGATION_REVOKED = "approval.delegation_revoked"
    APPROVAL_ABSENCE_RECORDED = "approval.absence_recorded"
    DELIVERY_SUCCEEDED = "delivery.succeeded"
    DELIVERY_FAILED = "delivery.failed"
    DELIVERY_DEAD_LETTERED = "delivery.dead_lettered"
    DELIVERY_REPLAYED = "delivery.replayed"


class FollowUp(StrEnum):
    """Outbox destinations: what the dispatcher starts for a committed event."""

    AWAIT_TRIAGE = "workflow.await_triage"


_events = Base.metadata.tables[BusinessEvent.__tablename__]
_outbox = Base.metadata.tables[OutboxMessage.__tablename__]
_OUTBOX_INSERT = insert(_outbox)
_TRACE_CONTEXT = TraceContextTextMapPropagator()


# The columns an event is written with, in order (also what the audit chain exports).
EVENT_COLUMNS = (
    "type",
    "subject_type",
    "subject_id",
    "case_id",
    "location_id",
    "actor",
    "correlation_id",
    "payload",
    "occurred_at",
)


def _event_values(rows: int) -> tuple[str, list[BindParameter[Any]]]:
    """``INSERT INTO business_event (…) VALUES (…), …`` for ``rows`` events, and its typed parameters."""
    return values_sql(_events, EVENT_COLUMNS, rows)


@functools.cache
def _insert_returning(rows: int) -> TextClause:
    """The events, returning the ids the outbox rows need (then inserted apart)."""
    sql, parameters = _event_values(rows)
    return text(f"{sql} RETURNING id, type, subject_id").bindparams(*parameters)


@functools.cache
def _with_outbox(rows: int, follow_ups: int) -> Tail:
    """PostgreSQL: the events and their outbox rows in one statement (a data-modifying CTE), which
    ``insert_together`` may join to its own."""
    sql, parameters = _event_values(rows)
    wanted = ", ".join(f"(:f_type_{j}, :f_subject_{j}, :f_destination_{j})" for j in range(follow_ups))
    final = (
        f"INSERT INTO {_outbox.name} (event_id, destination, status, attempts, created_at, trace_parent) "  # noqa: S608 - constants; values are bound
        "SELECT e.id, f.destination, 'pending', 0, :outbox_created_at, :outbox_trace_parent FROM e "
        f"JOIN (VALUES {wanted}) AS f (type, subject_id, destination) "
        "ON f.type = e.type AND f.subject_id = e.subject_id"
    )
    created_at = bindparam("outbox_created_at", type_=_outbox.c.created_at.type)
    trace_parent = bindparam("outbox_trace_parent", type_=_outbox.c.trace_parent.type)
    return Tail(
        (f"e AS ({sql} RETURNING id, type, subject_id)",), final, (*parameters, created_at, trace_parent)
    )


def _trace_parent() -> str | None:
    """The W3C traceparent of the current span, if one is recorded (see observability/tracing.py)."""
    carrier: dict[str, str] = {}
    _TRACE_CONTEXT.inject(carrier)
    return carrier.get("traceparent")


@dataclass(frozen=True)
class Event:
    """A business event about to be recorded, with the follow-ups it needs."""

    type: EventType
    subject_type: str
    subject_id: str
    actor: str
    case_id: str | None = None
    location_id: str | None = None
    correlation_id: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    follow_ups: tuple[FollowUp, ...] = ()

    @classmethod
    def about_case(
        cls,
        event_type: EventType,
        case: ServiceCase,
        *,
        actor: str,
        payload: dict[str, Any],
        follow_ups: tuple[FollowUp, ...] = (),
    ) -> Event:
        return cls(
            event_type,
            subject_type="case",
            subject_id=case.id,
            case_id=case.id,
            location_id=case.location_id,
            actor=actor,
            payload=payload,
            follow_ups=follow_ups,
        )

    @classmethod
    def about_case_record(
        cls,
        event_type: EventType,
        subject_type: str,
        subject_id: str,
        case: ServiceCase,
        *,
        actor: str,
        payload: dict[str, Any],
    ) -> Event:
        """An event about a record of a case (an appointment, an authorisation), on its timeline."""
        return cls(
            event_type,
            subject_type=subject_type,
            subject_id=subject_id,
            case_id=case.id,
            location_id=case.location_id,
            actor=actor,
            payload=payload,
        )

    @classmethod
    def about_exception(
        cls, event_type: EventType, item: ExceptionItem, *, actor: str, payload: dict[str, Any]
    ) -> Event:
        return cls(
            event_type,
            subject_type="exception",
            subject_id=item.id,
            case_id=item.case_id,
            location_id=item.location_id,
            actor=actor,
            payload=payload,
        )


def record_events(
    session: Session | Connection,
    *events: Event,
    together: Sequence[tuple[Table, Sequence[Mapping[str, Any]]]] = (),
) -> None:
    """Insert events, in order, and the outbox rows of their follow-ups, in the caller's transaction.

    One statement for the events (a multi-row INSERT) and, when some need follow-ups, one more for
    their outbox rows, which need the events' ids (``RETURNING``); on PostgreSQL the two are one
    statement. Ids are assigned in row order, so a case's timeline keeps the order of its events.
    ``together``: rows to insert first (``insert_together``'s parts), on PostgreSQL in the same
    statement as the events.
    """
    connection = session.connection() if isinstance(session, Session) else session
    now = utcnow()
    rows = [
        {
            "type": str(event.type),
            "subject_type": event.subject_type,
            "subject_id": event.subject_id,
            "case_id": event.case_id,
            "location_id": event.location_id,
            "actor": event.actor,
            "correlation_id": event.correlation_id,
            "payload": event.payload,
            "occurred_at": now,
        }
        for event in events
    ]
    waiting = {(str(e.type), e.subject_id): e.follow_ups for e in events if e.follow_ups}
    if not waiting:
        insert_together(connection, [*together, (_events, rows)])
        return
    if len(waiting) != sum(1 for e in events if e.follow_ups):
        raise ValueError("events with follow-ups must differ in type or subject within one call")
    params = row_parameters(rows)
    trace_parent = _trace_parent()
    if connection.dialect.name == "postgresql":
        wanted = [(key, str(f)) for key, follow_ups in waiting.items() for f in follow_ups]
        for j, ((event_type, subject_id), destination) in enumerate(wanted):
            params |= {
                f"f_type_{j}": event_type,
                f"f_subject_{j}": subject_id,
                f"f_destination_{j}": destination,
            }
        outbox_params = {"outbox_created_at": now, "outbox_trace_parent": trace_parent}
        then = (_with_outbox(len(rows), len(wanted)), {**params, **outbox_params})
        insert_together(connection, together, then)
        return
    insert_together(connection, together)
    returned = run(connection, _insert_returning(len(rows)), params).fetchall()
    outbox = [
        {
            "event_id": event_id,
            "destination": str(f),
            "status": "pending",
            "attempts": 0,
            "created_at": now,
            "trace_parent": trace_parent,
        }
        for event_id, event_type, subject_id in returned
        for f in waiting.get((event_type, subject_id), ())
    ]
    run(connection, _OUTBOX_INSERT, outbox)
