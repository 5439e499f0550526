"""Signed webhooks out: a JSON body, signed with every live secret of the connector, POSTed to its
URL. What is sent about a case is masked as for the role the connector ``sees_as``, through the
same masking policy as the API (data minimisation per connector)."""

from __future__ import annotations

import json
from typing import Any

import httpx

from careops.db import Database
from careops.errors import CareopsError
from careops.governance.signing import outbound
from careops.orchestration.cases import get_case


class DeliveryFailed(CareopsError):
    code = "delivery_failed"
    status = 502
    title = "The connector did not take the delivery"


def deliver(db: Database, connector: str, message: dict[str, Any]) -> int:
    """POST ``message`` to the connector, signed; its HTTP status, or DeliveryFailed."""
    target = outbound(db, connector)
    body = json.dumps(message, separators=(",", ":"), default=str).encode()
    headers = {**target.headers(body), "Content-Type": "application/json"}
    try:
        answer = httpx.post(target.url, content=body, headers=headers, timeout=10)
    except httpx.HTTPError as exc:
        raise DeliveryFailed(f"{target.url}: {type(exc).__name__}") from exc
    if not answer.is_success:
        raise DeliveryFailed(f"{target.url} answered {answer.status_code}")
    return answer.status_code


def send_case(db: Database, connector: str, case_id: str) -> int:
    """The case, as the connector may see it, delivered as ``{"type": "case", "case": {...}}``."""
    case = get_case(db, case_id, outbound(db, connector).reader)
    return deliver(db, connector, {"type": "case", "case": case})
