"""The outbox dispatcher: claims committed follow-ups in batches and starts their durable workflows.

Claims are short transactions (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so several workers share
the outbox); the DBOS calls happen outside them; a claim left by a crashed worker is taken over
after ``CLAIM_TIMEOUT``. The rows of one destination claimed together go to one workflow whose
id is written on the rows in the claiming transaction, so a re-claim after a crash starts the
same workflow again, which DBOS treats as a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from dbos import DBOS, PropagateOtelContext, SetWorkflowID
from opentelemetry.trace import StatusCode
from sqlalchemy import case, func, or_, select, update

from careops.db import Database
from careops.domain.events import FollowUp
from careops.domain.models import Base, BusinessEvent, OutboxMessage, utcnow
from careops.observability import tracing
from careops.orchestration.workflows import await_triage
from careops.settings import Settings

_outbox = Base.metadata.tables[OutboxMessage.__tablename__]
CLAIM_TIMEOUT = dt.timedelta(seconds=60)
MAX_ATTEMPTS = 20


@dataclass(frozen=True)
class ClaimedFollowUp:
    outbox_id: int
    destination: str
    workflow_id: str
    trace_parent: str | None = None


def claim(db: Database, worker: str, batch_size: int) -> list[ClaimedFollowUp]:
    """Claim up to ``batch_size`` due rows and fix the workflow each goes to.

    Rows new to a workflow join one per destination, named after the first of their events.
    """
    now = utcnow()
    with db.writer() as connection:
        rows = connection.execute(
            select(
                _outbox.c.id,
                _outbox.c.destination,
                _outbox.c.event_id,
                _outbox.c.workflow_id,
                _outbox.c.trace_parent,
            )
            .where(
                or_(
                    _outbox.c.status == "pending",
                    (_outbox.c.status == "claimed") & (_outbox.c.claimed_at < now - CLAIM_TIMEOUT),
                )
            )
            .order_by(_outbox.c.id)
            .limit(batch_size)
            .with_for_update(skip_locked=True)
        ).all()
        new_workflows: dict[str, str] = {}
        claimed = [
            ClaimedFollowUp(
                row.id,
                row.destination,
                row.workflow_id
                or new_workflows.setdefault(row.destination, f"{row.destination}:{row.event_id}"),
                row.trace_parent,
            )
            for row in rows
        ]
        claimed_now = {"status": "claimed", "claimed_by": worker, "claimed_at": now}
        for workflow_id in {c.workflow_id for c in claimed}:
            ids = [c.outbox_id for c in claimed if c.workflow_id == workflow_id]
            connection.execute(
                update(_outbox).where(_outbox.c.id.in_(ids)).values(workflow_id=workflow_id, **claimed_now)
            )
        return claimed


def workflow_events(db: Database, workflow_id: str) -> list[tuple[str | None, dt.datetime]]:
    """(case id, occurred at) of every event handed to a workflow, claimed now or not.

    A workflow starts with all its members even when a re-claim after a crash took only some of
    them, because a later start of the same id does nothing.
    """
    with db.sessions() as session:
        rows = session.execute(
            select(BusinessEvent.case_id, BusinessEvent.occurred_at)
            .join(OutboxMessage, OutboxMessage.event_id == BusinessEvent.id)
            .where(OutboxMessage.workflow_id == workflow_id)
            .order_by(BusinessEvent.id)
        ).all()
    return [(case_id, occurred_at) for case_id, occurred_at in rows]


def release_claims(db: Database, worker: str) -> int:
    """On start, take back what this worker had claimed before it stopped (its claims are dead)."""
    with db.transaction() as session:
        result = session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.status == "claimed", OutboxMessage.claimed_by == worker)
            .values(status="pending", claimed_by=None, claimed_at=None)
        )
        return int(getattr(result, "rowcount", 0))


def settle(db: Database, outcomes: dict[int, str | None]) -> None:
    """Mark follow-ups done (None) or failed (an error name; retried until MAX_ATTEMPTS)."""
    done = [outbox_id for outbox_id, error in outcomes.items() if error is None]
    with db.writer() as connection:
        if done:
            connection.execute(
                update(_outbox)
                .where(_outbox.c.id.in_(done))
                .values(
                    status="dispatched",
                    dispatched_at=utcnow(),
                    last_error=None,
                    attempts=_outbox.c.attempts + 1,
                )
            )
        for outbox_id, error in outcomes.items():
            if error is not None:
                connection.execute(
                    update(_outbox)
                    .where(_outbox.c.id == outbox_id)
                    .values(
                        attempts=_outbox.c.attempts + 1,
                        last_error=error[:500],
                        status=case((_outbox.c.attempts + 1 >= MAX_ATTEMPTS, "dead"), else_="pending"),
                    )
                )


@dataclass(frozen=True)
class OutboxState:
    """Follow-ups of one destination not yet done: technical trouble when they pile up or die."""

    destination: str
    backlog: int  # pending or claimed
    retrying: int  # pending again after a failed start
    dead: int  # given up after MAX_ATTEMPTS: dead letters, for an engineer to replay
    oldest_age_seconds: float  # of the oldest waiting row


def outbox_summary(db: Database) -> list[OutboxState]:
    """One grouped query on the outbox's status index (done rows are not read)."""
    waiting = ("pending", "claimed")
    with db.sessions() as session:
        rows = session.execute(
            select(
                _outbox.c.destination,
                func.count().filter(_outbox.c.status.in_(waiting)),
                func.count().filter((_outbox.c.status == "pending") & (_outbox.c.attempts > 0)),
                func.count().filter(_outbox.c.status == "dead"),
                func.min(_outbox.c.created_at).filter(_outbox.c.status.in_(waiting)),
            )
            .where(_outbox.c.status.in_([*waiting, "dead"]))
            .group_by(_outbox.c.destination)
        ).all()
    now = utcnow()
    return [
        OutboxState(
            destination,
            backlog,
            retrying,
            dead,
            (now - oldest).total_seconds() if oldest is not None else 0.0,
        )
        for destination, backlog, retrying, dead, oldest in rows
    ]


class Dispatcher:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self.handlers: dict[str, Callable[[str], Awaitable[None]]] = {
            FollowUp.AWAIT_TRIAGE: self._start_triage_wait,
        }

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.to_thread(release_claims, self.db, self.settings.executor_id)
        while not stop.is_set():
            # Only a full batch (a backlog) goes round again at once: each batch costs a workflow
            # start, so under steady load one batch per interval keeps DBOS's share small.
            if await self.dispatch_once() < self.settings.dispatch_batch_size:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.settings.dispatch_interval_seconds)

    async def dispatch_once(self) -> int:
        claimed = await asyncio.to_thread(
            claim, self.db, self.settings.executor_id, self.settings.dispatch_batch_size
        )
        if not claimed:
            return 0
        batches: dict[tuple[str, str], list[ClaimedFollowUp]] = defaultdict(list)
        for follow_up in claimed:
            batches[(follow_up.destination, follow_up.workflow_id)].append(follow_up)
        results = await asyncio.gather(*(self._handle(key, batch) for key, batch in batches.items()))
        outcomes = {
            f.outbox_id: error for batch, error in zip(batches.values(), results, strict=True) for f in batch
        }
        await asyncio.to_thread(settle, self.db, outcomes)
        return len(claimed)

    async def _handle(self, key: tuple[str, str], batch: list[ClaimedFollowUp]) -> str | None:
        """Start one batch's workflow, in a span on the trace of the batch's first event (linked to
        the others'); the workflow's own spans (DBOS's) join that trace, also after a restart."""
        destination, workflow_id = key
        with tracing.span(
            "outbox.dispatch",
            parent=tracing.parent_from(batch[0].trace_parent),
            links=[f.trace_parent for f in batch[1:]],
            destination=destination,
            workflow_id=workflow_id,
            follow_ups=len(batch),
        ) as current:
            error = await self._start(destination, workflow_id)
            if error is not None:
                current.set_status(StatusCode.ERROR, error)
            return error

    async def _start(self, destination: str, workflow_id: str) -> str | None:
        handler = self.handlers.get(destination)
        if handler is None:
            return f"unknown destination {destination}"
        try:
            with PropagateOtelContext():
                await handler(workflow_id)
        except Exception as exc:
            return type(exc).__name__
        return None

    async def _start_triage_wait(self, workflow_id: str) -> None:
        timeout = self.settings.triage_timeout_seconds
        members = await asyncio.to_thread(workflow_events, self.db, workflow_id)
        waits = [(case_id, occurred.timestamp() + timeout) for case_id, occurred in members if case_id]
        with SetWorkflowID(workflow_id):
            await DBOS.start_workflow_async(await_triage, waits)
