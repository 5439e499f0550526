"""The worker: DBOS Transact plus the outbox dispatcher, in one asyncio loop."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

from dbos import DBOS

from careops.db import Database
from careops.orchestration import workflows
from careops.orchestration.dispatcher import Dispatcher
from careops.settings import Settings

APPLICATION_VERSION = "careops-workflows-2"  # bump when a workflow's steps change shape
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
        }
    )
    DBOS.launch()


async def run_worker(settings: Settings, should_stop: Callable[[], bool] = lambda: False) -> None:
    """Run until ``should_stop()`` says so (checked twice a second), or until cancelled (Ctrl-C)."""
    db = Database(settings.database_url)
    launch_dbos(settings, db)
    stop = asyncio.Event()
    task = asyncio.create_task(Dispatcher(db, settings).run(stop))
    log.info("worker.started executor=%s pid=%s", settings.executor_id, os.getpid())
    try:
        while not should_stop():
            await asyncio.sleep(0.5)
        stop.set()
        await task
    finally:
        DBOS.destroy(workflow_completion_timeout_sec=0)
        db.dispose()
