"""The outbox dispatcher: claims committed follow-ups in batches and starts their durable workflows.

Claims are short transactions (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so several workers share
the outbox); the DBOS calls happen outside them; a claim left by a crashed worker is taken over
after ``CLAIM_TIMEOUT``. Every follow-up is idempotent (workflow id = event id, message
idempotency key = outbox id), so a re-run after a crash changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from dbos import DBOS, SetWorkflowID
from sqlalchemy import or_, select, update

from careops.db import Database
from careops.domain.events import FollowUp
from careops.domain.models import BusinessEvent, OutboxMessage, utcnow
from careops.orchestration.workflows import TRIAGE_TOPIC, await_triage, workflow_id_for_event
from careops.settings import Settings

CLAIM_TIMEOUT = dt.timedelta(seconds=60)
MAX_ATTEMPTS = 20


@dataclass(frozen=True)
class ClaimedFollowUp:
    outbox_id: int
    destination: str
    event_id: int
    case_id: str | None
    payload: dict[str, Any]


def claim(db: Database, worker: str, batch_size: int) -> list[ClaimedFollowUp]:
    now = utcnow()
    with db.transaction() as session:
        rows = session.execute(
            select(OutboxMessage, BusinessEvent)
            .join(BusinessEvent, BusinessEvent.id == OutboxMessage.event_id)
            .where(
                or_(
                    OutboxMessage.status == "pending",
                    (OutboxMessage.status == "claimed") & (OutboxMessage.claimed_at < now - CLAIM_TIMEOUT),
                )
            )
            .order_by(OutboxMessage.id)
            .limit(batch_size)
            .with_for_update(skip_locked=True, of=OutboxMessage)
        ).all()
        claimed = []
        for message, event in rows:
            message.status, message.claimed_by, message.claimed_at = "claimed", worker, now
            claimed.append(
                ClaimedFollowUp(message.id, message.destination, event.id, event.case_id, event.payload)
            )
        return claimed


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
        self.handlers: dict[str, Callable[[ClaimedFollowUp], Awaitable[None]]] = {
            FollowUp.AWAIT_TRIAGE: self._start_triage_wait,
            FollowUp.DELIVER_TRIAGE: self._deliver_triage,
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
        results = await asyncio.gather(*(self._handle(c) for c in claimed))
        await asyncio.to_thread(
            settle, self.db, dict(zip((c.outbox_id for c in claimed), results, strict=True))
        )
        return len(claimed)

    async def _handle(self, follow_up: ClaimedFollowUp) -> str | None:
        handler = self.handlers.get(follow_up.destination)
        if handler is None:
            return f"unknown destination {follow_up.destination}"
        try:
            await handler(follow_up)
        except Exception as exc:
            return type(exc).__name__
        return None

    async def _start_triage_wait(self, follow_up: ClaimedFollowUp) -> None:
        if follow_up.case_id is None:
            raise ValueError("a triage wait needs a case")
        with SetWorkflowID(workflow_id_for_event(follow_up.event_id)):
            await DBOS.start_workflow_async(
                await_triage, follow_up.case_id, self.settings.triage_timeout_seconds
            )

    async def _deliver_triage(self, follow_up: ClaimedFollowUp) -> None:
        await DBOS.send_async(
            workflow_id_for_event(int(follow_up.payload["workflow_event_id"])),
            {"urgency": follow_up.payload["urgency"]},
            topic=TRIAGE_TOPIC,
            idempotency_key=f"outbox:{follow_up.outbox_id}",
        )
