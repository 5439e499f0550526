"""/metrics: Prometheus exposition of the process's (or, under several workers, all workers')
metrics, and the queues as they stand.

Technical failures and process failures are apart: the channel series (``careops_channel_*``:
received, accepted, rejected, quarantined, latency) count what arrived and what could not be
taken, and the outbox gauges (``careops_outbox_*``: backlog, retrying, dead letters, the oldest
waiting row's age, per destination) the follow-ups the worker could not start; the queue gauges
(``careops_queue_*``: open items, the oldest one's age, items past their service level, per
queue) are the work waiting for a human; the automation gauges (``careops_automation_runs_24h``
and ``careops_schedule_ticks_24h`` per outcome, ``careops_automation_pending_timers``) show rules
and scheduled actions failing. Gauges are read from the database at each scrape
(``queue_summary``, ``outbox_summary``: grouped queries on indexes). Labels carry channel, queue
and destination names only, never PHI or free text. Needs a token with ``metrics:read``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from careops.api.deps import DbDep, require
from careops.automation.service import run_counts
from careops.db import Database, in_thread
from careops.governance.principal import Principal
from careops.governance.scoping import EVERYWHERE
from careops.orchestration.dispatcher import outbox_summary
from careops.orchestration.exception_queue import queue_summary

router = APIRouter(tags=["metrics"])


class QueueCollector(Collector):
    """The exception queues of every location, as gauges."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[GaugeMetricFamily]:
        summary = queue_summary(self.db, EVERYWHERE)
        families = {
            "open": GaugeMetricFamily("careops_queue_open_items", "Open exception items", labels=["queue"]),
            "oldest_age_seconds": GaugeMetricFamily(
                "careops_queue_oldest_age_seconds", "Age of the oldest open item", labels=["queue"]
            ),
            "past_sla": GaugeMetricFamily(
                "careops_queue_past_sla_items", "Open items past the queue's service level", labels=["queue"]
            ),
        }
        for queue in summary:
            for key, family in families.items():
                family.add_metric([queue["queue"]], queue[key])
        yield from families.values()


class OutboxCollector(Collector):
    """Follow-ups waiting, retrying and dead per destination (technical failures), as gauges."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families = {
            "backlog": GaugeMetricFamily(
                "careops_outbox_backlog", "Follow-ups not yet started", labels=["destination"]
            ),
            "retrying": GaugeMetricFamily(
                "careops_outbox_retrying",
                "Follow-ups waiting again after a failed start",
                labels=["destination"],
            ),
            "dead": GaugeMetricFamily(
                "careops_outbox_dead_letters",
                "Follow-ups given up after repeated failures",
                labels=["destination"],
            ),
            "oldest_age_seconds": GaugeMetricFamily(
                "careops_outbox_oldest_age_seconds",
                "Age of the oldest waiting follow-up",
                labels=["destination"],
            ),
        }
        for state in outbox_summary(self.db):
            for key, family in families.items():
                family.add_metric([state.destination], getattr(state, key))
        yield from families.values()


class AutomationCollector(Collector):
    """Rule runs and scheduled-action ticks of the last day per outcome, and the pending timers."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[GaugeMetricFamily]:
        counts = run_counts(self.db)
        runs = GaugeMetricFamily(
            "careops_automation_runs_24h", "Rule runs in the last day", labels=["status"]
        )
        for status, count in sorted(counts["runs"].items()):
            runs.add_metric([status], count)
        ticks = GaugeMetricFamily(
            "careops_schedule_ticks_24h", "Scheduled-action ticks in the last day", labels=["status"]
        )
        for status, count in sorted(counts["ticks"].items()):
            ticks.add_metric([status], count)
        yield runs
        yield ticks
        yield GaugeMetricFamily(
            "careops_automation_pending_timers",
            "Timers and waits not yet due",
            value=counts["pending_timers"],
        )


@router.get(
    "/metrics",
    summary="Prometheus metrics (per channel: received, accepted, rejected, ...; per queue: open, past SLA)",
    response_class=Response,
    responses={
        "200": {"description": "Prometheus text", "content": {"text/plain": {"schema": {"type": "string"}}}}
    },
)
async def metrics(db: DbDep, _: Annotated[Principal, Depends(require("metrics:read"))]) -> Response:
    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # untyped in prometheus_client
    queues = CollectorRegistry(auto_describe=False)
    queues.register(QueueCollector(db))
    queues.register(OutboxCollector(db))
    queues.register(AutomationCollector(db))

    def exposition() -> bytes:
        return generate_latest(registry) + generate_latest(queues)

    return Response(await in_thread(exposition), media_type=CONTENT_TYPE_LATEST)
