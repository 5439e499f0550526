"""Matching a referral's patient to the register, or registering a new one."""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from careops.db import run
from careops.domain.encryption import keys_of
from careops.domain.models import Base, Patient, new_id, utcnow
from careops.domain.referrals import NormalisedReferral

_patients = Base.metadata.tables[Patient.__tablename__]
DEMOGRAPHICS = ("given_name", "family_name", "birth_date", "sex", "phone", "email")


def _upsert_by_mrn(dialect_insert: Any) -> Any:
    """Upsert on (organisation_id, MRN blind index): a new value wins, a missing one keeps the old."""
    statement = dialect_insert(_patients)
    return statement.on_conflict_do_update(
        index_elements=["organisation_id", "mrn_index"],
        set_={name: func.coalesce(statement.excluded[name], _patients.c[name]) for name in DEMOGRAPHICS},
    ).returning(_patients.c.id)


_UPSERTS = {"postgresql": _upsert_by_mrn(postgresql.insert), "sqlite": _upsert_by_mrn(sqlite.insert)}


# A patient without an MRN by names and birth date (an unknown one matching an unknown one), read
# by a raw cursor (``run``): the intake's pipelined writer reads no SQLAlchemy result.
_BY_NAME = (
    select(_patients.c.id)
    .where(
        _patients.c.organisation_id == bindparam("organisation_id"),
        _patients.c.mrn.is_(None),
        _patients.c.family_name == bindparam("family_name"),
        _patients.c.given_name == bindparam("given_name"),
        _patients.c.birth_date.is_not_distinct_from(bindparam("birth_date")),
    )
    .limit(1)
)
_REGISTER = insert(_patients)
_UPDATE = update(_patients).where(_patients.c.id == bindparam("patient_id"))


def find_or_register(
    connection: Connection, organisation_id: str, referral: NormalisedReferral
) -> tuple[str, bool]:
    """The patient's id and whether it was registered just now.

    With an MRN, one upsert on the unique (organisation, MRN) index, safe under concurrency;
    demographics follow the latest referral. Without one, a match on names and birth date.
    """
    demographics: dict[str, Any] = {name: getattr(referral, name) for name in DEMOGRAPHICS}
    now = utcnow()
    new_patient = {"id": new_id(), "organisation_id": organisation_id, "created_at": now, **demographics}
    if referral.mrn:
        (patient_id,) = run(
            connection,
            _UPSERTS[connection.dialect.name],
            {
                **new_patient,
                "mrn": referral.mrn,
                "mrn_index": keys_of(connection.dialect).blind_index(referral.mrn),
            },
        ).fetchone()
        # The id is never updated, so it is the new one only for the row inserted here.
        return str(patient_id), patient_id == new_patient["id"]
    found = run(
        connection,
        _BY_NAME,
        {
            "organisation_id": organisation_id,
            "family_name": referral.family_name,
            "given_name": referral.given_name,
            "birth_date": referral.birth_date,
        },
    ).fetchone()
    if found is None:
        run(connection, _REGISTER, new_patient)
        return str(new_patient["id"]), True
    known = {name: value for name, value in demographics.items() if value is not None}
    run(connection, _UPDATE, {**known, "patient_id": found[0]})
    return str(found[0]), False
