"""Deliveries in the worker: every ``delivery_interval_seconds`` (at once again after a full
round), new events are planned into deliveries and due ones sent and settled."""

from __future__ import annotations

import asyncio

from careops.db import Database
from careops.integrations.outbound.delivery import Deliverer
from careops.integrations.outbound.subscriptions import load_file
from careops.orchestration.worker import Job, repeat
from careops.settings import Settings

ROUND = 200


def delivery_jobs(settings: Settings) -> list[Job]:
    subscriptions = load_file(settings.connectors_file)
    if not subscriptions:
        return []

    async def run(db: Database, stop: asyncio.Event) -> None:
        deliverer = Deliverer(
            db,
            subscriptions,
            timeout=settings.delivery_timeout_seconds,
            lease_seconds=settings.delivery_lease_seconds,
        )
        try:
            await repeat(
                lambda: deliverer.run_once(ROUND),
                ROUND,
                settings.delivery_interval_seconds,
                stop,
                "deliveries.failed",
            )
        finally:
            deliverer.close()

    return [run]
