"""Finding a patient: by MRN through its blind index (the MRN itself is stored encrypted), by the
start of a family or given name, by birth date; masked for the reader, limited to patients with a
case in the reader's locations, and audited as a PHI read when shown in clear."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, exists, func, select

from careops.db import Database
from careops.domain.encryption import keys_of
from careops.domain.models import Patient, ServiceCase
from careops.errors import ValidationFailed
from careops.governance.phi_access import record_phi_read
from careops.governance.principal import Principal
from careops.orchestration.cases import patient_view

MAX_RESULTS = 50


@dataclass(frozen=True)
class PatientQuery:
    mrn: str = ""
    family_name: str = ""
    given_name: str = ""
    birth_date: str = ""

    @property
    def empty(self) -> bool:
        return not any(
            part.strip() for part in (self.mrn, self.family_name, self.given_name, self.birth_date)
        )


def _prefix(column: Any, text: str) -> Any:
    """``column`` starts with ``text``, in any case: a range on ``lower(column)`` (which an index on
    it serves, on SQLite as on PostgreSQL) and the LIKE that keeps the answer exact."""
    start = text.strip().lower()
    lowered = func.lower(column)
    after = start[:-1] + chr(ord(start[-1]) + 1)
    return and_(lowered >= start, lowered < after, lowered.startswith(start, autoescape=True))


def search_patients(db: Database, query: PatientQuery, reader: Principal) -> list[dict[str, Any]]:
    """At most ``MAX_RESULTS`` patients matching every criterion given, by name."""
    if query.empty:
        raise ValidationFailed("give an MRN, a name or a birth date to search by")
    found = select(Patient)
    if query.mrn.strip():
        found = found.where(Patient.mrn_index == keys_of(db.engine.dialect).blind_index(query.mrn))
    if query.family_name.strip():
        found = found.where(_prefix(Patient.family_name, query.family_name))
    if query.given_name.strip():
        found = found.where(_prefix(Patient.given_name, query.given_name))
    if query.birth_date.strip():
        try:
            born = dt.date.fromisoformat(query.birth_date.strip())
        except ValueError as exc:
            message = "a date as YYYY-MM-DD"
            raise ValidationFailed(
                f"birth date: {message}", errors=[{"field": "birth_date", "message": message}]
            ) from exc
        found = found.where(Patient.birth_date == born)
    if reader.scope.ids is not None:
        in_scope = reader.scope.restrict(
            select(ServiceCase.id).where(ServiceCase.patient_id == Patient.id), ServiceCase.location_id
        )
        found = found.where(exists(in_scope))
    with db.sessions() as session:
        rows = session.scalars(
            found.order_by(Patient.family_name, Patient.given_name, Patient.id).limit(MAX_RESULTS)
        )
        views = []
        for patient in rows:
            cases = session.scalars(
                reader.scope.restrict(
                    select(ServiceCase).where(ServiceCase.patient_id == patient.id), ServiceCase.location_id
                ).order_by(ServiceCase.created_at.desc())
            ).all()
            view = patient_view(patient, reader.masking)
            view["cases"] = [
                {"id": c.id, "status": c.status, "created_at": c.created_at.isoformat()} for c in cases
            ]
            views.append(view)
    record_phi_read(db, reader, "patient", views)
    return views
