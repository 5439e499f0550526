"""The escalation sweep in the worker: overdue steps every ``automation_interval_seconds`` (at
once again after a full batch), on the same clock as the rule engine (its offset, for tests)."""

from __future__ import annotations

import asyncio
import datetime as dt

from careops.approvals.escalation import sweep
from careops.db import Database
from careops.domain.models import utcnow
from careops.orchestration.worker import Job, repeat
from careops.settings import Settings

SWEEP_BATCH = 100


def approval_jobs(settings: Settings) -> list[Job]:
    offset = dt.timedelta(seconds=settings.automation_clock_offset_seconds)

    async def run(db: Database, stop: asyncio.Event) -> None:
        await repeat(
            lambda: sweep(db, SWEEP_BATCH, utcnow() + offset),
            SWEEP_BATCH,
            settings.automation_interval_seconds,
            stop,
            "approvals.sweep_failed",
        )

    return [run]
