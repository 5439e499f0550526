"""Quarantine: rejected payloads kept whole with the reason, for inspection and replay."""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import func, select, update

from careops.db import Database
from careops.domain.events import Event, EventType, record_events
from careops.domain.models import IntakeItem, find, new_id, utcnow
from careops.domain.phi import phi_fields
from careops.errors import CareopsError, Conflict, NotFound
from careops.governance.masking import MaskingPolicy
from careops.governance.phi_access import record_phi_read
from careops.governance.principal import Principal
from careops.governance.scoping import LocationScope


def stored_payload(raw: bytes) -> dict[str, Any]:
    """An intake item's payload columns: ``raw_payload``, the payload as text to read (bytes that
    are not UTF-8, and NUL, which PostgreSQL text refuses, as ``\\xNN``), and ``raw_bytes``, the
    exact bytes whenever that text could not give them back (what a replay runs on)."""
    try:
        text: str | None = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and "\x00" not in text:
        return {"raw_payload": text, "raw_bytes": None}
    readable = raw.decode("utf-8", errors="backslashreplace").replace("\x00", "\\x00")
    return {"raw_payload": readable, "raw_bytes": raw}


def rejection_reasons(error: CareopsError) -> list[str]:
    """Reason codes for a rejected payload: the error's code, then ``invalid_field:<field>`` each."""
    return [error.code] + [f"invalid_field:{e['field']}" for e in error.extra.get("errors", [])]


def quarantine(
    db: Database,
    *,
    raw: bytes,
    content_type: str | None,
    channel: str,
    reasons: list[str],
    actor: str,
    sender: str | None = None,
) -> str:
    """Keep a rejected payload whole, with why it was rejected, for inspection and replay."""
    with db.transaction() as session:
        item = IntakeItem(
            id=new_id(),
            channel=channel,
            sender=sender,
            status="quarantined",
            reasons=reasons,
            content_type=content_type,
            **stored_payload(raw),
            payload_sha256=hashlib.sha256(raw).hexdigest(),
            received_at=utcnow(),
        )
        session.add(item)
        session.flush()
        record_events(
            session,
            Event(
                EventType.REFERRAL_QUARANTINED,
                subject_type="intake_item",
                subject_id=item.id,
                actor=actor,
                payload={"channel": channel, "reason_codes": reasons[:20]},
            ),
        )
        return item.id


INTAKE_PHI = phi_fields(IntakeItem)


def quarantined_view(item: IntakeItem, masking: MaskingPolicy | None) -> dict[str, Any]:
    """Without the payload when ``masking`` is None; else with it, masked by the policy."""
    view: dict[str, Any] = {
        "id": item.id,
        "channel": item.channel,
        "sender": item.sender,
        "reasons": item.reasons,
        "content_type": item.content_type,
        "payload_sha256": item.payload_sha256,
        "received_at": item.received_at.isoformat(),
    }
    if masking is None:
        return view
    return masking.view({**view, "raw_payload": item.raw_payload}, INTAKE_PHI)


def list_quarantined(db: Database, limit: int, scope: LocationScope) -> list[dict[str, Any]]:
    query = select(IntakeItem).where(IntakeItem.status == "quarantined")
    with db.sessions() as session:
        rows = session.scalars(
            scope.restrict(query, IntakeItem.location_id).order_by(IntakeItem.id.desc()).limit(limit)
        )
        return [quarantined_view(item, None) for item in rows]


def count_quarantined(db: Database, scope: LocationScope) -> int:
    """How many payloads wait in quarantine in the caller's locations."""
    query = scope.restrict(
        select(func.count()).select_from(IntakeItem).where(IntakeItem.status == "quarantined"),
        IntakeItem.location_id,
    )
    with db.sessions() as session:
        return int(session.scalar(query) or 0)


def get_quarantined(db: Database, item_id: str, reader: Principal) -> dict[str, Any]:
    """A quarantined payload, its body masked by the reader's policy (a read in clear is audited)."""
    with db.sessions() as session:
        item = find(session, IntakeItem, item_id)
        if item is None or item.status != "quarantined":
            raise NotFound("no quarantined payload with this id")
        reader.scope.check(item.location_id, "quarantined payload")
        view = quarantined_view(item, reader.masking)
    if "raw_payload" not in view.get("masked", []):
        record_phi_read(db, reader, "intake_item", [view])
    return view


def quarantined_payload(db: Database, item_id: str, scope: LocationScope) -> tuple[str, bytes, str | None]:
    """The channel, payload and content type of a quarantined item, for a replay."""
    with db.sessions() as session:
        item = find(session, IntakeItem, item_id)
        if item is None:
            raise NotFound("no quarantined payload with this id")
        scope.check(item.location_id, "quarantined payload")
        if item.status != "quarantined":
            raise Conflict(f"this payload was already {item.status}")
        raw = item.raw_bytes if item.raw_bytes is not None else item.raw_payload.encode("utf-8")
        return item.channel, raw, item.content_type


def settle(
    db: Database,
    item_id: str,
    *,
    status: str,
    actor: str,
    payload: dict[str, Any],
    reasons: list[str] | None = None,
) -> None:
    """Mark a quarantined item ``replayed`` or ``discarded`` (once: 409 if another got there first),
    or keep it ``quarantined`` with the reasons of a failed replay; every change is an event."""
    event_type = {
        "replayed": EventType.QUARANTINE_REPLAYED,
        "discarded": EventType.QUARANTINE_DISCARDED,
        "quarantined": EventType.QUARANTINE_REPLAY_FAILED,
    }[status]
    values: dict[str, Any] = {"status": status}
    if reasons is not None:
        values["reasons"] = reasons
    with db.transaction() as session:
        changed = (
            session.connection()
            .execute(
                update(IntakeItem)
                .where(IntakeItem.id == item_id, IntakeItem.status == "quarantined")
                .values(**values)
            )
            .rowcount
        )
        if not changed:
            raise Conflict("this payload is no longer in quarantine")
        record_events(
            session,
            Event(event_type, subject_type="intake_item", subject_id=item_id, actor=actor, payload=payload),
        )
