"""KPI roll-ups from the sealed event log: kept current by the worker, rebuilt on demand, read by
the dashboard.

The roll-up follows the audit chain's ``seq`` (gapless, given after commit), not event ids: an
event committed late has a lower id but a later place in the chain, so nothing is skipped. Each
round reads the events after the cursor, adds what they count (``kpis.KPIS``) to ``kpi_rollup``
and moves the cursor, in one transaction: each event counts once, whatever fails or runs twice.
One roll-up runs at a time (the cursor row is locked on PostgreSQL; SQLite has one writer).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from careops.db import Database
from careops.domain.models import Base, BusinessEvent, KpiCursor, KpiRollup
from careops.observability.kpis import BUCKETS, COUNTED_IN, KPIS, OVER, RATES, LoggedEvent

BATCH = 5000
CURSOR = "events"
_events = Base.metadata.tables[BusinessEvent.__tablename__]
_rollup = Base.metadata.tables[KpiRollup.__tablename__]
_cursor = Base.metadata.tables[KpiCursor.__tablename__]
Key = tuple[str, dt.date, str, str]


def roll_up(db: Database, limit: int = BATCH) -> int:
    """Count the next ``limit`` sealed events into the roll-ups; how many were read."""
    with db.writer() as connection:
        position = _position(connection)
        rows = connection.execute(
            select(
                _events.c.seq, _events.c.type, _events.c.location_id, _events.c.payload, _events.c.occurred_at
            )
            .where(_events.c.seq > position)
            .order_by(_events.c.seq)
            .limit(limit)
        ).all()
        if not rows:
            return 0
        events = [LoggedEvent(r.seq, r.type, r.location_id, r.payload or {}, r.occurred_at) for r in rows]
        _add(connection, tally(events, _received(connection, events)))
        connection.execute(update(_cursor).where(_cursor.c.name == CURSOR).values(seq=rows[-1].seq))
        return len(rows)


def _position(connection: Connection) -> int:
    query = select(_cursor.c.seq).where(_cursor.c.name == CURSOR)
    if connection.dialect.name == "postgresql":
        query = query.with_for_update()
    position = connection.scalar(query)
    if position is None:
        connection.execute(insert(_cursor).values(name=CURSOR, seq=0))
        return 0
    return int(position)


def _received(connection: Connection, events: list[LoggedEvent]) -> dict[str, dt.datetime]:
    """When each intake item whose case was created in ``events`` was received, for the events
    that do not say so themselves (written before ``case.created`` carried ``received_at``)."""
    items = {
        str(e.payload["intake_item_id"])
        for e in events
        if e.type == "case.created" and "intake_item_id" in e.payload and "received_at" not in e.payload
    }
    if not items:
        return {}
    found = connection.execute(
        select(_events.c.subject_id, _events.c.occurred_at).where(
            _events.c.type == "referral.received", _events.c.subject_id.in_(items)
        )
    )
    return {row.subject_id: row.occurred_at for row in found}


def tally(events: Iterable[LoggedEvent], received: dict[str, dt.datetime]) -> dict[Key, list[float]]:
    """What ``events`` add to each (kpi, day, location, dimension): [count, total]."""
    added: dict[Key, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for event in events:
        day = event.occurred_at.date()
        for kpi in COUNTED_IN.get(event.type, ()):
            for dimension, value in kpi.tally(event, received):
                cell = added[(kpi.name, day, event.location_id or "", dimension)]
                cell[0] += 1
                cell[1] += value
    return added


def _add(connection: Connection, added: dict[Key, list[float]]) -> None:
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    rows = [
        {"kpi": k, "day": d, "location_id": loc, "dimension": dim, "count": int(c), "total": t}
        for (k, d, loc, dim), (c, t) in added.items()
    ]
    for start in range(0, len(rows), 500):
        statement = dialect.insert(_rollup).values(rows[start : start + 500])
        excluded = statement.excluded
        connection.execute(
            statement.on_conflict_do_update(
                index_elements=["kpi", "day", "location_id", "dimension"],
                set_={"count": _rollup.c.count + excluded.count, "total": _rollup.c.total + excluded.total},
            )
        )


def rebuild(db: Database, progress: Callable[[int, int], None] | None = None) -> int:
    """Every KPI again from the whole sealed log; how many events were counted."""
    with db.writer() as connection:
        _position(connection)
        connection.execute(delete(_rollup))
        connection.execute(update(_cursor).where(_cursor.c.name == CURSOR).values(seq=0))
        total = connection.scalar(select(func.count()).where(_events.c.seq.is_not(None))) or 0
    done = 0
    while counted := roll_up(db):
        done += counted
        if progress:
            progress(done, total)
    return done


def report(db: Database, locations: frozenset[str] | None, since: dt.date, until: dt.date) -> dict[str, Any]:
    """Every KPI over ``since``..``until`` (days, inclusive) in ``locations`` (None: all, and the
    events of no location): per dimension totals, a daily series, durations' mean, p50 and p90,
    and the rates."""
    columns = (_rollup.c.kpi, _rollup.c.day, _rollup.c.dimension, _rollup.c.count.label("n"), _rollup.c.total)
    query = select(*columns).where(_rollup.c.day >= since, _rollup.c.day <= until)
    if locations is not None:
        query = query.where(_rollup.c.location_id.in_(locations))
    with db.engine.connect() as connection:
        rows = connection.execute(query).all()
    days = [since + dt.timedelta(days=n) for n in range((until - since).days + 1)]
    kpis: dict[str, dict[str, Any]] = {}
    for kpi in KPIS:
        mine = [r for r in rows if r.kpi == kpi.name]
        by_dimension: dict[str, int] = defaultdict(int)
        daily: dict[dt.date, int] = defaultdict(int)
        for row in mine:
            if not row.dimension.startswith("le:"):
                by_dimension[row.dimension] += row.n
                daily[row.day] += row.n
        entry: dict[str, Any] = {
            "kpi": kpi,
            "total": sum(by_dimension.values()),
            "by_dimension": dict(sorted(by_dimension.items(), key=lambda item: -item[1])),
            "daily": [(day, daily.get(day, 0)) for day in days],
        }
        if kpi.unit == "seconds":
            entry |= _durations(mine)
        kpis[kpi.name] = entry
    rates = {}
    for name, title, (counted, dimension), denominators in RATES:
        numerator = kpis[counted]["by_dimension"].get(dimension, 0)
        denominator = sum(
            kpis[k]["total"] if d is None else kpis[k]["by_dimension"].get(d, 0) for k, d in denominators
        )
        rates[name] = {"title": title, "value": numerator / denominator if denominator else None}
    return {"since": since, "until": until, "days": days, "kpis": kpis, "rates": rates}


def _durations(rows: list[Any]) -> dict[str, float | None]:
    overall = [r for r in rows if r.dimension == ""]
    count = sum(r.n for r in overall)
    buckets: dict[str, int] = defaultdict(int)
    for row in rows:
        if row.dimension.startswith("le:"):
            buckets[row.dimension] += row.n
    return {
        "mean": sum(r.total for r in overall) / count if count else None,
        "p50": _percentile(buckets, count, 0.5),
        "p90": _percentile(buckets, count, 0.9),
    }


def _percentile(buckets: dict[str, int], count: int, share: float) -> float | None:
    """The upper bound of the bucket holding the ``share``-th value (inf past the last bound)."""
    if not count:
        return None
    seen = 0
    for bound in (*BUCKETS, None):
        seen += buckets.get(f"le:{bound}" if bound is not None else OVER, 0)
        if seen >= share * count:
            return float(bound) if bound is not None else float("inf")
    return float("inf")
