"""Auditing access to PHI: reads in clear (``phi.read``) and reveals with a reason (``phi.revealed``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from careops.db import Database
from careops.domain.events import Event, EventType, record_events
from careops.errors import ValidationFailed
from careops.governance.permissions import Visibility
from careops.governance.principal import Principal

MIN_REASON = 10
MAX_IDS = 200


def clear_categories(reader: Principal) -> list[str]:
    return sorted(str(c) for c, v in reader.masking.visibility.items() if v is Visibility.CLEAR)


def record_phi_read(db: Database, reader: Principal, subject_type: str, views: list[dict[str, Any]]) -> None:
    """One ``phi.read`` event when ``reader`` was shown PHI in clear in ``views`` (records with ids)."""
    categories = clear_categories(reader)
    if not categories or not views:
        return
    ids = [view["id"] for view in views[:MAX_IDS]]
    event = Event(
        EventType.PHI_READ,
        "principal",
        reader.id,
        actor=reader.id,
        case_id=ids[0] if subject_type == "case" and len(ids) == 1 else None,
        payload={"subject_type": subject_type, "ids": ids, "categories": categories},
    )
    with db.transaction() as session:
        record_events(session, event)


def checked_reason(reason: str) -> str:
    reason = " ".join(reason.split())
    if len(reason) < MIN_REASON:
        raise ValidationFailed(
            f"say why you need to see this patient's data (at least {MIN_REASON} characters)",
            errors=[{"field": "reason", "message": f"at least {MIN_REASON} characters"}],
        )
    return reason[:500]


def record_reveal(
    session: Session, reader: Principal, case_id: str, location_id: str, reason: str, fields: list[str]
) -> None:
    """``phi.revealed``: who saw which masked fields of which case in clear, and why."""
    record_events(
        session,
        Event(
            EventType.PHI_REVEALED,
            "case",
            case_id,
            actor=reader.id,
            case_id=case_id,
            location_id=location_id,
            payload={"reason": reason, "fields": fields},
        ),
    )
