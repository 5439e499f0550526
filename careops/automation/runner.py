"""The rule engine's loops in the worker: new events and due timers every
``automation_interval_seconds`` (at once again after a full batch), scheduled actions every few
seconds; and beside them the approvals' escalation sweep (approvals.runner) and the deliveries to
outbound connectors (integrations.outbound.runner). Each round is one
transaction; a failed round is logged and tried again."""

from __future__ import annotations

import asyncio
import datetime as dt

from careops.approvals.runner import approval_jobs
from careops.automation.engine import Engine
from careops.db import Database
from careops.domain.models import utcnow
from careops.integrations.outbound.runner import delivery_jobs
from careops.orchestration.worker import Job, repeat
from careops.settings import Settings

EVENT_BATCH = 500
TIMER_BATCH = 200
SCHEDULE_SECONDS = 5.0


def engine_for(db: Database, settings: Settings) -> Engine:
    offset = dt.timedelta(seconds=settings.automation_clock_offset_seconds)
    return Engine(
        db,
        max_depth=settings.automation_max_depth,
        clock=lambda: utcnow() + offset,
        worker=settings.executor_id,
    )


def automation_jobs(settings: Settings) -> list[Job]:
    interval = settings.automation_interval_seconds

    async def run(db: Database, stop: asyncio.Event) -> None:
        engine = engine_for(db, settings)
        await asyncio.gather(
            repeat(
                lambda: engine.process_events(EVENT_BATCH),
                EVENT_BATCH,
                interval,
                stop,
                "automation.events_failed",
            ),
            repeat(
                lambda: engine.sweep_timers(TIMER_BATCH),
                TIMER_BATCH,
                interval,
                stop,
                "automation.timers_failed",
            ),
            repeat(engine.run_schedules, 1_000_000, SCHEDULE_SECONDS, stop, "automation.schedules_failed"),
        )

    return [run, *approval_jobs(settings), *delivery_jobs(settings)]
