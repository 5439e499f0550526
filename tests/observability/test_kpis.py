"""KPIs from the event log: each KPI on a constructed event sequence against hand-computed values;
on SQLite and PostgreSQL, the incremental roll-up (in small rounds, each event once) equals a
rebuild from the whole log, and the report's rates and percentiles follow from the roll-ups."""

from __future__ import annotations

import datetime as dt

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from careops.db import Database
from careops.domain.models import KpiRollup
from careops.governance.audit import seal_all
from careops.observability.kpis import BUCKETS, KPIS, LoggedEvent, bucket
from careops.observability.rollup import rebuild, report, roll_up, tally
from careops.settings import Settings
from tests.conftest import referral

T0 = dt.datetime(2026, 12, 7, 9, 0, tzinfo=dt.UTC)


def _event(
    seq: int, kind: str, minutes: float = 0, location: str | None = "loc-n", **payload: object
) -> LoggedEvent:
    return LoggedEvent(seq, kind, location, payload, T0 + dt.timedelta(minutes=minutes))


SEQUENCE = [
    _event(1, "referral.received", 0, channel="api"),
    _event(2, "case.created", 0, intake_item_id="i1", status="ready_to_schedule", channel="api"),
    _event(3, "referral.received", 1, channel="hl7"),
    _event(
        4,
        "referral.incomplete",
        1,
        reason_codes=["missing_field:patient.birth_date", "unknown_payer_code"],
        channel="hl7",
    ),
    _event(5, "referral.received", 2, channel="hl7"),
    _event(6, "referral.duplicate_detected", 2, channel="hl7"),
    _event(7, "referral.quarantined", 3, location=None, channel="api", reason_codes=["validation_failed"]),
    _event(
        8, "case.created", 61, intake_item_id="i2", status="awaiting_authorisation"
    ),  # resolved an hour on
    _event(9, "case.transitioned", 62, **{"from": "ready_to_schedule", "to": "scheduled"}),
    _event(10, "exception.opened", 70, queue="triage", reason_codes=["triage_overdue"]),
    _event(11, "exception.opened", 71, queue="intake", reason_codes=["x"]),
]
RECEIVED = {"i1": T0, "i2": T0 + dt.timedelta(minutes=1)}


def _counts(kpi: str) -> dict[str, float]:
    added = tally(SEQUENCE, RECEIVED)
    found: dict[str, float] = {}
    for (name, _, _, dimension), (count, _) in added.items():
        if name == kpi:
            found[dimension] = found.get(dimension, 0) + count
    return found


def test_each_kpi_on_a_constructed_sequence_matches_the_hand_count() -> None:
    assert _counts("intake_volume") == {"api": 1, "hl7": 2}
    assert _counts("intake_outcome") == {"case": 2, "exception": 1, "duplicate": 1, "quarantined": 1}
    assert _counts("intake_channel_outcome") == {
        "api/case": 1,
        "hl7/exception": 1,
        "hl7/duplicate": 1,
        "api/quarantined": 1,
        "unknown/case": 1,  # recorded without its channel
    }
    assert _counts("quarantine_reason") == {"validation_failed": 1}
    assert _counts("exception_reason") == {"missing_field:patient.birth_date": 1, "unknown_payer_code": 1}
    assert _counts("triage_overdue") == {"": 1}
    assert _counts("case_status") == {"ready_to_schedule": 1, "awaiting_authorisation": 1, "scheduled": 1}
    # receipt to case: 0 s for i1, 60 min for i2 (received at minute 1, case at minute 61)
    assert _counts("receipt_to_case_seconds") == {"": 2, "le:1": 1, "le:3600": 1}
    added = tally(SEQUENCE, RECEIVED)
    assert added[("receipt_to_case_seconds", T0.date(), "loc-n", "")][1] == 3600.0
    assert added[("quarantine_reason", T0.date(), "", "validation_failed")][0] == 1  # no location: ""


def test_a_duration_falls_in_the_first_bucket_that_holds_it() -> None:
    assert [bucket(s) for s in (0, 1, 1.5, 3600, 3601, 10**9)] == [
        "le:1",
        "le:1",
        "le:5",
        "le:3600",
        "le:14400",
        "le:inf",
    ]
    assert list(BUCKETS) == sorted(BUCKETS)


def test_every_kpi_has_a_unique_name_and_says_which_events_it_counts() -> None:
    assert len({k.name for k in KPIS}) == len(KPIS)
    assert all(k.events and k.definition and k.unit in ("count", "seconds") for k in KPIS)


@pytest.fixture
def traffic(client: TestClient, db: Database, settings: Settings) -> None:
    for _ in range(3):
        assert client.post("/api/v1/referrals", json=referral()).status_code == 201
    incomplete = client.post("/api/v1/referrals", json=referral(service_code="NO-SUCH-SCAN")).json()
    client.post("/api/v1/referrals", content=b'{"x', headers={"Content-Type": "application/json"})
    resolved = client.post(
        f"/api/v1/exceptions/{incomplete['exception_id']}/resolve",
        json={"fields": {"service_code": "XRAY-CHEST"}},
    )
    assert resolved.status_code == 200
    seal_all(db, settings.secret_key)


def _rollups(db: Database) -> list[tuple[object, ...]]:
    with db.sessions() as session:
        rows = session.scalars(select(KpiRollup)).all()
        return sorted((r.kpi, r.day, r.location_id, r.dimension, r.count, round(r.total, 6)) for r in rows)


@pytest.mark.usefixtures("traffic")
def test_the_incremental_roll_up_equals_a_rebuild_and_the_report_reads_it(db: Database) -> None:
    while roll_up(db, limit=2):  # small rounds: each event once, wherever a round ends
        pass
    assert roll_up(db) == 0  # nothing new: a further round changes nothing
    incremental = _rollups(db)
    counted = rebuild(db)
    assert counted > 0 and _rollups(db) == incremental
    today = dt.datetime.now(dt.UTC).date()
    data = report(db, None, today - dt.timedelta(days=6), today)
    kpis, rates = data["kpis"], data["rates"]
    assert kpis["intake_volume"]["by_dimension"] == {"api": 4}
    assert kpis["intake_outcome"]["by_dimension"] == {"case": 4, "exception": 1, "quarantined": 1}
    assert kpis["intake_channel_outcome"]["by_dimension"] == {
        "api/case": 4,
        "api/exception": 1,
        "api/quarantined": 1,
    }
    assert kpis["intake_volume"]["daily"][-1] == (today, 4)
    assert rates["exception_rate"]["value"] == pytest.approx(1 / 4)
    assert rates["quarantine_rate"]["value"] == pytest.approx(1 / 5)
    timing = kpis["receipt_to_case_seconds"]
    assert timing["p50"] == 1.0 and timing["p90"] is not None and timing["mean"] is not None
    north_only = report(db, frozenset({"no-such-location"}), today, today)
    assert north_only["kpis"]["intake_volume"]["total"] == 0


@pytest.mark.usefixtures("traffic")
def test_the_dashboard_shows_the_kpis_and_exports_them_audited(
    client: TestClient, db: Database, settings: Settings
) -> None:
    from careops.domain.models import BusinessEvent
    from careops.governance.users import create_user
    from tests.governance.test_console_login import PASSWORD, login

    rebuild(db)
    for name, roles in (("olga", ["operations_manager"]), ("sam", ["scheduler"])):
        create_user(db, settings, name, PASSWORD, roles, actor="test")
    client.headers.pop("Authorization")
    assert login(client, "olga") == 303
    page = client.get("/console/dashboard", params={"days": 30})
    assert page.status_code == 200
    assert '<p class="big" id="received">4</p>' in page.text
    assert '<p class="big" id="exception_rate">25.0%</p>' in page.text
    assert "<svg" in page.text and "Referrals received per day" in page.text
    assert client.get("/console/dashboard", params={"location": "atlantis"}).status_code == 404
    north = client.get("/console/dashboard", params={"location": "north"}).text
    assert '<p class="big" id="received">4</p>' in north  # the traffic was all for north
    exported = client.get("/console/dashboard.csv", params={"days": 7})
    assert exported.headers["content-type"].startswith("text/csv")
    assert "intake_volume,api,,4" in exported.text and "exception_rate,,,0.25" in exported.text
    with db.sessions() as session:
        assert session.scalars(select(BusinessEvent).where(BusinessEvent.type == "kpis.exported")).one()
    client.cookies.clear()
    assert login(client, "sam") == 303
    assert client.get("/console/dashboard").status_code == 403


def test_receipt_to_case_reads_the_receipt_from_the_event_itself() -> None:
    """``case.created`` names when its item arrived: no look-up of the log (which grows)."""
    created = _event(
        1,
        "case.created",
        90,
        intake_item_id="not-in-the-log",
        status="ready_to_schedule",
        received_at=(T0 + dt.timedelta(minutes=30)).isoformat(),
    )
    added = tally([created], {})
    assert added[("receipt_to_case_seconds", T0.date(), "loc-n", "")] == [1, 3600.0]
