"""What happens to the demo's cases after intake, as a diagnostic network would do it, compressed
into seconds: a scheduler books ready cases (the console's *Book the first free slot*), some are
booked by an external scheduler instead (HL7 SIU^S12), appointments are completed, missed or
cancelled, and the results come back by HL7 ORU^R01 (now and then one for an order nobody knows,
which waits in the results queue), some with the charges (DFT^P03) that bring a missing diagnosis
code. The billing check, invoice requests and queues then have real work to show. Home-care
cases get service plans, and nurses now and then report a conflict that a supervisor reassigns
(``home_care``).

Messages go through the real HL7 channel (as the MLLP and HTTP listeners call it); bookings and
appointment endings through the same service functions as the API and the console.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from collections.abc import Callable

from sqlalchemy import select

from careops.db import Database
from careops.demo.home_care import HomeCareTraffic
from careops.domain.models import Appointment, Location, Patient, Service, ServiceCase
from careops.errors import CareopsError
from careops.governance.scoping import EVERYWHERE
from careops.integrations.inbound.hl7_channel import Hl7Channel
from careops.orchestration.appointments import book, end_appointment
from careops.orchestration.scheduling import first_free

SENDER = "MSH|^~\\&|RIS|NORTHFIELD|CAREOPS|{facility}|20261207120000||{kind}|{control}|P|2.5.1"
ACTOR = "demo-scheduler"
PER_STEP = 5  # cases moved on per kind of work and step


class Downstream:
    """One step at a time (``step``), each moving a few cases on; ``done`` counts what it did."""

    def __init__(self, db: Database, channel: Hl7Channel, seed: int | None = None) -> None:
        self.db = db
        self.channel = channel
        self.random = random.Random(seed)
        self.done: Counter[str] = Counter()
        self.home_care = HomeCareTraffic(db, self.random)

    def step(self) -> None:
        for move in (self._book, self._end, self._report, lambda: self.home_care.step(self.done)):
            try:
                move()
            except CareopsError:
                self.done["refused"] += 1  # a slot taken meanwhile, a case moved by someone else

    def _cases(
        self, status: str, limit: int, undiagnosed: bool = False
    ) -> list[tuple[str, str, str | None, str, str]]:
        """Oldest cases in ``status`` (``undiagnosed``: only those without a diagnosis code): id,
        MRN, order number, service code, location slug."""
        with self.db.sessions() as session:
            cases = session.scalars(
                select(ServiceCase).where(ServiceCase.status == status).order_by(ServiceCase.id).limit(limit)
            ).all()
            found = []
            for case in cases:
                if undiagnosed and case.diagnosis_codes:
                    continue
                patient = session.get(Patient, case.patient_id)
                service = session.get(Service, case.service_id)
                place = session.get(Location, case.location_id)
                if patient is not None and service is not None and place is not None and patient.mrn:
                    found.append((case.id, patient.mrn, case.order_number, service.code, place.slug))
            return found

    def _book(self) -> None:
        for case_id, mrn, _, service, place in self._cases("ready_to_schedule", PER_STEP):
            if self.random.random() < 0.1:
                self._send("SIU^S12", place, self._siu(mrn, service))
                self.done["booked elsewhere"] += 1
                continue
            slot = first_free(self.db, case_id, EVERYWHERE)
            if slot is not None:
                book(self.db, case_id, slot.starts_at, actor=ACTOR, scope=EVERYWHERE)
                self.done["booked"] += 1

    def _end(self) -> None:
        with self.db.sessions() as session:
            confirmed = session.scalars(
                select(Appointment.id)
                .where(
                    Appointment.status == "confirmed",
                    Appointment.source == "careops",
                    Appointment.plan_id.is_(None),  # home-care visits stay for the staffing work
                )
                .order_by(Appointment.starts_at)
                .limit(PER_STEP)
            ).all()
        for appointment_id in confirmed:
            roll = self.random.random()
            ending = "no_show" if roll < 0.05 else "cancel" if roll < 0.1 else "complete"
            reason = "" if ending == "complete" else "demo"
            end_appointment(self.db, appointment_id, ending, actor=ACTOR, scope=EVERYWHERE, reason=reason)
            self.done[ending] += 1

    def _report(self) -> None:
        for _, mrn, order, service, place in self._cases("scheduled", PER_STEP):
            if order is not None:
                self._send("ORU^R01", place, self._oru(mrn, order, service))
                self.done["results"] += 1
        if self.random.random() < 0.05:
            stranger, unknown = f"MRN-{uuid.uuid4().hex[:8]}", f"ORD-{uuid.uuid4().hex[:8]}"
            self._send("ORU^R01", "north", self._oru(stranger, unknown, "XRAY-CHEST"))
            self.done["unmatched results"] += 1
        for _, mrn, order, service, place in self._cases("completed", PER_STEP, undiagnosed=True)[:1]:
            charge = f"FT1|1|||20261207|20261207|CG|{service}|||1|||||||||M25.561^Knee pain^I10"
            self._send("DFT^P03", place, "\r".join([_pid(mrn), f"ORC|RE|{order or ''}", charge]))
            self.done["charges"] += 1

    def _siu(self, mrn: str, service: str) -> str:
        ids = f"SCH|P-{uuid.uuid4().hex[:6]}|F-{uuid.uuid4().hex[:6]}"
        return "\r".join([ids, _pid(mrn), "RGS|1", f"AIS|1||{service}|20261214090000+0000"])

    def _oru(self, mrn: str, order: str, service: str) -> str:
        status = "P" if self.random.random() < 0.1 else "F"
        obr = f"OBR|1|{order}||{service}|||20261207100000" + "|" * 18 + status
        finding = "OBX|1|TX|IMP^Impression||No acute finding.||||||F"
        return "\r".join([_pid(mrn), f"ORC|RE|{order}", obr, finding])

    def _send(self, kind: str, place: str, body: str) -> None:
        header = SENDER.format(facility=place, kind=kind, control=uuid.uuid4().hex[:16])
        self.channel.handle(f"{header}\r{body}".encode(), "demo")


def _pid(mrn: str) -> str:
    return f"PID|1||{mrn}^^^NF^MR||DEMO^PATIENT"


def run(downstream: Downstream, finished: Callable[[], bool], wait: Callable[[float], object]) -> None:
    """Step until ``finished``, half a second apart (``wait`` sleeps, or returns early when stopped)."""
    while not finished():
        downstream.step()
        wait(0.5)
