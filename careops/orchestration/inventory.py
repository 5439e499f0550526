"""Stock: what each location holds of each item, and every move that changes it.

A move (receipt, consumption, transfer out and in, adjustment) locks the level, changes it and
writes the move and ``stock.moved`` in one transaction. The database refuses a level below zero
(a check constraint); a consumption or transfer of more than is on hand is refused with 409
naming what is there, and an adjustment (a count, a write-off) always names its reason. Falling
under a threshold's minimum writes ``stock.below_threshold`` once per crossing; rising back to
it clears the mark. Completing a service consumes its bill of materials at the case's location:
what is missing is consumed as far as it goes and opens an inventory exception item, never a
negative level.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import Integer, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from careops.db import Database
from careops.domain.events import Event, EventType, record_events
from careops.domain.models import Base, Location, Service, ServiceCase, new_id, utcnow
from careops.domain.stock import Item, StockLevel, StockMove, StockThreshold
from careops.errors import CareopsError, Conflict, NotFound, ValidationFailed
from careops.governance.scoping import LocationScope
from careops.orchestration.exception_queue import open_exception

INVENTORY_QUEUE = "inventory"
_levels = Base.metadata.tables[StockLevel.__tablename__]
_moves = Base.metadata.tables[StockMove.__tablename__]
MOVE_KINDS = ("receipt", "consumption", "transfer", "adjustment")
_T = TypeVar("_T")


@dataclass(frozen=True)
class Move:
    """What a person or a system asks: ``quantity`` of ``item`` at ``location`` (to
    ``to_location`` for a transfer; signed for an adjustment)."""

    location: str
    item: str
    kind: str
    quantity: int
    reason: str | None = None
    to_location: str | None = None
    reference: str | None = None


def _place(session: Session, slug: str, scope: LocationScope) -> Location:
    location = session.scalars(
        select(Location).where(Location.slug == slug, Location.retired_at.is_(None))
    ).first()
    if location is None or not scope.allows(location.id):
        raise NotFound(f"no location {slug!r} among yours")
    return location


def _item(session: Session, code: str) -> Item:
    item = session.scalars(select(Item).where(Item.code == code, Item.retired_at.is_(None))).first()
    if item is None:
        raise NotFound(f"no live item {code!r}")
    return item


# Built once (every move runs it): add :delta to a level unless it would go below zero, answering
# the new on-hand, the below mark and the threshold's minimum.
_ADJUST = (
    update(_levels)
    .where(
        _levels.c.location_id == bindparam("at_location"),
        _levels.c.item_id == bindparam("of_item"),
        _levels.c.on_hand + bindparam("delta", type_=Integer) >= 0,
    )
    .values(on_hand=_levels.c.on_hand + bindparam("delta", type_=Integer), updated_at=bindparam("moved_at"))
    .returning(
        _levels.c.on_hand,
        _levels.c.below,
        select(StockThreshold.minimum)
        .where(
            StockThreshold.location == bindparam("slug"),
            StockThreshold.item == bindparam("code"),
            StockThreshold.retired_at.is_(None),
        )
        .scalar_subquery(),
    )
)


def _adjusted(
    session: Session, location: Location, item: Item, delta: int
) -> tuple[int, bool, int | None] | None:
    """Add ``delta`` to the level in one statement, unless that would take it below zero: its new
    on-hand, its below mark and its threshold's minimum; None when it would (the level untouched)."""
    key = (_levels.c.location_id == location.id) & (_levels.c.item_id == item.id)
    changed = session.execute(
        _ADJUST,
        {"at_location": location.id, "of_item": item.id, "delta": delta, "moved_at": utcnow(),
         "slug": location.slug, "code": item.code},
    ).first()  # fmt: skip
    if changed is not None or session.execute(select(_levels.c.on_hand).where(key)).first() is not None:
        return None if changed is None else (changed[0], changed[1], changed[2])
    if delta < 0:
        return None
    session.execute(
        insert(_levels).values(
            location_id=location.id, item_id=item.id, on_hand=0, below=False, updated_at=utcnow()
        )
    )
    return _adjusted(session, location, item, delta)


@dataclass
class Written:
    """Move rows and events of a batch of moves, inserted together when the batch ends."""

    events: list[Event] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)

    def record(self, session: Session) -> None:
        if self.rows:
            record_events(session, *self.events, together=[(_moves, self.rows)])


def change(
    session: Session,
    location: Location,
    item: Item,
    delta: int,
    kind: str,
    *,
    actor: str,
    reason: str | None = None,
    reference: str | None = None,
    written: Written | None = None,
) -> tuple[int, bool]:
    """In the caller's transaction: move ``delta`` (signed) at the location, with its move row and
    events (one statement for the level, one more for the move and its events unless ``written``
    collects them for the end of a batch); 409 when it would take the level below zero. The new
    on-hand, and whether it is under its minimum."""
    adjusted = _adjusted(session, location, item, delta)
    if adjusted is None:
        on_hand = on_hand_of(session, location, item)
        raise Conflict(
            f"only {on_hand} {item.unit} of {item.code} on hand at {location.slug}", on_hand=on_hand
        )
    on_hand, below, minimum = adjusted
    payload = {"item": item.code, "kind": kind, "quantity": delta, "on_hand": on_hand}
    events = [Event(EventType.STOCK_MOVED, "item", item.id, actor, location_id=location.id, payload=payload)]
    crossing = minimum is not None and on_hand < minimum and not below
    cleared = below and (minimum is None or on_hand >= minimum)
    if crossing or cleared:
        session.execute(
            update(_levels)
            .where(_levels.c.location_id == location.id, _levels.c.item_id == item.id)
            .values(below=crossing)
        )
    if crossing:
        events.append(
            Event(
                EventType.STOCK_BELOW_THRESHOLD, "item", item.id, actor, location_id=location.id,
                payload={"item": item.code, "on_hand": on_hand, "minimum": minimum},
            )
        )  # fmt: skip
    row = {
        "id": new_id(), "location_id": location.id, "item_id": item.id, "kind": kind, "quantity": delta,
        "on_hand": on_hand, "reason": reason, "reference": reference, "actor": actor[:100],
        "created_at": utcnow(),
    }  # fmt: skip
    batch = written or Written()
    batch.events += events
    batch.rows.append(row)
    if written is None:
        batch.record(session)
    return on_hand, (below or crossing) and not cleared


def on_hand_of(session: Session, location: Location, item: Item) -> int:
    found = session.execute(
        select(_levels.c.on_hand).where(_levels.c.location_id == location.id, _levels.c.item_id == item.id)
    ).first()
    return int(found[0]) if found else 0


def level_view(on_hand: int, below: bool, item: Item, location: Location) -> dict[str, Any]:
    return {
        "location": location.slug,
        "item": item.code,
        "name": item.name,
        "unit": item.unit,
        "on_hand": on_hand,
        "below_minimum": below,
    }


def _checked(move: Move) -> None:
    if move.kind not in MOVE_KINDS:
        raise ValidationFailed(f"kind: one of {', '.join(MOVE_KINDS)}")
    if move.kind == "adjustment":
        if not (move.reason or "").strip():
            raise ValidationFailed("an adjustment names its reason (a count, a write-off, a breakage)")
        if move.quantity == 0:
            raise ValidationFailed("an adjustment changes the level: a quantity other than 0")
    elif move.quantity <= 0:
        raise ValidationFailed("quantity: a whole number above 0")
    if move.kind == "transfer" and not move.to_location:
        raise ValidationFailed("a transfer names the location it goes to (to_location)")
    if move.kind == "transfer" and move.to_location == move.location:
        raise Conflict("a transfer goes to another location")


def move_stock(db: Database, move: Move, *, actor: str, scope: LocationScope) -> list[dict[str, Any]]:
    """Apply one move; the levels it changed (two for a transfer)."""
    return move_stocks(db, [move], actor=actor, scope=scope)[0]


def move_stocks(
    db: Database, moves: list[Move], *, actor: str, scope: LocationScope
) -> list[list[dict[str, Any]]]:
    """Apply moves in order, all or none, in one transaction (a handheld's scans, a count sheet):
    each location and item looked up once, one statement per level change and one for all the
    move rows and events at the end. Per move, the levels it changed; a move that fails (409,
    404, 422) names its place in the batch and applies none."""
    for number, move in enumerate(moves, 1):
        _in_batch(number, len(moves), _checked, move)
    places: dict[str, Location] = {}
    items: dict[str, Item] = {}
    written = Written()
    try:
        with db.transaction() as session:

            def place(slug: str) -> Location:
                if slug not in places:
                    places[slug] = _place(session, slug, scope)
                return places[slug]

            def stocked(code: str) -> Item:
                if code not in items:
                    items[code] = _item(session, code)
                return items[code]

            def apply(move: Move) -> list[dict[str, Any]]:
                location, item = place(move.location), stocked(move.item)
                signed = move.quantity if move.kind in ("receipt", "adjustment") else -move.quantity
                kind = "transfer_out" if move.kind == "transfer" else move.kind
                left = change(session, location, item, signed, kind, actor=actor, reason=move.reason,
                              reference=move.reference, written=written)  # fmt: skip
                changed = [level_view(*left, item, location)]
                if move.kind == "transfer":
                    target = place(move.to_location or "")
                    arrived = change(
                        session, target, item, move.quantity, "transfer_in",
                        actor=actor, reason=move.reason, reference=move.reference, written=written,
                    )  # fmt: skip
                    changed.append(level_view(*arrived, item, target))
                return changed

            levels = [_in_batch(number, len(moves), apply, move) for number, move in enumerate(moves, 1)]
            written.record(session)
            return levels
    except IntegrityError as exc:  # the database's check: never below zero, whatever raced
        raise Conflict("the level would go below zero (another move took the stock first)") from exc


def _in_batch(number: int, size: int, step: Callable[[Move], _T], move: Move) -> _T:
    """``step(move)``, its refusal naming the move's place when it is one of several."""
    try:
        return step(move)
    except CareopsError as exc:
        if size > 1:
            exc.detail = f"move {number} of {size}: {exc.detail}"
        raise


def consume_for(session: Session, case: ServiceCase, reference: str, *, actor: str) -> None:
    """In the caller's transaction: the service's bill of materials consumed at the case's
    location; a shortfall is consumed as far as it goes and opens an inventory item."""
    service = session.get(Service, case.service_id)
    location = session.get(Location, case.location_id)
    assert service is not None and location is not None
    short = []
    for code, quantity in sorted(service.materials.items()):
        item = session.scalars(select(Item).where(Item.code == code, Item.retired_at.is_(None))).first()
        if item is None:
            short.append(f"unknown_item:{code}")
            continue
        wanted = int(quantity)
        taken = min(wanted, on_hand_of(session, location, item))
        if taken:
            change(session, location, item, -taken, "consumption", actor=actor, reference=reference)
        if taken < wanted:
            short.append(f"stock_short:{code}")
    if short:
        open_exception(
            session, INVENTORY_QUEUE, short, actor=actor, case=case, dedupe_key=f"stock:{reference}"
        )


def stock(
    db: Database, location_slug: str, scope: LocationScope, below_only: bool = False
) -> list[dict[str, Any]]:
    """A location's levels by item code (only those under their minimum with ``below_only``)."""
    with db.sessions() as session:
        location = _place(session, location_slug, scope)
        query = (
            select(StockLevel, Item)
            .join(Item, Item.id == StockLevel.item_id)
            .where(StockLevel.location_id == location.id)
            .order_by(Item.code)
        )
        if below_only:
            query = query.where(StockLevel.below.is_(True))
        return [
            level_view(level.on_hand, level.below, item, location) for level, item in session.execute(query)
        ]
