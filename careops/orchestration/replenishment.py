"""Replenishment requests and their purchase orders: draft → requested → approved → ordered →
received, or cancelled before it is received. Receiving one receives its lines into stock (one
receipt move each) in the same transaction. Each step writes its event.

A request's lines are items and quantities at one location, priced from each item's unit price;
``from_thresholds`` drafts one for everything under its minimum, up to each threshold's maximum
(or its reorder quantity).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from careops.db import Database
from careops.domain.events import Event, EventType, record_events
from careops.domain.models import Location, find, new_id, utcnow
from careops.domain.stock import Item, Replenishment, StockLevel, StockThreshold
from careops.errors import Conflict, NotFound, ValidationFailed
from careops.governance.duties import DEFAULT_RULES, DutyRule, check_duties
from careops.governance.scoping import LocationScope
from careops.orchestration.inventory import change
from careops.orchestration.locations import location_named

URGENCIES = ("routine", "urgent")
# step: (from statuses, to status, event)
STEPS = {
    "submit": (("draft",), "requested", EventType.REPLENISHMENT_REQUESTED),
    "approve": (("requested",), "approved", EventType.REPLENISHMENT_APPROVED),
    "order": (("approved",), "ordered", EventType.REPLENISHMENT_ORDERED),
    "receive": (("ordered",), "received", EventType.REPLENISHMENT_RECEIVED),
    "cancel": (("draft", "requested", "approved", "ordered"), "cancelled", EventType.REPLENISHMENT_CANCELLED),
}


def replenishment_view(record: Replenishment, location: Location) -> dict[str, Any]:
    return {
        "id": record.id,
        "location": location.slug,
        "supplier": record.supplier,
        "status": record.status,
        "urgency": record.urgency,
        "lines": record.lines,
        "value": record.value,
        "external_reference": record.external_reference,
        "requested_by": record.requested_by,
    }


def _event(kind: EventType, record: Replenishment, actor: str) -> Event:
    payload = {"status": record.status, "value": record.value, "lines": len(record.lines)}
    return Event(kind, "replenishment", record.id, actor, location_id=record.location_id, payload=payload)


def draft(
    db: Database,
    location_slug: str,
    lines: list[tuple[str, int]],
    *,
    actor: str,
    scope: LocationScope,
    supplier: str | None = None,
    urgency: str = "routine",
) -> dict[str, Any]:
    """A draft request for ``lines`` (item code, quantity) at the location."""
    with db.transaction() as session:
        location = location_named(session, location_slug, scope)
        record = draft_in(session, location, lines, actor=actor, supplier=supplier, urgency=urgency)
        return replenishment_view(record, location)


def draft_in(
    session: Session,
    location: Location,
    lines: list[tuple[str, int]],
    *,
    actor: str,
    supplier: str | None = None,
    urgency: str = "routine",
) -> Replenishment:
    """In the caller's transaction: a draft request for ``lines`` (item code, quantity)."""
    if not lines or any(quantity <= 0 for _, quantity in lines):
        raise ValidationFailed("a request has lines, each a quantity above 0")
    if urgency not in URGENCIES:
        raise ValidationFailed(f"urgency: one of {', '.join(URGENCIES)}")
    priced: list[dict[str, Any]] = []
    for code, quantity in lines:
        item = session.scalars(select(Item).where(Item.code == code, Item.retired_at.is_(None))).first()
        if item is None:
            raise NotFound(f"no live item {code!r}")
        priced.append({"item": code, "quantity": quantity, "unit_price": item.unit_price})
        supplier = supplier or item.supplier
    record = Replenishment(
        id=new_id(),
        location_id=location.id,
        supplier=supplier,
        status="draft",
        urgency=urgency,
        lines=priced,
        value=round(sum((line["unit_price"] or 0.0) * line["quantity"] for line in priced), 2),
        requested_by=actor[:100],
    )
    session.add(record)
    session.flush()
    record_events(session, _event(EventType.REPLENISHMENT_DRAFTED, record, actor))
    return record


def from_thresholds(
    db: Database, location_slug: str, *, actor: str, scope: LocationScope
) -> dict[str, Any] | None:
    """A draft for every item under its minimum at the location (None when nothing is)."""
    with db.sessions() as session:
        location = location_named(session, location_slug, scope)
        rows = session.execute(
            select(StockThreshold, StockLevel.on_hand)
            .join(Item, Item.code == StockThreshold.item)
            .outerjoin(StockLevel, (StockLevel.item_id == Item.id) & (StockLevel.location_id == location.id))
            .where(StockThreshold.location == location.slug, StockThreshold.retired_at.is_(None))
            .order_by(StockThreshold.item)
        ).all()
    lines = []
    for threshold, on_hand in rows:
        have = on_hand or 0
        if have < threshold.minimum:
            wanted = (threshold.maximum - have) if threshold.maximum else threshold.reorder_quantity
            lines.append((threshold.item, max(wanted or threshold.minimum - have, 1)))
    if not lines:
        return None
    return draft(db, location_slug, lines, actor=actor, scope=scope)


def advance(
    db: Database,
    replenishment_id: str,
    step: str,
    *,
    actor: str,
    scope: LocationScope,
    external_reference: str | None = None,
    duties: Iterable[DutyRule] = DEFAULT_RULES,
) -> dict[str, Any]:
    """Move a request one step; ``order`` may carry the purchase order's number, ``receive`` puts
    its lines into stock. ``duties`` (the settings' ``separation_of_duties``) keep the requester
    from approving their own request."""
    with db.transaction() as session:
        record = find(session, Replenishment, replenishment_id, for_update=True)
        if record is None or not scope.allows(record.location_id):
            raise NotFound("no replenishment request with this id")
        return advance_in(
            session, record, step, actor=actor, external_reference=external_reference, duties=duties
        )


def advance_in(
    session: Session,
    record: Replenishment,
    step: str,
    *,
    actor: str,
    external_reference: str | None = None,
    duties: Iterable[DutyRule] = DEFAULT_RULES,
    events: list[Event] | None = None,
) -> dict[str, Any]:
    """``advance`` in the caller's transaction, on a record it has locked (an approval's outcome);
    its event goes to ``events`` when given (the caller records them together)."""
    allowed_from, status, event_type = STEPS[step]
    if record.status not in allowed_from:
        raise Conflict(f"cannot {step} a request that is {record.status}", replenishment_status=record.status)
    if step == "approve":
        check_duties(duties, "replenishment:approve", actor, {"requester": record.requested_by})
    location = session.get(Location, record.location_id)
    assert location is not None
    if step == "receive":
        for line in record.lines:
            item = session.scalars(select(Item).where(Item.code == line["item"])).one()
            change(
                session, location, item, int(line["quantity"]), "receipt", actor=actor, reference=record.id
            )
    record.status, record.updated_at = status, utcnow()
    if external_reference:
        record.external_reference = external_reference[:100]
    made = _event(event_type, record, actor)
    if events is None:
        record_events(session, made)
    else:
        events.append(made)
    return replenishment_view(record, location)


def list_replenishments(
    db: Database, scope: LocationScope, status: str | None = None
) -> list[dict[str, Any]]:
    with db.sessions() as session:
        query = select(Replenishment, Location).join(Location, Location.id == Replenishment.location_id)
        if status:
            query = query.where(Replenishment.status == status)
        rows = session.execute(query.order_by(Replenishment.id.desc()).limit(200)).all()
        return [replenishment_view(r, loc) for r, loc in rows if scope.allows(r.location_id)]
