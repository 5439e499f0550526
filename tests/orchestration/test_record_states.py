"""Every allowed and every forbidden step of the appointment and invoice state machines, on SQLite
and PostgreSQL: an allowed step moves the record (and writes its event), a forbidden one is a 409
that changes nothing."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from careops.db import Database
from careops.domain.models import Appointment, BusinessEvent, InvoiceRequest, new_id
from careops.errors import Conflict
from careops.governance.scoping import EVERYWHERE
from careops.orchestration.appointments import OPEN, confirm, end_appointment
from careops.orchestration.billing import INVOICE_STEPS, advance_invoice
from tests.orchestration.test_scheduling import _cases

APPOINTMENT_STATUSES = ("proposed", "confirmed", "cancelled", "no_show", "completed")
# Which steps each appointment status allows (the documented diagram in docs/operations.md).
APPOINTMENT_STEPS = {
    "confirm": ("proposed",),
    "cancel": OPEN,
    "no_show": ("confirmed",),
    "complete": ("confirmed",),
}
INVOICE_STATUSES = ("requested", "approved", "sent", "paid", "rejected")


def _events(db: Database) -> int:
    with db.sessions() as session:
        return session.scalar(select(func.count()).select_from(BusinessEvent)) or 0


def test_each_appointment_step_from_each_status(client: TestClient, db: Database) -> None:
    [case_id] = _cases(client, 1)
    for status, step in itertools.product(APPOINTMENT_STATUSES, sorted(APPOINTMENT_STEPS)):
        _appointment_step(client, db, case_id, status, step)


def _appointment_step(client: TestClient, db: Database, case_id: str, status: str, step: str) -> None:
    case = client.get(f"/api/v1/cases/{case_id}").json()
    start = dt.datetime(2030, 1, 7, 9, tzinfo=dt.UTC)
    with db.transaction() as session:
        appointment = Appointment(
            id=new_id(), case_id=case_id, location_id=case["location_id"], service_id=case["service_id"],
            status=status, starts_at=start, ends_at=start + dt.timedelta(minutes=10), resource_codes=[],
        )  # fmt: skip
        session.add(appointment)
    before = _events(db)
    if status in APPOINTMENT_STEPS[step]:
        if step == "confirm":
            moved = confirm(db, appointment.id, actor="test", scope=EVERYWHERE)
        else:
            moved = end_appointment(db, appointment.id, step, actor="test", scope=EVERYWHERE)
        assert moved["status"] != status and _events(db) > before
    else:
        with pytest.raises(Conflict):
            if step == "confirm":
                confirm(db, appointment.id, actor="test", scope=EVERYWHERE)
            else:
                end_appointment(db, appointment.id, step, actor="test", scope=EVERYWHERE)
        with db.sessions() as session:
            assert session.get(Appointment, appointment.id).status == status  # type: ignore[union-attr]
        assert _events(db) == before


def test_each_invoice_step_from_each_status(client: TestClient, db: Database) -> None:
    [case_id] = _cases(client, 1)
    for status, step in itertools.product(INVOICE_STATUSES, sorted(INVOICE_STEPS)):
        _invoice_step(client, db, case_id, status, step)


def _invoice_step(client: TestClient, db: Database, case_id: str, status: str, step: str) -> None:
    case = client.get(f"/api/v1/cases/{case_id}").json()
    with db.transaction() as session:
        invoice = InvoiceRequest(
            id=new_id(), case_id=case_id, location_id=case["location_id"], status=status, lines=[], total=0.0
        )
        session.add(invoice)
    allowed_from, target, _, action = INVOICE_STEPS[step]
    before = _events(db)
    if status in allowed_from and action is None:
        assert advance_invoice(db, invoice.id, step, actor="test", scope=EVERYWHERE)["status"] == target
        assert _events(db) == before + 1
    else:
        # Forbidden, or allowed but the case is not where the step takes it from (a case ready to
        # schedule is not invoiced or closed by an invoice): nothing changes either way.
        with pytest.raises(Conflict):
            advance_invoice(db, invoice.id, step, actor="test", scope=EVERYWHERE)
        with db.sessions() as session:
            assert session.get(InvoiceRequest, invoice.id).status == status  # type: ignore[union-attr]
        assert _events(db) == before
