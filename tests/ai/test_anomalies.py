"""Anomaly detection on generated hourly streams with injected anomalies (detection rate and false
alarms per week), and on the event log of SQLite and PostgreSQL (written once as anomaly.detected)."""

from __future__ import annotations

import datetime as dt

import numpy as np
from sqlalchemy import insert, select

from careops.ai.anomalies import HOUR, WEEK, detect, scan
from careops.db import Database
from careops.domain.models import BusinessEvent

START = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)  # a Monday


def _stream(rng: np.random.Generator, weeks: int) -> dict[dt.datetime, float]:
    """Hourly counts with a day shape (busy 08:00-18:00 on weekdays), Poisson noise."""
    series = {}
    for n in range(weeks * 7 * 24):
        hour = START + HOUR * n
        busy = hour.weekday() < 5 and 8 <= hour.hour < 18
        series[hour] = float(rng.poisson(25 if busy else 3))
    return series


def test_injected_anomalies_are_found_with_few_false_alarms_per_week() -> None:
    rng = np.random.default_rng(31)
    found = injected = false_alarms = 0
    weeks_checked = 0
    for _ in range(10):
        series = _stream(rng, 5)
        last_week = [START + WEEK * 4 + HOUR * n for n in range(7 * 24)]
        spikes = set(rng.choice(len(last_week), size=5, replace=False).tolist())
        for index in spikes:
            hour = last_week[index]
            series[hour] = series[hour] * 3 + 20  # a surge
        flagged = {a.hour for a in detect(series, last_week, first=START)}
        found += len(flagged & {last_week[i] for i in spikes})
        injected += len(spikes)
        false_alarms += len(flagged - {last_week[i] for i in spikes})
        weeks_checked += 1
    assert found / injected >= 0.9
    assert false_alarms / weeks_checked <= 2.0


def test_an_hour_without_two_weeks_of_history_is_not_judged() -> None:
    series = {START + HOUR * 5: 100.0}
    assert detect(series, [START + HOUR * 5, START + WEEK + HOUR * 5], first=START) == []


def test_the_event_log_scan_writes_each_anomaly_once(db: Database) -> None:
    now = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    rows = []
    for week in range(1, 4):
        for _ in range(3):
            rows.append({"occurred_at": now - WEEK * week - HOUR * 2 + dt.timedelta(minutes=5)})
    rows += [{"occurred_at": now - HOUR * 2 + dt.timedelta(minutes=m)} for m in range(40)]  # a burst of 40
    base = {
        "type": "referral.received",
        "subject_type": "intake_item",
        "subject_id": "x",
        "actor": "test",
        "payload": {"channel": "email"},
    }
    with db.transaction() as session:
        session.execute(insert(BusinessEvent), [{**base, **row} for row in rows])
    [anomaly] = [a for a in scan(db, hours=6, now=now) if a.metric == "intake" and a.key == "email"]
    assert anomaly.value == 40 and anomaly.baseline == 3 and anomaly.score > 4
    assert [a for a in scan(db, hours=6, now=now) if a.metric == "intake"]
    with db.sessions() as session:
        written = session.scalars(select(BusinessEvent).where(BusinessEvent.type == "anomaly.detected")).all()
    assert len([e for e in written if e.payload["metric"] == "intake"]) == 1
    assert written[0].payload["key"] == "email" and written[0].payload["value"] == 40
