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

from dbos import DBOS, SetWorkflowID
from sqlalchemy import or_, select, update

from careops.db import Database
from careops.domain.events import FollowUp
from careops.domain.models import BusinessEvent, OutboxMessage, utcnow
from careops.orchestration.workflows import await_triage
from careops.settings import Settings

CLAIM_TIMEOUT = dt.timedelta(seconds=60)
MAX_ATTEMPTS = 20


@dataclass(frozen=True)
class ClaimedFollowUp:
    outbox_id: int
    destination: str
    workflow_id: str


def claim(db: Database, worker: str, batch_size: int) -> list[ClaimedFollowUp]:
    """Claim up to ``batch_size`` due rows and fix the workflow each goes to."""
    now = utcnow()
    with db.transaction() as session:
        messages = session.scalars(
            select(OutboxMessage)
            .where(
                or_(
                    OutboxMessage.status == "pending",
                    (OutboxMessage.status == "claimed") & (OutboxMessage.claimed_at < now - CLAIM_TIMEOUT),
                )
            )
            .order_by(OutboxMessage.id)
            .limit(batch_size)
            .with_for_update(skip_locked=True)
        ).all()
        new_batches: dict[str, str] = {}
        claimed = []
        for message in messages:
            # Rows new to a workflow join one named after their first event.
            if message.workflow_id is None:
                message.workflow_id = new_batches.setdefault(
                    message.destination, f"{message.destination}:{message.event_id}"
                )
            message.status, message.claimed_by, message.claimed_at = "claimed", worker, now
            claimed.append(ClaimedFollowUp(message.id, message.destination, message.workflow_id))
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
    now = utcnow()
    with db.transaction() as session:
        for message in session.scalars(select(OutboxMessage).where(OutboxMessage.id.in_(list(outcomes)))):
            error = outcomes[message.id]
            message.attempts += 1
            if error is None:
                message.status, message.dispatched_at, message.last_error = "dispatched", now, None
            else:
                message.status = "dead" if message.attempts >= MAX_ATTEMPTS else "pending"
                message.last_error = error[:500]


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
            if await self.dispatch_once() == 0:
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
        destination, workflow_id = key
        handler = self.handlers.get(destination)
        if handler is None:
            return f"unknown destination {destination}"
        try:
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
