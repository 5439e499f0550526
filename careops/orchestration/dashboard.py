"""The KPI dashboard for one reader: a period and a location within the reader's locations, the
KPIs of the event log over them (``observability.rollup.report``), the queues as they stand now,
the export of it all as rows (audited as ``kpis.exported``), and the process flow (the
directly-follows graph of the cases, laid out for drawing)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select

from careops.db import Database
from careops.domain.events import Event, EventType, record_events
from careops.domain.models import Location, ServiceCase
from careops.errors import NotFound
from careops.governance.principal import Principal
from careops.governance.scoping import LocationScope
from careops.observability.mining import Step, directly_follows, steps
from careops.observability.rollup import report
from careops.orchestration.exception_queue import queue_summary

PERIODS = (7, 30, 90)


def _places(db: Database, reader: Principal, location: str | None) -> tuple[list[str], frozenset[str] | None]:
    """The slugs of the reader's locations, and the location ids asked for: ``location``'s (a
    slug among the reader's, else 404), or every one the reader sees (None: all)."""
    with db.sessions() as session:
        ids = {
            slug: id_
            for slug, id_ in session.execute(select(Location.slug, Location.id).order_by(Location.slug))
            if reader.scope.allows(id_)
        }
    if location is None:
        return list(ids), reader.scope.ids
    if location not in ids:
        raise NotFound("no location with this name among yours")
    return list(ids), frozenset({ids[location]})


def _kpis(db: Database, reader: Principal, days: int, location: str | None) -> dict[str, Any]:
    places, chosen = _places(db, reader, location)
    today = dt.datetime.now(dt.UTC).date()
    return {
        **report(db, chosen, today - dt.timedelta(days=days - 1), today),
        "locations": places,
        "chosen": chosen,
    }


def dashboard(db: Database, reader: Principal, days: int, location: str | None) -> dict[str, Any]:
    """The last ``days`` days (UTC, today included) at ``location`` (a slug; None: every location
    the reader sees), and the queues there as they stand."""
    data = _kpis(db, reader, days, location)
    data["queues"] = queue_summary(db, LocationScope(data["chosen"]))
    return data


def export_rows(db: Database, reader: Principal, days: int, location: str | None) -> list[dict[str, Any]]:
    """The dashboard's KPIs as rows (kpi, dimension, day, value); a day of "" is the period's total."""
    data = _kpis(db, reader, days, location)
    rows: list[dict[str, Any]] = []
    for name, entry in data["kpis"].items():
        for dimension, count in entry["by_dimension"].items():
            rows.append({"kpi": name, "dimension": dimension, "day": "", "value": count})
        rows += [
            {"kpi": name, "dimension": "", "day": day.isoformat(), "value": n} for day, n in entry["daily"]
        ]
        for measure in ("mean", "p50", "p90"):
            if entry.get(measure) is not None:
                rows.append({"kpi": name, "dimension": measure, "day": "", "value": round(entry[measure], 3)})
    for name, rate in data["rates"].items():
        if rate["value"] is not None:
            rows.append({"kpi": name, "dimension": "", "day": "", "value": round(rate["value"], 6)})
    payload = {"rows": len(rows), "days": days, "location": location}
    with db.transaction() as session:
        record_events(
            session, Event(EventType.KPIS_EXPORTED, "principal", reader.id, actor=reader.id, payload=payload)
        )
    return rows


NODE_HEIGHT, NODE_GAP, NODE_WIDTH = 28, 22, 230
FLOW_CASES = 500  # the newest cases of the period the flow is drawn from


def process_flow(db: Database, reader: Principal, days: int, location: str | None) -> dict[str, Any]:
    """The directly-follows graph of the newest ``FLOW_CASES`` cases created in the reader's
    locations over the last ``days`` days, laid out for drawing: activities top to bottom in the
    order cases usually meet them, each arc with its count and median wait."""
    places, chosen = _places(db, reader, location)
    since = dt.datetime.now(dt.UTC) - dt.timedelta(days=days)
    with db.sessions() as session:  # the newest cases of the period: a bounded read on any volume
        newest = LocationScope(chosen).restrict(
            select(ServiceCase.id).where(ServiceCase.created_at >= since), ServiceCase.location_id
        )
        # Ids begin with their creation time (``new_id``): the newest by id, read backwards on the key.
        case_ids = list(session.scalars(newest.order_by(ServiceCase.id.desc()).limit(FLOW_CASES)))
    trace = list(steps(db, case_ids=case_ids))
    activities, arcs = directly_follows(trace)
    order = _usual_order(trace)
    ranked = sorted(activities, key=lambda a: (order.get(a, 0.0), a))
    tops = {name: 10 + row * (NODE_HEIGHT + NODE_GAP) for row, name in enumerate(ranked)}
    nodes = [{"name": name, "count": activities[name], "y": top} for name, top in tops.items()]
    widest = max((arc.count for arc in arcs), default=1)
    drawn = []
    for n, arc in enumerate(arcs):
        y1, y2 = tops[arc.source] + NODE_HEIGHT // 2, tops[arc.target] + NODE_HEIGHT // 2
        bend = NODE_WIDTH + 30 + 18 * (n % 12) + abs(y2 - y1) // 4
        drawn.append({"arc": arc, "y1": y1, "y2": y2, "bend": bend, "width": 1 + 5 * arc.count / widest})
    height = 20 + len(nodes) * (NODE_HEIGHT + NODE_GAP)
    cases = len({step.case_id for step in trace})
    return {
        "nodes": nodes,
        "arcs": drawn,
        "height": height,
        "cases": cases,
        "limit": FLOW_CASES,
        "locations": places,
        "node_width": NODE_WIDTH,
    }


def _usual_order(trace: list[Step]) -> dict[str, float]:
    """Each activity's mean position within its cases (0 first)."""
    positions: dict[str, list[int]] = {}
    position, case = 0, None
    for step in trace:
        position = position + 1 if step.case_id == case else 0
        case = step.case_id
        positions.setdefault(step.activity, []).append(position)
    return {activity: sum(p) / len(p) for activity, p in positions.items()}
