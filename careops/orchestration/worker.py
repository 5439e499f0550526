"""The worker: DBOS Transact plus the outbox dispatcher, in one asyncio loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable

from dbos import DBOS

from careops.db import Database
from careops.orchestration import workflows
from careops.orchestration.dispatcher import Dispatcher
from careops.settings import Settings

APPLICATION_VERSION = "careops-workflows-1"  # bump when a workflow's steps change shape
log = logging.getLogger("careops.worker")


def launch_dbos(settings: Settings, db: Database) -> None:
    """Configure and launch DBOS; pending workflows of this executor resume now."""
    workflows.context.db = db
    DBOS(
        config={
            "name": "careops",
            "system_database_url": settings.resolved_dbos_url,
            "executor_id": settings.executor_id,
            "application_version": APPLICATION_VERSION,
            "log_level": "ERROR",
            "notification_listener_polling_interval_sec": 0.2,
        }
    )
    DBOS.launch()


async def run_worker(
    settings: Settings, stop: asyncio.Event, should_stop: Callable[[], bool] = lambda: False
) -> None:
    """Run until ``stop`` is set (or ``should_stop`` says so, e.g. when the parent process died)."""
    db = Database(settings.database_url)
    launch_dbos(settings, db)
    dispatcher = Dispatcher(db, settings)
    task = asyncio.create_task(dispatcher.run(stop))
    log.info("worker.started executor=%s pid=%s", settings.executor_id, os.getpid())
    try:
        while not stop.is_set():
            if should_stop():
                stop.set()
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.5)
        await task
    finally:
        DBOS.destroy(workflow_completion_timeout_sec=0)
        db.dispose()
