"""Anomalies in the event log: hourly series (intake per channel, exceptions opened, stock consumed
per item) against a robust seasonal baseline, the same hour of the week in the weeks before
(median, and the median absolute deviation, with a Poisson floor for small counts). An hour whose
value is ``threshold`` robust deviations away is an anomaly, written as ``anomaly.detected`` with
its evidence (value, baseline, spread, the hours it was compared with). Nothing is changed but the
event log; a person looks."""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import statistics
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from careops.db import Database
from careops.domain.events import Event, EventType, record_events
from careops.domain.models import BusinessEvent, utcnow

HOUR = dt.timedelta(hours=1)
WEEK = dt.timedelta(days=7)
Series = dict[dt.datetime, float]  # hour start (UTC) -> value


@dataclass(frozen=True)
class Metric:
    name: str
    event_type: str
    key: Callable[[dict[str, Any]], str]  # the series within the metric (a channel, an item)
    value: Callable[[dict[str, Any]], float]  # what an event adds to its hour


METRICS = (
    Metric("intake", "referral.received", lambda p: str(p.get("channel", "unknown")), lambda p: 1.0),
    Metric("exceptions", "exception.opened", lambda p: str(p.get("queue", "unknown")), lambda p: 1.0),
    Metric(
        "stock_consumption",
        "stock.moved",
        lambda p: str(p.get("item", "unknown")),
        lambda p: float(-p.get("quantity", 0)) if p.get("kind") == "consumption" else 0.0,
    ),
)


@dataclass(frozen=True)
class Anomaly:
    metric: str
    key: str
    hour: dt.datetime
    value: float
    baseline: float
    spread: float
    score: float  # robust deviations from the baseline, signed

    def payload(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "key": self.key,
            "hour": self.hour.isoformat(),
            "value": self.value,
            "baseline": self.baseline,
            "spread": round(self.spread, 3),
            "score": round(self.score, 2),
        }


def hour_of(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)


def detect(
    series: Series,
    hours: list[dt.datetime],
    *,
    first: dt.datetime,
    weeks: int = 4,
    threshold: float = 4.0,
    metric: str = "",
    key: str = "",
) -> list[Anomaly]:
    """The hours among ``hours`` whose value lies ``threshold`` robust deviations from the same hour
    of up to ``weeks`` weeks before (hours without events count as 0); ``first`` is when the data
    begins, and an hour needs two weeks of it before to be judged."""
    found = []
    for hour in hours:
        history = [series.get(hour - WEEK * n, 0.0) for n in range(1, weeks + 1) if hour - WEEK * n >= first]
        if len(history) < 2:
            continue
        baseline = statistics.median(history)
        mad = statistics.median(abs(v - baseline) for v in history)
        spread = max(1.4826 * mad, math.sqrt(baseline) + 1.0)  # counts vary at least like a Poisson's
        value = series.get(hour, 0.0)
        score = (value - baseline) / spread
        if abs(score) >= threshold:
            found.append(Anomaly(metric, key, hour, value, baseline, spread, score))
    return found


def series_from(db: Database, metric: Metric, start: dt.datetime, end: dt.datetime) -> dict[str, Series]:
    """The metric's hourly series per key over ``[start, end)``, read from the event log."""
    found: dict[str, Series] = defaultdict(dict)
    with db.sessions() as session:
        rows = session.execute(
            select(BusinessEvent.occurred_at, BusinessEvent.payload)
            .where(
                BusinessEvent.type == metric.event_type,
                BusinessEvent.occurred_at >= start,
                BusinessEvent.occurred_at < end,
            )
            .execution_options(yield_per=5000)
        )
        for occurred, payload in rows:
            series = found[metric.key(payload or {})]
            hour = hour_of(occurred)
            series[hour] = series.get(hour, 0.0) + metric.value(payload or {})
    return found


def scan(
    db: Database, *, hours: int = 24, weeks: int = 4, threshold: float = 4.0, now: dt.datetime | None = None
) -> list[Anomaly]:
    """Check the last ``hours`` complete hours of every metric; write ``anomaly.detected`` for each
    anomaly not written before (by metric, key and hour). All anomalies found are returned."""
    end = hour_of(now or utcnow())
    checked = [end - HOUR * n for n in range(hours, 0, -1)]
    start = checked[0] - WEEK * weeks
    with db.sessions() as session:
        first = session.scalar(select(func.min(BusinessEvent.occurred_at)))
    if first is None:
        return []
    since = hour_of(first)
    found = []
    for metric in METRICS:
        for key, series in series_from(db, metric, start, end).items():
            found += detect(
                series, checked, first=since, weeks=weeks, threshold=threshold, metric=metric.name, key=key
            )
    subjects = {_subject(a): a for a in found}
    with db.transaction() as session:
        known = set(
            session.scalars(
                select(BusinessEvent.subject_id).where(
                    BusinessEvent.type == str(EventType.ANOMALY_DETECTED),
                    BusinessEvent.subject_id.in_(subjects),
                )
            )
        )
        record_events(
            session,
            *(
                Event(EventType.ANOMALY_DETECTED, "anomaly", s, "ai:anomalies", payload=a.payload())
                for s, a in subjects.items()
                if s not in known
            ),
        )
    return found


def _subject(anomaly: Anomaly) -> str:
    return hashlib.sha256(f"{anomaly.metric}|{anomaly.key}|{anomaly.hour.isoformat()}".encode()).hexdigest()[
        :32
    ]
