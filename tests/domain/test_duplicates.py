"""Duplicate detection: same patient, service and referrer within the window."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from careops.db import Database
from careops.domain.duplicates import find_duplicate_case
from careops.domain.models import Location, Patient, Referrer, Service, ServiceCase, utcnow


def _setup(db: Database) -> tuple[str, str, str, str]:
    with db.transaction() as session:
        location = session.scalars(select(Location).where(Location.slug == "north")).one()
        service = session.scalars(select(Service).where(Service.code == "XRAY-CHEST")).one()
        referrer = session.scalars(select(Referrer).where(Referrer.code == "GP-001")).one()
        patient = Patient(organisation_id=location.organisation_id, given_name="A", family_name="B")
        session.add(patient)
        session.flush()
        case = ServiceCase(
            organisation_id=location.organisation_id,
            location_id=location.id,
            patient_id=patient.id,
            service_id=service.id,
            referrer_id=referrer.id,
            status="ready_to_schedule",
            created_at=utcnow() - dt.timedelta(hours=10),
        )
        session.add(case)
        session.flush()
        return case.id, patient.id, service.id, referrer.id


def test_found_inside_the_window_only(db: Database) -> None:
    case_id, patient_id, service_id, referrer_id = _setup(db)
    now = utcnow()
    with db.sessions() as session:
        args = {"patient_id": patient_id, "service_id": service_id, "referrer_id": referrer_id, "now": now}
        inside = find_duplicate_case(session.connection(), **args, window=dt.timedelta(hours=24))
        outside = find_duplicate_case(session.connection(), **args, window=dt.timedelta(hours=5))
        other_referrer = find_duplicate_case(
            session.connection(), **{**args, "referrer_id": None}, window=dt.timedelta(hours=24)
        )
        disabled = find_duplicate_case(session.connection(), **args, window=dt.timedelta(0))
    assert inside is not None and inside[0] == case_id
    assert outside is None and other_referrer is None and disabled is None


def test_cancelled_cases_are_not_duplicates(db: Database) -> None:
    case_id, patient_id, service_id, referrer_id = _setup(db)
    with db.transaction() as session:
        case = session.get(ServiceCase, case_id)
        assert case is not None
        case.status = "cancelled"
    with db.sessions() as session:
        found = find_duplicate_case(
            session.connection(),
            patient_id=patient_id,
            service_id=service_id,
            referrer_id=referrer_id,
            now=utcnow(),
            window=dt.timedelta(hours=24),
        )
    assert found is None
