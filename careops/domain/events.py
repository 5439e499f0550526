"""The catalogue of business events and the one function that records them.

An event is written in the caller's transaction together with the change it describes, and with
an outbox row for each follow-up the change needs. Payloads carry ids and codes, never free-text PHI.
"""

from __future__ import annotations

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


_EVENT_INSERT = insert(Base.metadata.tables[BusinessEvent.__tablename__]).returning(
    Base.metadata.tables[BusinessEvent.__tablename__].c.id
)
_OUTBOX_INSERT = insert(Base.metadata.tables[OutboxMessage.__tablename__])


def record_event(
    session: Session | Connection,
    event_type: EventType,
    *,
    subject_type: str,
    subject_id: str,
    actor: str,
    case_id: str | None = None,
    location_id: str | None = None,
    correlation_id: str | None = None,
    payload: dict[str, Any] | None = None,
    follow_ups: tuple[FollowUp, ...] = (),
) -> int:
    """Insert one business event (and its outbox rows) in the caller's transaction; return its id."""
    connection = session.connection() if isinstance(session, Session) else session
    now = utcnow()
    event_id: int = connection.execute(
        _EVENT_INSERT,
        {
            "type": str(event_type),
            "subject_type": subject_type,
            "subject_id": subject_id,
            "case_id": case_id,
            "location_id": location_id,
            "actor": actor,
            "correlation_id": correlation_id,
            "payload": payload or {},
            "occurred_at": now,
        },
    ).scalar_one()
    if follow_ups:
        connection.execute(
            _OUTBOX_INSERT,
            [
                {
                    "event_id": event_id,
                    "destination": str(f),
                    "status": "pending",
                    "attempts": 0,
                    "created_at": now,
                }
                for f in follow_ups
            ],
        )
    return event_id
