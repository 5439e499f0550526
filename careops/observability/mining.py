"""Process mining of the event log: one trace per case (its business events in time order), the
directly-follows graph with frequencies and median waits, and exports for process-mining tools:
CSV, XES (one trace per case) and OCEL 2.0 (cases, exception items and intake items as objects).

XES and OCEL are written with pm4py, an optional extra (``pip install 'careops[mining]'``); CSV
needs nothing. Exports carry event types, ids, times, locations and actors, never payloads: no
PHI leaves this way.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import IO, Any, NamedTuple

from sqlalchemy import select

from careops.db import Database
from careops.domain.events import Event, EventType, record_events
from careops.domain.models import Base, BusinessEvent, Location

_events = Base.metadata.tables[BusinessEvent.__tablename__]
FORMATS = ("csv", "xes", "ocel")
# The objects of an object-centric log: what an event is about (besides its case).
OBJECT_TYPES = {"intake_item": "intake item", "exception": "exception item", "case": "case"}


class Step(NamedTuple):
    """One event of a case's trace (a tuple: tens of thousands are made for one page)."""

    case_id: str
    activity: str
    at: dt.datetime
    location: str | None
    actor: str
    subject_type: str
    subject_id: str


def steps(
    db: Database,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    location: str | None = None,
    case_ids: list[str] | None = None,
) -> Iterator[Step]:
    """The business events of cases, case by case, each case's in time order; ``location`` is a
    slug, ``case_ids`` the only cases wanted."""
    with db.engine.connect() as connection:
        slugs = dict(connection.execute(select(Location.id, Location.slug)).all())
        columns = (
            "id",
            "case_id",
            "type",
            "occurred_at",
            "location_id",
            "actor",
            "subject_type",
            "subject_id",
        )
        query = select(*(_events.c[name] for name in columns)).where(_events.c.case_id.is_not(None))
        if since is not None:
            query = query.where(_events.c.occurred_at >= since)
        if until is not None:
            query = query.where(_events.c.occurred_at < until)
        if location is not None:
            ids = [id_ for id_, slug in slugs.items() if slug == location]
            query = query.where(_events.c.location_id.in_(ids))
        if case_ids is not None:
            query = query.where(_events.c.case_id.in_(case_ids))
        query = query.order_by(_events.c.case_id, _events.c.occurred_at, _events.c.id)
        for row in connection.execution_options(yield_per=5000).execute(query):
            yield Step(
                row.case_id,
                row.type,
                row.occurred_at,
                slugs.get(row.location_id) if row.location_id else None,
                row.actor,
                row.subject_type,
                row.subject_id,
            )


@dataclass(frozen=True)
class Arc:
    source: str
    target: str
    count: int
    median_wait_seconds: float


def directly_follows(trace_steps: Iterator[Step] | list[Step]) -> tuple[Counter[str], list[Arc]]:
    """How often each activity happens, and each arc a → b (b right after a in a case) with how
    often and the median time between them; most frequent first."""
    activities: Counter[str] = Counter()
    waits: dict[tuple[str, str], list[float]] = defaultdict(list)
    previous: Step | None = None
    for step in trace_steps:
        activities[step.activity] += 1
        if previous is not None and previous.case_id == step.case_id:
            waits[(previous.activity, step.activity)].append((step.at - previous.at).total_seconds())
        previous = step
    arcs = [Arc(a, b, len(w), median(w)) for (a, b), w in waits.items()]
    return activities, sorted(arcs, key=lambda arc: (-arc.count, arc.source, arc.target))


CSV_COLUMNS = ("case_id", "activity", "timestamp", "location", "actor", "object_type", "object_id")


def write_csv(trace_steps: Iterator[Step], out: IO[str]) -> int:
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    count = 0
    for step in trace_steps:
        writer.writerow(
            (step.case_id, step.activity, step.at.isoformat(), step.location or "", step.actor,
             step.subject_type, step.subject_id)
        )  # fmt: skip
        count += 1
    return count


def _pm4py() -> Any:
    try:
        import pm4py
    except ImportError as exc:  # the optional extra is not installed
        raise RuntimeError("XES and OCEL need pm4py: pip install 'careops[mining]'") from exc
    return pm4py


def write_xes(trace_steps: Iterator[Step], path: Path) -> int:
    """One trace per case (XES, IEEE 1849); how many events."""
    pm4py = _pm4py()
    import pandas as pd  # comes with pm4py

    frame = pd.DataFrame(
        [
            {
                "case:concept:name": s.case_id,
                "concept:name": s.activity,
                "time:timestamp": pd.Timestamp(s.at),
                "org:resource": s.actor,
                "location": s.location or "",
            }
            for s in trace_steps
        ],
        columns=["case:concept:name", "concept:name", "time:timestamp", "org:resource", "location"],
    )
    pm4py.write_xes(pm4py.format_dataframe(frame), str(path))
    return len(frame)


def write_ocel(trace_steps: Iterator[Step], path: Path) -> int:
    """OCEL 2.0 (JSON): every event related to its case, and to the intake or exception item it
    is about; how many events."""
    pm4py = _pm4py()
    import pandas as pd
    from pm4py.objects.ocel.obj import OCEL

    events, relations = [], []
    for n, step in enumerate(trace_steps):
        event = {"ocel:eid": f"e{n}", "ocel:activity": step.activity, "ocel:timestamp": pd.Timestamp(step.at)}
        events.append(event)
        relations.append({**event, "ocel:oid": step.case_id, "ocel:type": "case"})
        if step.subject_type != "case" and step.subject_type in OBJECT_TYPES:
            relations.append(
                {**event, "ocel:oid": step.subject_id, "ocel:type": OBJECT_TYPES[step.subject_type]}
            )
    related = pd.DataFrame(
        relations, columns=["ocel:eid", "ocel:activity", "ocel:timestamp", "ocel:oid", "ocel:type"]
    )
    objects = related[["ocel:oid", "ocel:type"]].drop_duplicates()
    log = OCEL(
        events=pd.DataFrame(events, columns=["ocel:eid", "ocel:activity", "ocel:timestamp"]),
        objects=objects,
        relations=related,
    )
    pm4py.write_ocel2_json(log, str(path))
    return len(events)


def export(
    db: Database,
    format_: str,
    output: Path,
    *,
    actor: str,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    location: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write the log in ``format_`` (one of ``FORMATS``) to ``output``, telling ``progress`` every
    10,000 events; audited as ``events.exported``. How many events."""
    trace = steps(db, since, until, location)
    if progress is not None:
        trace = _told(trace, progress)
    if format_ == "csv":
        with output.open("w", newline="") as out:
            count = write_csv(trace, out)
    else:
        count = {"xes": write_xes, "ocel": write_ocel}[format_](trace, output)
    payload = {
        "events": count,
        "format": format_,
        "from": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "location": location,
    }
    with db.transaction() as session:
        record_events(
            session, Event(EventType.EVENTS_EXPORTED, "principal", actor, actor=actor, payload=payload)
        )
    return count


def _told(trace: Iterator[Step], progress: Callable[[int], None]) -> Iterator[Step]:
    for done, step in enumerate(trace, start=1):
        if done % 10_000 == 0:
            progress(done)
        yield step
