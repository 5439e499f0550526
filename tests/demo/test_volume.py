"""`careops seed --volume` on SQLite and PostgreSQL: the cases, patients, intake and exception items
and events it promises, sealed into a chain that verifies and counted into the KPIs, and readable
by the console like any other case."""

from __future__ import annotations

import datetime as dt
from collections import Counter

from sqlalchemy import func, select

from careops.db import Database
from careops.domain.models import (
    ID_PATTERN,
    BusinessEvent,
    ExceptionItem,
    IntakeItem,
    Patient,
    ServiceCase,
    is_id,
)
from careops.governance.audit import verify
from careops.governance.keys import load_field_keys
from careops.governance.principal import Principal
from careops.observability.rollup import report
from careops.orchestration.patient_search import PatientQuery, search_patients
from careops.settings import Settings
from tests.test_cli import careops

CASES = 400


def test_seed_volume_writes_sealed_counted_data_the_console_can_read(
    database_url: str, settings: Settings
) -> None:
    assert careops(database_url, "migrate").returncode == 0
    seeded = careops(database_url, "seed", "--demo", "--volume", str(CASES))
    assert seeded.returncode == 0, seeded.stderr
    assert f"{CASES} cases" in seeded.stderr.replace(",", "")
    db = Database(database_url)
    load_field_keys(db, settings)
    with db.sessions() as session:
        items = Counter(session.scalars(select(IntakeItem.status)))
        cases = session.scalars(select(ServiceCase)).all()
        events = session.scalar(select(func.count()).select_from(BusinessEvent)) or 0
        unsealed = session.scalar(select(func.count()).where(BusinessEvent.seq.is_(None))) or 0
        open_items = session.scalar(select(func.count()).select_from(ExceptionItem)) or 0
        patient = session.scalars(select(Patient)).first()
        assert patient is not None and patient.mrn is not None and patient.mrn.startswith("VOL-")
        family = patient.family_name
    assert sum(items.values()) == CASES and items["accepted"] == len(cases)
    assert items["incomplete"] == open_items > 0 and items["quarantined"] > 0
    assert CASES * 9 <= events <= CASES * 10 and unsealed == 0
    assert all(is_id(case.id) for case in cases), ID_PATTERN
    assert (
        len(cases) / 2 <= len({case.patient_id for case in cases}) < len(cases) * 0.6
    )  # two cases a patient
    assert verify(db, settings.secret_key).ok
    today = dt.datetime.now(dt.UTC).date()
    kpis = report(db, None, today - dt.timedelta(days=365), today)["kpis"]
    assert kpis["intake_volume"]["total"] == CASES - items["quarantined"]
    assert sum(kpis["intake_outcome"]["by_dimension"].values()) == CASES
    reader = Principal("t", "t", frozenset({"cases:read"}))
    found = search_patients(db, PatientQuery(family_name=family[:4]), reader)
    assert found and all(p["cases"] for p in found)
    db.dispose()
