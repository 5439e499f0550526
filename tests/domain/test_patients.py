"""Patients without an MRN: matched by names and birth date, in the intake's pipelined writer."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select

from careops.db import Database
from careops.domain.models import Organisation, Patient
from careops.domain.patients import find_or_register
from careops.domain.referrals import NormalisedReferral


def _referral(**values: Any) -> NormalisedReferral:
    fields: dict[str, Any] = {
        "location": "north", "service_code": "XRAY-CHEST", "priority": "routine", "mrn": None,
        "given_name": "Ada", "family_name": "Lovelace", "birth_date": dt.date(1815, 12, 10), "sex": None,
        "phone": None, "email": None, "referrer_code": None, "payer_code": None, "member_id": None,
        "external_id": None,
    }  # fmt: skip
    return NormalisedReferral(**(fields | values))


def _register(db: Database, organisation: str, referral: NormalisedReferral) -> tuple[str, bool]:
    with db.pipelined_writer() as connection:
        return find_or_register(connection, organisation, referral)


def test_a_patient_without_mrn_is_found_again_by_names_and_birth_date(db: Database) -> None:
    with db.sessions() as session:
        organisation = session.scalars(select(Organisation.id)).first()
    assert organisation is not None
    first, registered = _register(db, organisation, _referral())
    again, registered_again = _register(db, organisation, _referral(phone="+442079460000"))
    other, other_registered = _register(db, organisation, _referral(birth_date=dt.date(1815, 12, 11)))
    unborn, unborn_registered = _register(db, organisation, _referral(birth_date=None))
    unborn_again, _ = _register(db, organisation, _referral(birth_date=None, email="ada@example.org"))
    assert registered and not registered_again and again == first
    assert other_registered and other != first
    assert unborn_registered and unborn not in (first, other) and unborn_again == unborn
    with db.sessions() as session:
        updated = session.get(Patient, first)
        no_birth_date = session.get(Patient, unborn)
        assert updated is not None and no_birth_date is not None
        assert updated.phone == "+442079460000" and updated.given_name == "Ada"  # a known value is kept
        assert no_birth_date.email == "ada@example.org" and no_birth_date.birth_date is None
