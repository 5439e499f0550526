"""Durable follow-up workflows (DBOS). Workflow bodies wait and decide; steps do the I/O.

One workflow covers a batch of events claimed together from the outbox: a DBOS workflow costs
about two dozen system-database statements, so one per ``case.created`` could not keep up with
intake. Its id is fixed on the outbox rows at their first claim, so a second start after a crash
is a no-op.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from dbos import DBOS
from sqlalchemy import select

from careops.db import Database
from careops.domain.cases import CaseStatus
from careops.domain.events import Event, EventType, record_events
from careops.domain.models import BusinessEvent, ExceptionItem, ServiceCase, new_id, utcnow

TRIAGE_QUEUE = "triage"
TRIAGE_OVERDUE = "triage_overdue"
# Cases whose deadlines fall within this many seconds of the earliest pending one are checked
# together after one durable sleep.
DEADLINE_GRANULARITY_SECONDS = 1.0
MIN_SLEEP_SECONDS = 0.001
_FINISHED = (str(CaseStatus.CANCELLED), str(CaseStatus.CLOSED))


@dataclass
class WorkflowContext:
    """What steps need from the running worker; set once by the worker before DBOS launches."""

    db: Database | None = None


context = WorkflowContext()


@DBOS.workflow(name="await_triage")
async def await_triage(waits: list[tuple[str, float]]) -> int:
    """Wait until each case's triage deadline (epoch seconds); escalate those still untriaged.

    Deadlines come from the input, so the sequence of sleeps and steps is the same when DBOS
    replays the workflow after a restart; each sleep resumes at its recorded wake-up time.
    """
    pending = sorted(waits, key=lambda wait: wait[1])
    escalated = 0
    while pending:
        horizon = pending[0][1] + DEADLINE_GRANULARITY_SECONDS
        due = [case_id for case_id, deadline in pending if deadline <= horizon]
        pending = pending[len(due) :]
        # Always a positive duration: DBOS records no step for a sleep of zero, and a replay that
        # then did sleep (or the reverse) would shift every later step.
        await DBOS.sleep_async(max(MIN_SLEEP_SECONDS, horizon - time.time()))
        escalated += len(await open_triage_overdue(due))
    return escalated


@DBOS.step(name="open_triage_overdue")
async def open_triage_overdue(case_ids: list[str]) -> list[str]:
    return await asyncio.to_thread(_open_triage_overdue, case_ids)


def _open_triage_overdue(case_ids: list[str]) -> list[str]:
    """One 'triage overdue' item per case not triaged, not finished and not already escalated.

    Idempotent by dedupe key: a step re-run after a crash finds the items it already made.
    """
    assert context.db is not None, "the worker sets the database before launching DBOS"
    with context.db.transaction() as session:
        triaged = set(
            session.scalars(
                select(BusinessEvent.case_id).where(
                    BusinessEvent.case_id.in_(case_ids), BusinessEvent.type == str(EventType.CASE_TRIAGED)
                )
            )
        )
        escalated = set(
            session.scalars(
                select(ExceptionItem.case_id).where(
                    ExceptionItem.dedupe_key.in_([f"{TRIAGE_OVERDUE}:{c}" for c in case_ids])
                )
            )
        )
        cases = session.scalars(
            select(ServiceCase).where(
                ServiceCase.id.in_(set(case_ids) - triaged - escalated), ServiceCase.status.not_in(_FINISHED)
            )
        ).all()
        events = []
        for case in cases:
            item = ExceptionItem(
                id=new_id(),
                queue=TRIAGE_QUEUE,
                reason_codes=[TRIAGE_OVERDUE],
                case_id=case.id,
                location_id=case.location_id,
                dedupe_key=f"{TRIAGE_OVERDUE}:{case.id}",
                created_at=utcnow(),
            )
            session.add(item)
            events.append(
                Event.about_exception(
                    EventType.EXCEPTION_OPENED,
                    item,
                    actor="workflow:await_triage",
                    payload={"queue": TRIAGE_QUEUE, "reason_codes": [TRIAGE_OVERDUE]},
                )
            )
        session.flush()
        record_events(session, *events)
        return [case.id for case in cases]
