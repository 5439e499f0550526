"""Matching a referral's patient to the register, or registering a new one."""

from __future__ import annotations

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection

from careops.domain.models import Base, Patient, new_id, utcnow
from careops.domain.referrals import NormalisedReferral

_patients = Base.metadata.tables[Patient.__tablename__]


def find_or_register(connection: Connection, organisation_id: str, referral: NormalisedReferral) -> str:
    """The patient's id. Match on MRN when the referral has one, else on names and birth date."""
    query = select(_patients.c.id).where(_patients.c.organisation_id == organisation_id)
    if referral.mrn:
        query = query.where(_patients.c.mrn == referral.mrn)
    else:
        query = query.where(
            _patients.c.mrn.is_(None),
            _patients.c.family_name == referral.family_name,
            _patients.c.given_name == referral.given_name,
            _patients.c.birth_date == referral.birth_date,
        )
    demographics = {
        name: value
        for name, value in (
            ("given_name", referral.given_name),
            ("family_name", referral.family_name),
            ("birth_date", referral.birth_date),
            ("sex", referral.sex),
            ("phone", referral.phone),
            ("email", referral.email),
        )
        if value is not None
    }
    patient_id = connection.execute(query.limit(1)).scalar()
    if patient_id is None:
        patient_id = new_id()
        connection.execute(
            insert(_patients),
            {
                "id": patient_id,
                "organisation_id": organisation_id,
                "mrn": referral.mrn,
                "created_at": utcnow(),
                **demographics,
            },
        )
    else:
        # Demographics follow the latest referral; the MRN is the identity.
        connection.execute(update(_patients).where(_patients.c.id == patient_id), demographics)
    return str(patient_id)
