"""What a rule's condition and arguments read: the event, its subject record, the case, the
location and the parameters; reference data by look-up; the patient, masked as for the role the
workflow runs as, for messages. Records are read once per batch (``FactCache``); PHI columns are
never among a record's facts."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import inspect, select
from sqlalchemy.orm import Session

from careops.automation.conditions import Facts
from careops.automation.templates import Template
from careops.domain.events import EventType
from careops.domain.models import (
    Appointment,
    Base,
    BusinessEvent,
    ExceptionItem,
    InvoiceRequest,
    Location,
    Patient,
    Payer,
    PriorAuthorisation,
    Referrer,
    Result,
    Service,
    ServiceCase,
)
from careops.domain.staffing import StaffConflict
from careops.domain.stock import Item, Replenishment
from careops.governance.masking import MaskingPolicy
from careops.governance.permissions import DEFAULT_MASKING, SHIPPED_ROLES
from careops.orchestration.cases import patient_view

SUBJECTS: dict[str, type[Base]] = {
    "case": ServiceCase,
    "appointment": Appointment,
    "authorisation": PriorAuthorisation,
    "exception": ExceptionItem,
    "invoice": InvoiceRequest,
    "result": Result,
    "replenishment": Replenishment,
    "staff_conflict": StaffConflict,
    "item": Item,
}
_LOOKUPS: dict[str, type[Base]] = {
    "location": Location,
    "service": Service,
    "payer": Payer,
    "referrer": Referrer,
    "item": Item,
    "exception": ExceptionItem,
}


def record_facts(record: Any) -> dict[str, Any]:
    """A record's columns as facts, PHI columns left out."""
    mapper = inspect(type(record))
    return {a.key: getattr(record, a.key) for a in mapper.column_attrs if "phi" not in a.columns[0].info}


def event_facts(event: BusinessEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "type": event.type,
        "subject_type": event.subject_type,
        "subject_id": event.subject_id,
        "case_id": event.case_id,
        "location_id": event.location_id,
        "actor": event.actor,
        "payload": event.payload or {},
        "occurred_at": event.occurred_at,
    }


class FactCache:
    """Records read for a batch of events, by type and id, so each is read once."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.records: dict[tuple[str, str], Any] = {}
        self.places: dict[str, dict[str, Any]] = {}
        self.triaged: dict[str, bool] = {}  # per case id, for cases read by prefetch

    def prefetch(self, wanted: list[tuple[str | None, str | None]]) -> None:
        """Read the subjects of a batch of events in one query per kind (absent ones as None)."""
        by_kind: dict[str, set[str]] = {}
        for subject_type, subject_id in wanted:
            if subject_type in SUBJECTS and subject_id and (subject_type, subject_id) not in self.records:
                by_kind.setdefault(subject_type, set()).add(subject_id)
        with self.session.no_autoflush:
            for kind, ids in by_kind.items():
                model = SUBJECTS[kind]
                found = {r.id: r for r in self.session.scalars(select(model).where(model.id.in_(ids)))}  # type: ignore[attr-defined]
                self.records.update({(kind, i): found.get(i) for i in ids})
            cases = by_kind.get("case", set())
            if cases:
                triaged = set(self.session.scalars(self._triaged(cases)))
                self.triaged.update({c: c in triaged for c in cases})

    @staticmethod
    def _triaged(case_ids: set[str]) -> Any:
        return select(BusinessEvent.case_id).where(
            BusinessEvent.case_id.in_(case_ids), BusinessEvent.type == str(EventType.CASE_TRIAGED)
        )

    def record(self, subject_type: str | None, subject_id: str | None) -> Any:
        model = SUBJECTS.get(subject_type or "")
        if model is None or subject_id is None:
            return None
        key = (subject_type or "", subject_id)
        if key not in self.records:
            with self.session.no_autoflush:
                self.records[key] = self.session.get(model, subject_id)
        return self.records[key]

    def location(self, location_id: str | None) -> dict[str, Any]:
        if location_id is None:
            return {}
        if location_id not in self.places:
            with self.session.no_autoflush:
                found = self.session.get(Location, location_id)
            self.places[location_id] = record_facts(found) if found is not None else {}
        return self.places[location_id]

    def case_facts(self, case: ServiceCase | None) -> dict[str, Any] | None:
        if case is None:
            return None
        facts = record_facts(case)
        if case.id not in self.triaged:
            self.triaged[case.id] = self.session.scalar(self._triaged({case.id}).limit(1)) is not None
        facts["triaged"] = self.triaged[case.id]
        return facts

    def lookup(self, table: str, key: Any, field: str) -> Any:
        model = _LOOKUPS.get(table)
        if model is None or key is None:
            return None
        found = self.session.get(model, key)
        if found is None and hasattr(model, "code"):
            found = self.session.scalars(select(model).where(model.code == key)).first()
        if found is None and hasattr(model, "slug"):
            found = self.session.scalars(select(model).where(model.slug == key)).first()
        return record_facts(found).get(field) if found is not None else None

    def facts(
        self,
        template: Template,
        now: dt.datetime,
        event: dict[str, Any] | None,
        subject: tuple[str | None, str | None],
        location_id: str | None,
        case_id: str | None,
        with_patient: bool = False,
    ) -> tuple[Facts, ServiceCase | None]:
        record = self.record(*subject)
        case = (
            record if isinstance(record, ServiceCase) else self.record("case", case_id) if case_id else None
        )
        values: dict[str, Any] = {
            "event": event or {},
            "record": record_facts(record) if record is not None else {},
            "case": self.case_facts(case) or {},
            "params": template.parameters,
            "workflow": {"name": template.name, "version": template.version},
        }
        values["location"] = self.location(location_id)
        if with_patient and case is not None:
            spec = SHIPPED_ROLES.get(template.run_as)
            masking = MaskingPolicy(dict(spec.masking if spec else DEFAULT_MASKING))
            patient = self.session.get(Patient, case.patient_id)
            values["patient"] = patient_view(patient, masking) if patient is not None else {}
        return Facts(values, now, self.lookup), case
