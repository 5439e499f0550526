"""/metrics: Prometheus exposition of the process's (or, under several workers, all workers') metrics.

Labels carry channel names only, never PHI or free text. Needs a token with ``metrics:read``.
"""

from __future__ import annotations

import os
from typing import Annotated

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from careops.api.deps import require
from careops.governance.principal import Principal

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    summary="Prometheus metrics (per channel: received, accepted, rejected, ...)",
    response_class=Response,
    responses={
        "200": {"description": "Prometheus text", "content": {"text/plain": {"schema": {"type": "string"}}}}
    },
)
def metrics(_: Annotated[Principal, Depends(require("metrics:read"))]) -> Response:
    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # untyped in prometheus_client
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
