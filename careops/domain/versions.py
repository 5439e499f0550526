"""Versioned documents (workflow templates, approval policies) in the database: each version
stored once per content hash, at most one active per name, every activation an audited event
with who and why."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from careops.domain.events import Event, EventType, record_events
from careops.domain.models import new_id, utcnow
from careops.errors import ValidationFailed


class Versioned(Protocol):
    """What a versioned document says of itself (a Template, a Policy)."""

    @property
    def name(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def owner(self) -> str: ...
    @property
    def content_hash(self) -> str: ...


@dataclass(frozen=True)
class Activation:
    name: str
    version: str
    content_hash: str
    changed: bool  # False: that version was already the active one


def activate_version(
    session: Session,
    model: Any,
    document: Versioned,
    text: str,
    *,
    actor: str,
    reason: str,
    event: EventType,
    subject_type: str,
) -> Activation:
    """In the caller's transaction: store ``document``'s version in ``model``'s table (once per
    content hash) and make it the active one of its name, recording ``event``."""
    if not reason.strip():
        raise ValidationFailed("say why: activations are audited")
    stored = session.scalars(
        select(model).where(model.name == document.name, model.content_hash == document.content_hash)
    ).first()
    if stored is not None and stored.active:
        return Activation(document.name, document.version, document.content_hash, False)
    current = session.scalars(
        select(model).where(model.name == document.name, model.active.is_(True)).with_for_update()
    ).first()
    previous = current.content_hash if current else None
    if current is not None:
        current.active = False
        session.flush()
    if stored is None:
        stored = model(
            id=new_id(),
            name=document.name,
            version=document.version,
            content_hash=document.content_hash,
            content=text,
            owner=document.owner,
        )
        session.add(stored)
    stored.active, stored.activated_by, stored.reason, stored.activated_at = (
        True,
        actor,
        reason[:500],
        utcnow(),
    )
    session.flush()
    payload = {
        "name": document.name,
        "version": document.version,
        "content_hash": document.content_hash,
        "previous_hash": previous,
        "reason": reason[:200],
    }
    record_events(session, Event(event, subject_type, stored.id, actor, payload=payload))
    return Activation(document.name, document.version, document.content_hash, True)
