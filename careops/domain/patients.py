"""Matching a referral's patient to the register, or registering a new one."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from careops.domain.models import Patient
from careops.domain.referrals import NormalisedReferral


def find_or_register(session: Session, organisation_id: str, referral: NormalisedReferral) -> Patient:
    """Match on MRN when the referral has one, else on family name, given name and birth date."""
    query = select(Patient).where(Patient.organisation_id == organisation_id)
    if referral.mrn:
        query = query.where(Patient.mrn == referral.mrn)
    else:
        query = query.where(
            Patient.mrn.is_(None),
            Patient.family_name == referral.family_name,
            Patient.given_name == referral.given_name,
            Patient.birth_date == referral.birth_date,
        )
    patient = session.scalars(query.limit(1)).first()
    if patient is None:
        patient = Patient(organisation_id=organisation_id, mrn=referral.mrn)
        session.add(patient)
    # Demographics follow the latest referral; the MRN is the identity.
    patient.given_name = referral.given_name or patient.given_name
    patient.family_name = referral.family_name or patient.family_name
    patient.birth_date = referral.birth_date or patient.birth_date
    patient.sex = referral.sex or patient.sex
    patient.phone = referral.phone or patient.phone
    patient.email = referral.email or patient.email
    return patient
