"""Stock: what each location holds of each item, and every move that changes it.

A move (receipt, consumption, transfer out and in, adjustment) locks the level, changes it and
writes the move and ``stock.moved`` in one transaction (``Levels``: a batch of moves locks and
writes each level it touches once). The database refuses a level below zero
(a check constraint); a consumption or transfer of more than is on hand is refused with 409
naming what is there, and an adjustment (a count, a write-off) always names its reason. Falling
under a threshold's minimum writes ``stock.below_threshold`` once per crossing; rising back to
it clears the mark. Completing a service consumes its bill of materials at the case's location:
what is missing is consumed as far as it goes and opens an inventory exception item, never a
negative level.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from careops.db import Database
from careops.domain.events import Event, EventType, record_events
from careops.domain.models import Base, Location, Service, ServiceCase, new_id, utcnow
from careops.domain.stock import Item, StockLevel, StockMove, StockThreshold
from careops.errors import CareopsError, Conflict, NotFound, ValidationFailed
from careops.governance.scoping import LocationScope
from careops.orchestration.exception_queue import open_exception
from careops.orchestration.locations import location_named

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


def _item(session: Session, code: str) -> Item:
    item = session.scalars(select(Item).where(Item.code == code, Item.retired_at.is_(None))).first()
    if item is None:
        raise NotFound(f"no live item {code!r}")
    return item


# Built once (every level a transaction touches runs them): a level locked with its threshold's
# minimum, and a level written back.
_LOCKED = (
    select(
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
    .where(_levels.c.location_id == bindparam("at_location"), _levels.c.item_id == bindparam("of_item"))
    .with_for_update(of=_levels)
)
_MINIMUM = select(StockThreshold.minimum).where(
    StockThreshold.location == bindparam("slug"),
    StockThreshold.item == bindparam("code"),
    StockThreshold.retired_at.is_(None),
)
_WRITE_BACK = (
    update(_levels)
    .where(_levels.c.location_id == bindparam("at_location"), _levels.c.item_id == bindparam("of_item"))
    .values(on_hand=bindparam("level"), below=bindparam("under"), updated_at=bindparam("moved_at"))
)


@dataclass
class _Level:
    location: Location
    item: Item
    on_hand: int
    below: bool
    minimum: int | None
    stored: bool  # False: no row yet (inserted when written back)


class Levels:
    """The stock levels one transaction changes. Each is read once, locked (with its threshold's
    minimum); moves change it in memory, in order, never below zero (409 naming what is on hand);
    ``write`` then writes each level back once, and every move row and event in one statement.
    So a batch of moves costs a statement per level it touches, not per move; the database's
    check constraint still refuses a negative level whatever writes."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.levels: dict[tuple[str, str], _Level] = {}
        self.events: list[Event] = []
        self.rows: list[dict[str, Any]] = []

    def level(self, location: Location, item: Item) -> _Level:
        key = (location.id, item.id)
        if key not in self.levels:
            names = {"at_location": location.id, "of_item": item.id, "slug": location.slug, "code": item.code}
            row = self.session.execute(_LOCKED, names).first()
            if row is None:
                minimum = self.session.execute(_MINIMUM, names).scalar()
                self.levels[key] = _Level(location, item, 0, False, minimum, stored=False)
            else:
                self.levels[key] = _Level(location, item, row[0], row[1], row[2], stored=True)
        return self.levels[key]

    def change(
        self, location: Location, item: Item, delta: int, kind: str, *, actor: str,
        reason: str | None = None, reference: str | None = None,
    ) -> tuple[int, bool]:  # fmt: skip
        """Move ``delta`` (signed) at the location, its move row and events kept for ``write``;
        409 when it would take the level below zero. The new on-hand, and whether it is under its
        minimum (``stock.below_threshold`` once per crossing; rising back to it clears the mark)."""
        level = self.level(location, item)
        if level.on_hand + delta < 0:
            raise Conflict(
                f"only {level.on_hand} {item.unit} of {item.code} on hand at {location.slug}",
                on_hand=level.on_hand,
            )
        level.on_hand += delta
        payload = {"item": item.code, "kind": kind, "quantity": delta, "on_hand": level.on_hand}
        self.events.append(
            Event(EventType.STOCK_MOVED, "item", item.id, actor, location_id=location.id, payload=payload)
        )
        if level.minimum is not None and level.on_hand < level.minimum and not level.below:
            level.below = True
            self.events.append(
                Event(
                    EventType.STOCK_BELOW_THRESHOLD, "item", item.id, actor, location_id=location.id,
                    payload={"item": item.code, "on_hand": level.on_hand, "minimum": level.minimum},
                )
            )  # fmt: skip
        elif level.below and (level.minimum is None or level.on_hand >= level.minimum):
            level.below = False
        self.rows.append(
            {
                "id": new_id(), "location_id": location.id, "item_id": item.id, "kind": kind,
                "quantity": delta, "on_hand": level.on_hand, "reason": reason, "reference": reference,
                "actor": actor[:100], "created_at": utcnow(),
            }
        )  # fmt: skip
        return level.on_hand, level.below

    def write(self) -> None:
        """Every changed level written back (new ones inserted), then the moves and events."""
        if not self.rows:
            return
        now = utcnow()
        touched = [self.levels[key] for key in {(row["location_id"], row["item_id"]) for row in self.rows}]
        new = [level for level in touched if not level.stored]
        stored = [level for level in touched if level.stored]
        if new:
            self.session.execute(
                insert(_levels),
                [
                    {"location_id": level.location.id, "item_id": level.item.id, "on_hand": level.on_hand,
                     "below": level.below, "updated_at": now}
                    for level in new
                ],
            )  # fmt: skip
            for level in new:
                level.stored = True
        if stored:
            self.session.execute(
                _WRITE_BACK,
                [
                    {"at_location": level.location.id, "of_item": level.item.id, "level": level.on_hand,
                     "under": level.below, "moved_at": now}
                    for level in stored
                ],
            )  # fmt: skip
        record_events(self.session, *self.events, together=[(_moves, self.rows)])
        self.events, self.rows = [], []


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
) -> tuple[int, bool]:
    """In the caller's transaction: one move (``Levels`` for one level, written at once)."""
    levels = Levels(session)
    changed = levels.change(location, item, delta, kind, actor=actor, reason=reason, reference=reference)
    levels.write()
    return changed


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
    try:
        with db.transaction() as session:
            levels = Levels(session)

            def place(slug: str) -> Location:
                if slug not in places:
                    places[slug] = location_named(session, slug, scope)
                return places[slug]

            def stocked(code: str) -> Item:
                if code not in items:
                    items[code] = _item(session, code)
                return items[code]

            def apply(move: Move) -> list[dict[str, Any]]:
                location, item = place(move.location), stocked(move.item)
                signed = move.quantity if move.kind in ("receipt", "adjustment") else -move.quantity
                kind = "transfer_out" if move.kind == "transfer" else move.kind
                said = {"reason": move.reason, "reference": move.reference}
                left = levels.change(location, item, signed, kind, actor=actor, **said)
                changed = [level_view(*left, item, location)]
                if move.kind == "transfer":
                    target = place(move.to_location or "")
                    arrived = levels.change(target, item, move.quantity, "transfer_in", actor=actor, **said)
                    changed.append(level_view(*arrived, item, target))
                return changed

            views = [_in_batch(number, len(moves), apply, move) for number, move in enumerate(moves, 1)]
            levels.write()
            return views
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
    levels = Levels(session)
    for code, quantity in sorted(service.materials.items()):
        item = session.scalars(select(Item).where(Item.code == code, Item.retired_at.is_(None))).first()
        if item is None:
            short.append(f"unknown_item:{code}")
            continue
        wanted = int(quantity)
        taken = min(wanted, levels.level(location, item).on_hand)  # read under its lock
        if taken:
            levels.change(location, item, -taken, "consumption", actor=actor, reference=reference)
        if taken < wanted:
            short.append(f"stock_short:{code}")
    levels.write()
    if short:
        open_exception(
            session, INVENTORY_QUEUE, short, actor=actor, case=case, dedupe_key=f"stock:{reference}"
        )


def stock(
    db: Database, location_slug: str, scope: LocationScope, below_only: bool = False
) -> list[dict[str, Any]]:
    """A location's levels by item code (only those under their minimum with ``below_only``)."""
    with db.sessions() as session:
        location = location_named(session, location_slug, scope)
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
