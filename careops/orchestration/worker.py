"""The worker: DBOS Transact, the outbox dispatcher, the audit sealer and the KPI roll-up, in one
asyncio loop."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Protocol

from dbos import DBOS

from careops.db import Database
from careops.governance.audit import SEAL_BATCH, Sealer
from careops.governance.keys import load_field_keys
from careops.observability import tracing
from careops.observability.logs import get_logger
from careops.observability.rollup import BATCH, roll_up
from careops.orchestration import workflows
from careops.orchestration.authorisations import expire_authorisations
from careops.orchestration.credentials import warn_expiring_credentials
from careops.orchestration.dispatcher import Dispatcher
from careops.settings import Settings

APPLICATION_VERSION = "careops-workflows-2"  # bump when a workflow's steps change shape
log = get_logger("careops.worker")


def launch_dbos(settings: Settings, db: Database) -> None:
    """Configure and launch DBOS; pending workflows of this executor resume now."""
    workflows.context.db = db
    tracing.configure_tracing(settings.otlp_traces_endpoint)
    DBOS(
        config={
            "name": "careops",
            "system_database_url": settings.resolved_dbos_url,
            "executor_id": settings.executor_id,
            "application_version": APPLICATION_VERSION,
            "log_level": "ERROR",
            # Workflow and step spans, on the trace the dispatcher hands over (when traced).
            "enable_otlp": tracing.tracing_enabled(),
        }
    )
    DBOS.launch()


async def repeat(
    work: Callable[[], int], batch: int, interval: float, stop: asyncio.Event, failed: str
) -> None:
    """Run ``work`` (which does up to ``batch`` things and says how many) in a thread until
    ``stop``: again at once after a full batch, else after ``interval``. A failed round is logged
    as ``failed`` and tried again (each round is one transaction: it changed nothing)."""
    while not stop.is_set():
        try:
            done = await asyncio.to_thread(work)
        except Exception:
            log.exception(failed)
            done = 0
        if done < batch:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)


class Listening(Protocol):
    """A network listener started on the worker's loop (an ``asyncio.Server`` or the like)."""

    def close(self) -> None: ...


Listener = Callable[[Database], Awaitable[list[Listening]]]
# A loop of a layer above (the rule engine) that runs beside the dispatcher.
Job = Callable[[Database, asyncio.Event], Coroutine[Any, Any, None]]


async def run_worker(
    settings: Settings,
    should_stop: Callable[[], bool] = lambda: False,
    listeners: Sequence[Listener] = (),
    jobs: Sequence[Job] = (),
) -> None:
    """Run until ``should_stop()`` says so (checked twice a second), or until cancelled (Ctrl-C).

    ``listeners`` start network servers on the worker's loop (the MLLP listener); they are closed
    on the way out. ``jobs`` run beside the dispatcher until the stop (the rule engine).
    """
    db = Database(settings.database_url)
    load_field_keys(db, settings)
    launch_dbos(settings, db)
    servers = [server for listen in listeners for server in await listen(db)]
    stop = asyncio.Event()
    sealer = Sealer(db, settings.secret_key, settings.audit_checkpoint_seconds)
    interval = settings.audit_seal_interval_seconds  # the roll-up counts what the sealer sealed
    tasks = [
        asyncio.create_task(Dispatcher(db, settings).run(stop)),
        asyncio.create_task(repeat(sealer.seal_once, SEAL_BATCH, interval, stop, "audit.seal_failed")),
        asyncio.create_task(repeat(lambda: roll_up(db), BATCH, interval, stop, "kpi.roll_up_failed")),
        asyncio.create_task(
            repeat(lambda: expire_authorisations(db), 500, 3600, stop, "authorisation.expire_failed")
        ),
        asyncio.create_task(
            repeat(
                lambda: warn_expiring_credentials(db, settings.credential_warning_days),
                500,
                3600,
                stop,
                "staff.credential_warning_failed",
            )
        ),
    ]
    tasks += [asyncio.create_task(job(db, stop)) for job in jobs]
    log.info("worker.started", executor=settings.executor_id, pid=os.getpid())
    try:
        while not should_stop():
            await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(*tasks)
    finally:
        for server in servers:
            server.close()
        DBOS.destroy(workflow_completion_timeout_sec=0)
        db.dispose()
        tracing.flush_spans()
