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

from careops.domain.models import Base, BusinessEvent, OutboxMessage, ServiceCase, utcnow


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
_EVENT_INSERT = insert(_events)
_EVENT_INSERT_RETURNING_ID = insert(_events).returning(_events.c.id)
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


def record_events(session: Session | Connection, *events: Event) -> None:
    """Insert events, in order, and the outbox rows of their follow-ups, in the caller's transaction.

    Only an event with follow-ups needs its id back (the outbox points at it); runs of the others
    go in one executemany, which is much cheaper than a multi-row INSERT … RETURNING.
    """
    connection = session.connection() if isinstance(session, Session) else session
    now = utcnow()
    plain: list[dict[str, Any]] = []
    outbox: list[dict[str, Any]] = []
    for event in events:
        row = {
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
        if not event.follow_ups:
            plain.append(row)
            continue
        if plain:
            connection.execute(_EVENT_INSERT, plain)
            plain = []
        event_id = connection.execute(_EVENT_INSERT_RETURNING_ID, row).scalar_one()
        outbox += [
            {
                "event_id": event_id,
                "destination": str(f),
                "status": "pending",
                "attempts": 0,
                "created_at": now,
            }
            for f in event.follow_ups
        ]
    if plain:
        connection.execute(_EVENT_INSERT, plain)
    if outbox:
        connection.execute(_OUTBOX_INSERT, outbox)
