"""The catalogue of business events and the one function (``record_events``) that records them.

An event is written in the caller's transaction together with the change it describes, and with
an outbox row for each follow-up the change needs. Payloads carry ids and codes, never free-text PHI.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy import insert
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from careops.domain.models import Base, BusinessEvent, OutboxMessage, utcnow


class EventType(StrEnum):
    REFERRAL_RECEIVED = "referral.received"
    REFERRAL_VALIDATED = "referral.validated"
    REFERRAL_INCOMPLETE = "referral.incomplete"
    REFERRAL_DUPLICATE_DETECTED = "referral.duplicate_detected"
    REFERRAL_QUARANTINED = "referral.quarantined"
    CASE_CREATED = "case.created"
    CASE_TRANSITIONED = "case.transitioned"
    CASE_TRIAGED = "case.triaged"
    AUTHORISATION_REQUIRED = "authorisation.required"
    EXCEPTION_OPENED = "exception.opened"
    EXCEPTION_RESOLVED = "exception.resolved"


class FollowUp(StrEnum):
    """Outbox destinations: what the dispatcher starts for a committed event."""

    AWAIT_TRIAGE = "workflow.await_triage"
    DELIVER_TRIAGE = "workflow.deliver_triage"


_events = Base.metadata.tables[BusinessEvent.__tablename__]
_EVENT_INSERT = insert(_events).returning(_events.c.id, sort_by_parameter_order=True)
_OUTBOX_INSERT = insert(Base.metadata.tables[OutboxMessage.__tablename__])


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


def record_events(session: Session | Connection, *events: Event) -> list[int]:
    """Insert events (one statement) and their outbox rows (one more) in the caller's transaction."""
    connection = session.connection() if isinstance(session, Session) else session
    now = utcnow()
    rows = [
        {
            "type": str(e.type),
            "subject_type": e.subject_type,
            "subject_id": e.subject_id,
            "case_id": e.case_id,
            "location_id": e.location_id,
            "actor": e.actor,
            "correlation_id": e.correlation_id,
            "payload": e.payload,
            "occurred_at": now,
        }
        for e in events
    ]
    ids = [int(i) for i in connection.execute(_EVENT_INSERT, rows).scalars()]
    outbox = [
        {"event_id": event_id, "destination": str(f), "status": "pending", "attempts": 0, "created_at": now}
        for event_id, e in zip(ids, events, strict=True)
        for f in e.follow_ups
    ]
    if outbox:
        connection.execute(_OUTBOX_INSERT, outbox)
    return ids
