"""A year of a busy network's work in the demo organisation, for measuring the console at volume
(``careops seed --volume CASES``; ``bench/console.py``).

Each case comes with its intake item and ten business events (received, validated, created,
triaged, the transitions of its life so far, then PHI reads); 2% of intake items wait in the
exception queue instead and 1% sit in quarantine (with one or two events each). Patients (one per
two cases, names from a small list with a number) have their MRN encrypted and blind-indexed as
intake would. Rows go in with multi-row INSERTs, a chunk a transaction; the events are then sealed
into the audit chain and counted into the KPIs, as the worker would have done. Each run adds as
many again.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, text

from careops.db import Database
from careops.domain.cases import CaseStatus
from careops.domain.encryption import keys_of
from careops.domain.models import (
    Base,
    BusinessEvent,
    ExceptionItem,
    IntakeItem,
    Location,
    Organisation,
    Patient,
    Payer,
    Referrer,
    Service,
    ServiceCase,
)

EVENTS_PER_CASE = 10
CHUNK = 5_000
CHANNELS = ("api", "hl7", "hl7", "fhir", "email", "form")
FAMILY = (
    "Smith",
    "Jones",
    "Taylor",
    "Brown",
    "Williams",
    "Wilson",
    "Johnson",
    "Davies",
    "Patel",
    "Khan",
    "Evans",
    "Thomas",
    "Roberts",
    "Walker",
    "Wright",
    "Okafor",
    "Nowak",
    "Garcia",
    "Murphy",
    "Chen",
)
GIVEN = (
    "Olivia",
    "Amelia",
    "Isla",
    "Ava",
    "Mia",
    "Noah",
    "Oliver",
    "George",
    "Arthur",
    "Leo",
    "Aisha",
    "Mohammed",
    "Zofia",
    "Sean",
    "Mei",
    "Kwame",
    "Ines",
    "Ravi",
    "Freya",
    "Tom",
)
# The life of a case so far: the statuses it went through after ready_to_schedule, and how often.
LIVES: tuple[tuple[tuple[str, ...], float], ...] = (
    ((), 0.15),
    (("scheduled",), 0.15),
    (("scheduled", "completed"), 0.10),
    (("scheduled", "completed", "billing_ready"), 0.10),
    (("scheduled", "completed", "billing_ready", "invoiced", "closed"), 0.45),
    (("cancelled",), 0.05),
)
_tables = {
    model: Base.metadata.tables[model.__tablename__]
    for model in (Patient, ServiceCase, IntakeItem, BusinessEvent, ExceptionItem)
}


@dataclass(frozen=True)
class Demo:
    organisation_id: str
    locations: list[str]
    services: list[tuple[str, str]]  # id, code
    referrers: list[str]
    payers: list[str]


def _demo(db: Database) -> Demo:
    with db.sessions() as session:
        org = session.scalars(select(Organisation.id).where(Organisation.slug == "demo")).one()
        return Demo(
            org,
            list(session.scalars(select(Location.id).order_by(Location.slug))),
            [(s.id, s.code) for s in session.scalars(select(Service).order_by(Service.code))],
            list(session.scalars(select(Referrer.id).order_by(Referrer.code))),
            list(session.scalars(select(Payer.id).order_by(Payer.code))),
        )


KINDS = {"patient": 1, "case": 2, "item": 3, "exception": 4}


def _id(kind: str, n: int, at: dt.datetime) -> str:
    """An id shaped as ``new_id``'s (milliseconds first, so ids sort by time), unique by kind and n."""
    return f"{int(at.timestamp() * 1000):012x}{KINDS[kind]:02x}{n:018x}"


class _Chunk:
    """The rows of cases ``start`` to ``end`` (exclusive)."""

    def __init__(self, demo: Demo, start: int, end: int, now: dt.datetime, blind_index: Callable[[str], str]):
        self.rng = random.Random(start)
        self.demo, self.now, self.blind_index = demo, now, blind_index
        self.patients: list[dict[str, Any]] = []
        self.cases: list[dict[str, Any]] = []
        self.items: list[dict[str, Any]] = []
        self.exceptions: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self._patient_id = ""
        self._first = 0  # where the current case's events start
        for n in range(start, end):
            self._case(n)

    def _patient(self, n: int) -> str:
        """Cases 2k and 2k+1 share a patient, registered with the first of them that lives."""
        if self._patient_id != _id("patient", n // 2, self.now):
            self._patient_id = _id("patient", n // 2, self.now)
            mrn = f"VOL-{n // 2:08d}"
            self.patients.append(
                {
                    "id": self._patient_id,
                    "organisation_id": self.demo.organisation_id,
                    "mrn": mrn,
                    "mrn_index": self.blind_index(mrn),
                    "given_name": self.rng.choice(GIVEN),
                    "family_name": f"{self.rng.choice(FAMILY)}{n // 2 % 997}",
                    "birth_date": dt.date(1930, 1, 1) + dt.timedelta(days=self.rng.randrange(33_000)),
                    "sex": self.rng.choice(("F", "M")),
                    "phone": None,
                    "email": None,
                    "created_at": self.now,
                }
            )
        return self._patient_id

    def _event(
        self,
        kind: str,
        at: dt.datetime,
        subject: tuple[str, str],
        case: dict[str, Any] | None,
        **payload: Any,
    ) -> None:
        self.events.append(
            {
                "type": kind,
                "subject_type": subject[0],
                "subject_id": subject[1],
                "case_id": case["id"] if case else None,
                "location_id": case["location_id"] if case else None,
                "actor": "seed:volume",
                "correlation_id": None,
                "payload": payload,
                "occurred_at": at,
            }
        )

    def _case(self, n: int) -> None:
        rng = self.rng
        self._first = len(self.events)
        received = self.now - dt.timedelta(seconds=rng.randrange(365 * 86400))
        channel = rng.choice(CHANNELS)
        item: dict[str, Any] = {
            "id": _id("item", n, received),
            "channel": channel,
            "sender": None,
            "content_type": "application/json",
            "raw_payload": '{"volume": true}',
            "raw_bytes": None,
            "payload_sha256": f"{n:064x}",
            "normalised": None,
            "location_id": rng.choice(self.demo.locations),
            "case_id": None,
            "received_at": received,
            "principal_id": None,
            "idempotency_key": None,
            "response_status": None,
            "response_body": None,
        }
        self.items.append(item)
        fate = rng.random()
        if fate < 0.01:  # refused: kept in quarantine
            item |= {"status": "quarantined", "reasons": ["validation_failed"], "location_id": None}
            self._event(
                "referral.quarantined",
                received,
                ("intake_item", item["id"]),
                None,
                channel=channel,
                reason_codes=["validation_failed"],
            )
            return
        self._event("referral.received", received, ("intake_item", item["id"]), None, channel=channel)
        if fate < 0.03:  # incomplete: waits in the intake queue
            item |= {"status": "incomplete", "reasons": ["missing_field:patient.birth_date"]}
            self.exceptions.append(
                {
                    "id": _id("exception", n, received),
                    "queue": "intake",
                    "status": "open",
                    "reason_codes": ["missing_field:patient.birth_date"],
                    "intake_item_id": item["id"],
                    "case_id": None,
                    "location_id": item["location_id"],
                    "assignee": None,
                    "due_at": None,
                    "resolution": None,
                    "resolved_at": None,
                    "dedupe_key": None,
                    "created_at": received,
                }
            )
            self._event(
                "referral.incomplete",
                received,
                ("intake_item", item["id"]),
                None,
                exception_id=self.exceptions[-1]["id"],
                reason_codes=["missing_field:patient.birth_date"],
                channel=channel,
            )
            return
        self._lived_case(n, item, received, channel)

    def _lived_case(self, n: int, item: dict[str, Any], received: dt.datetime, channel: str) -> None:
        rng = self.rng
        life = rng.choices([life for life, _ in LIVES], [weight for _, weight in LIVES])[0]
        service_id, service_code = rng.choice(self.demo.services)
        case = {
            "id": _id("case", n, received),
            "organisation_id": self.demo.organisation_id,
            "location_id": item["location_id"],
            "patient_id": self._patient(n),
            "service_id": service_id,
            "referrer_id": rng.choice(self.demo.referrers),
            "payer_id": rng.choice(self.demo.payers),
            "member_id": None,
            "priority": "urgent" if rng.random() < 0.1 else "routine",
            "status": life[-1] if life else str(CaseStatus.READY_TO_SCHEDULE),
            "held_from": None,
            "created_at": received,
            "updated_at": received,
        }
        self.cases.append(case)
        item |= {"status": "accepted", "reasons": [], "case_id": case["id"]}
        subject = ("case", case["id"])
        self._event("referral.validated", received, ("intake_item", item["id"]), case)
        self._event(
            "case.created",
            received,
            subject,
            case,
            intake_item_id=item["id"],
            service=service_code,
            status=str(CaseStatus.READY_TO_SCHEDULE),
            channel=channel,
            received_at=received.isoformat(),
        )
        at = received + dt.timedelta(minutes=rng.randrange(5, 240))
        self._event("case.triaged", at, subject, case, urgency=case["priority"])
        before = str(CaseStatus.READY_TO_SCHEDULE)
        for status in life:
            at = min(self.now, at + dt.timedelta(hours=rng.randrange(1, 24 * 14)))
            self._event("case.transitioned", at, subject, case, **{"from": before, "to": status})
            before = status
        case["updated_at"] = at
        while len(self.events) - self._first < EVENTS_PER_CASE:
            self._event("phi.read", at, ("patient", case["patient_id"]), case, fields=["given_name"])


def seed_volume(db: Database, cases: int, progress: Callable[[int], None] = lambda _: None) -> int:
    """Write ``cases`` cases (and their patients, intake items, exception items and events) into
    the demo organisation; calls ``progress`` with the number of cases written after each chunk.
    Returns the number of events written (unsealed)."""
    demo = _demo(db)
    blind_index = keys_of(db.engine.dialect).blind_index
    now = dt.datetime.now(dt.UTC)
    written = 0
    for start, end in _chunks(cases):
        chunk = _Chunk(demo, start, end, now, blind_index)
        with db.writer() as connection:
            for model, rows in (
                (Patient, chunk.patients),
                (ServiceCase, chunk.cases),
                (IntakeItem, chunk.items),
                (ExceptionItem, chunk.exceptions),
                (BusinessEvent, sorted(chunk.events, key=lambda e: e["occurred_at"])),
            ):
                if rows:
                    connection.execute(insert(_tables[model]), rows)
        written += len(chunk.events)
        progress(end - start)
    if db.engine.dialect.name == "postgresql":  # as a bulk load should: plans fit the new sizes
        with db.engine.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE"))
    return written


def _chunks(total: int) -> Iterator[tuple[int, int]]:
    for start in range(0, total, CHUNK):
        yield start, min(total, start + CHUNK)
