"""Durable follow-up workflows (DBOS). Workflow bodies wait and decide; steps do the I/O.

Workflow ids derive from the business event that caused them (``event:<id>``), so a second
start of the same follow-up is a no-op.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from dbos import DBOS
from sqlalchemy import select

from careops.db import Database
from careops.domain.events import Event, EventType, record_events
from careops.domain.models import ExceptionItem, ServiceCase, new_id, utcnow

TRIAGE_TOPIC = "triage"
TRIAGE_QUEUE = "triage"
TRIAGE_OVERDUE = "triage_overdue"


@dataclass
class WorkflowContext:
    """What steps need from the running worker; set once by the worker before DBOS launches."""

    db: Database | None = None


context = WorkflowContext()


def workflow_id_for_event(event_id: int) -> str:
    return f"event:{event_id}"


@DBOS.workflow(name="await_triage")
async def await_triage(case_id: str, timeout_seconds: float) -> str:
    """Wait for a triage decision; on timeout put the case in the triage queue (once)."""
    decision = await DBOS.recv_async(TRIAGE_TOPIC, timeout_seconds=timeout_seconds)
    if decision is not None:
        return "triaged"
    await open_triage_overdue(case_id)
    return "overdue"


@DBOS.step(name="open_triage_overdue")
async def open_triage_overdue(case_id: str) -> str | None:
    return await asyncio.to_thread(_open_triage_overdue, case_id)


def _open_triage_overdue(case_id: str) -> str | None:
    """Idempotent by dedupe key: a step re-run after a crash finds the item it already made."""
    assert context.db is not None, "the worker sets the database before launching DBOS"
    dedupe_key = f"{TRIAGE_OVERDUE}:{case_id}"
    with context.db.transaction() as session:
        existing = session.scalars(
            select(ExceptionItem.id).where(ExceptionItem.dedupe_key == dedupe_key)
        ).first()
        if existing is not None:
            return existing
        case = session.get(ServiceCase, case_id)
        if case is None:
            return None
        item = ExceptionItem(
            id=new_id(),
            queue=TRIAGE_QUEUE,
            reason_codes=[TRIAGE_OVERDUE],
            case_id=case_id,
            location_id=case.location_id,
            dedupe_key=dedupe_key,
            created_at=utcnow(),
        )
        session.add(item)
        session.flush()
        record_events(
            session,
            Event(
                EventType.EXCEPTION_OPENED,
                subject_type="exception",
                subject_id=item.id,
                case_id=case_id,
                location_id=case.location_id,
                actor="workflow:await_triage",
                payload={"queue": TRIAGE_QUEUE, "reason_codes": [TRIAGE_OVERDUE]},
            ),
        )
        return item.id
