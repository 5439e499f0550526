"""The KPI dashboard for one reader: a period and a location within the reader's locations, the
KPIs of the event log over them (``observability.rollup.report``), the queues as they stand now,
and the export of it all as rows (audited as ``kpis.exported``)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select

from careops.db import Database
from careops.domain.events import Event, EventType, record_events
from careops.domain.models import Location
from careops.errors import NotFound
from careops.governance.principal import Principal
from careops.observability.rollup import report
from careops.orchestration.exception_queue import queue_summary

PERIODS = (7, 30, 90)


def dashboard(db: Database, reader: Principal, days: int, location: str | None) -> dict[str, Any]:
    """The last ``days`` days (UTC, today included) at ``location`` (a slug; None: every location
    the reader sees)."""
    with db.sessions() as session:
        places = {
            row.slug: row.id
            for row in session.execute(select(Location.slug, Location.id).order_by(Location.slug))
            if reader.scope.allows(row.id)
        }
    if location is not None and location not in places:
        raise NotFound("no location with this name among yours")
    chosen = frozenset({places[location]}) if location else reader.scope.ids
    today = dt.datetime.now(dt.UTC).date()
    data = report(db, chosen, today - dt.timedelta(days=days - 1), today)
    data["locations"] = list(places)
    data["queues"] = queue_summary(db, reader.scope)
    return data


def export_rows(db: Database, reader: Principal, days: int, location: str | None) -> list[dict[str, Any]]:
    """The dashboard as rows (kpi, dimension, day, value); a day of "" is the period's total."""
    data = dashboard(db, reader, days, location)
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
