"""The home-care path at speed: stock moves, then candidate search (``bench.staffing``).

    .venv/bin/python -m bench.homecare [--moves 3000] [--batch 100] [--rounds 3]
                                       [--part stock|candidates|both] [bench.staffing's options]

Stock moves: on a fresh PostgreSQL database with the demo organisation (its items, thresholds and
opening stock), ``--moves`` moves: consumptions of one unit at a time, with a receipt of 50
whenever a level would run out, over every item with a threshold, so levels cross their minimum
again and again. Each move locks its level, changes it, writes the move, its event and (once per
crossing) ``stock.below_threshold``. Measured one move a transaction (``move_stock``, what
``POST /api/v1/stock/moves`` runs) and ``--batch`` moves a transaction (``move_stocks``, what
``POST /api/v1/stock/moves/batch`` runs). Issue 28's target: ≥ 1,000 moves/s. The reference, in
the same run and with the same moves a transaction: the fastest honest way to do the same writes,
plain SQL on psycopg (one move: the guarded update; a batch: each level locked once, changed in
memory, written back once; the moves and the events inserted), without the service's checks or
threshold logic. The table also counts the crossings written
against those the moves made (each must be written exactly once).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import tempfile
import time
from pathlib import Path
from statistics import median

import psycopg
from rich.table import Table
from sqlalchemy import func, select

from bench.intake import console, drop_database, fresh_database
from bench.staffing import add_network_arguments, measure_candidates
from careops.db import Database
from careops.demo.seed import seed_demo
from careops.domain.models import BusinessEvent, Location, new_id
from careops.domain.stock import Item, StockLevel, StockThreshold
from careops.governance.keys import load_field_keys
from careops.governance.scoping import EVERYWHERE
from careops.migrate import upgrade
from careops.orchestration.inventory import Move, move_stock, move_stocks
from careops.settings import Settings


def _plan(db: Database, moves: int) -> list[tuple[str, str, str, int]]:
    """(location, item, kind, quantity) moves, and how many crossings they make."""
    with db.sessions() as session:
        rows = session.execute(
            select(StockThreshold.location, StockThreshold.item, StockThreshold.minimum, StockLevel.on_hand)
            .join(Item, Item.code == StockThreshold.item)
            .join(Location, Location.slug == StockThreshold.location)
            .join(StockLevel, (StockLevel.item_id == Item.id) & (StockLevel.location_id == Location.id))
        ).all()
    levels = {(location, item): [on_hand, minimum] for location, item, minimum, on_hand in rows}
    keys = sorted(levels)
    plan = []
    for n in range(moves):
        key = keys[n % len(keys)]
        if levels[key][0] == 0:
            plan.append((*key, "receipt", 50))
            levels[key][0] += 50
        else:
            plan.append((*key, "consumption", 1))
            levels[key][0] -= 1
    return plan


def _crossings(
    plan: list[tuple[str, str, str, int]], start: dict[tuple[str, str], tuple[int, int, bool]]
) -> int:
    state = {key: list(value) for key, value in start.items()}
    crossed = 0
    for location, item, kind, quantity in plan:
        on_hand, minimum, below = state[location, item]
        on_hand += quantity if kind == "receipt" else -quantity
        if on_hand < minimum and not below:
            crossed, below = crossed + 1, True
        elif below and on_hand >= minimum:
            below = False
        state[location, item] = [on_hand, minimum, below]
    return crossed


def _start(db: Database) -> dict[tuple[str, str], tuple[int, int, bool]]:
    with db.sessions() as session:
        rows = session.execute(
            select(StockThreshold.location, StockThreshold.item, StockLevel.on_hand, StockThreshold.minimum,
                   StockLevel.below)
            .join(Item, Item.code == StockThreshold.item)
            .join(Location, Location.slug == StockThreshold.location)
            .join(StockLevel, (StockLevel.item_id == Item.id) & (StockLevel.location_id == Location.id))
        ).all()  # fmt: skip
    return {(loc, item): (on_hand, minimum, below) for loc, item, on_hand, minimum, below in rows}


def _events(db: Database, kind: str) -> int:
    with db.sessions() as session:
        return session.scalar(select(func.count()).where(BusinessEvent.type == kind)) or 0


def _careops(db: Database, plan: list[tuple[str, str, str, int]], batch: int) -> float:
    """The plan through ``move_stocks``, ``batch`` moves a transaction (1: ``move_stock`` each)."""
    moves = [Move(location, item, kind, quantity) for location, item, kind, quantity in plan]
    started = time.perf_counter()
    for first in range(0, len(moves), batch):
        if batch == 1:
            move_stock(db, moves[first], actor="bench", scope=EVERYWHERE)
        else:
            move_stocks(db, moves[first : first + batch], actor="bench", scope=EVERYWHERE)
    return time.perf_counter() - started


def _plain(url: str, db: Database, plan: list[tuple[str, str, str, int]], batch: int) -> float:
    """The same writes in plain SQL, ``batch`` moves a transaction, the way careops does them: each
    level touched locked once (``FOR UPDATE``) and changed in memory move by move, then written
    back once (``executemany``), and the move rows and events inserted by one ``executemany`` each.
    One move a transaction: the guarded ``UPDATE … RETURNING`` alone is fastest, so that is it."""
    with db.sessions() as session:
        locations = {loc.slug: loc.id for loc in session.scalars(select(Location))}
        items = {item.code: item.id for item in session.scalars(select(Item))}
    started = time.perf_counter()
    with psycopg.connect(url.replace("+psycopg", "")) as connection:
        for first in range(0, len(plan), batch):
            with connection.transaction(), connection.cursor() as cursor:
                levels: dict[tuple[str, str], int] = {}
                moves, events = [], []
                for location, item, kind, quantity in plan[first : first + batch]:
                    delta = quantity if kind == "receipt" else -quantity
                    key = (locations[location], items[item])
                    if batch == 1:
                        row = cursor.execute(
                            "UPDATE stock_level SET on_hand = on_hand + %s, updated_at = now() WHERE"
                            " location_id = %s AND item_id = %s AND on_hand + %s >= 0 RETURNING on_hand",
                            (delta, *key, delta),
                        ).fetchone()
                        on_hand = row[0] if row else 0
                    else:
                        if key not in levels:
                            row = cursor.execute(
                                "SELECT on_hand FROM stock_level WHERE location_id = %s AND item_id = %s"
                                " FOR UPDATE",
                                key,
                            ).fetchone()
                            levels[key] = row[0] if row else 0
                        levels[key] = on_hand = max(0, levels[key] + delta)
                    moves.append((new_id(), *key, kind, delta, on_hand))
                    events.append((key[1], key[0], json.dumps({"item": item, "quantity": delta})))
                if levels:
                    cursor.executemany(
                        "UPDATE stock_level SET on_hand = %s, updated_at = now()"
                        " WHERE location_id = %s AND item_id = %s",
                        [(on_hand, *key) for key, on_hand in levels.items()],
                    )
                cursor.executemany(
                    "INSERT INTO stock_move (id, location_id, item_id, kind, quantity, on_hand, actor,"
                    " created_at) VALUES (%s, %s, %s, %s, %s, %s, 'reference', now())",
                    moves,
                )
                cursor.executemany(
                    "INSERT INTO business_event (type, subject_type, subject_id, location_id, actor, payload,"
                    " occurred_at) VALUES ('stock.moved', 'item', %s, %s, 'reference', %s, now())",
                    events,
                )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--moves", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=100, help="moves a transaction in the batched rows")
    parser.add_argument("--part", choices=("stock", "candidates", "both"), default="both")
    add_network_arguments(parser)
    args = parser.parse_args()
    if args.part != "candidates":
        _stock_moves(args)
    if args.part != "stock":
        measure_candidates(args)


def _stock_moves(args: argparse.Namespace) -> None:
    table = Table(title=f"Stock moves on PostgreSQL, {dt.date.today()} (2 cores)")
    for column in ("round", "moves a transaction", "careops moves/s", "plain SQL moves/s", "ratio",
                   "crossings made", "written"):  # fmt: skip
        table.add_column(column, justify="right")
    results: dict[int, list[tuple[float, float, float]]] = {1: [], args.batch: []}
    with tempfile.TemporaryDirectory() as tmp:
        url = fresh_database("postgres", Path(tmp))
        try:
            upgrade(url)
            db = Database(url)
            load_field_keys(db, Settings(database_url=url))
            seed_demo(db)
            for round_ in range(1, args.rounds + 1):
                for batch in results:
                    plan = _plan(db, args.moves)
                    expected = _crossings(plan, _start(db))
                    before = _events(db, "stock.below_threshold")
                    ours = args.moves / _careops(db, plan, batch)
                    written = _events(db, "stock.below_threshold") - before
                    theirs = args.moves / _plain(url, db, _plan(db, args.moves), batch)
                    results[batch].append((ours, theirs, ours / theirs))
                    table.add_row(str(round_), str(batch), f"{ours:,.0f}", f"{theirs:,.0f}",
                                  f"{ours / theirs:.2f}", str(expected), str(written))  # fmt: skip
            for batch, rows in results.items():
                medians = [f"{median(c):,.2f}" for c in zip(*rows, strict=True)]
                table.add_row("median", str(batch), *medians, "", "")
            db.dispose()
        finally:
            drop_database(url)
    console.print(table)


if __name__ == "__main__":
    main()
