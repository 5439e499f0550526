"""Approval metrics read from the approval records: cycle time (p50, p90) per policy, per step and
per location; what is pending and for how long; escalation, fallback and returned-for-information
rates. The KPI registry counts the same from the event log (observability.kpis)."""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from typing import Any

from sqlalchemy import select

from careops.db import Database
from careops.domain.approvals import OPEN, ApprovalRequest, ApprovalStep
from careops.domain.events import EventType
from careops.domain.models import BusinessEvent, Location, utcnow
from careops.governance.scoping import LocationScope


def percentile(values: list[float], share: float) -> float | None:
    """The nearest-rank percentile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))]


def _times(groups: dict[str, list[float]]) -> list[dict[str, Any]]:
    return [
        {"key": key, "count": len(v), "p50_seconds": percentile(v, 0.5), "p90_seconds": percentile(v, 0.9)}
        for key, v in sorted(groups.items())
    ]


def summary(db: Database, scope: LocationScope, days: int = 90) -> dict[str, Any]:
    now = utcnow()
    since = now - dt.timedelta(days=days)
    with db.sessions() as session:
        slugs = {id_: slug for id_, slug in session.execute(select(Location.id, Location.slug))}
        query = select(ApprovalRequest).where(ApprovalRequest.requested_at >= since)
        if scope.ids is not None:
            query = query.where(ApprovalRequest.location_id.in_(scope.ids))
        requests = list(session.scalars(query))
        ids = [r.id for r in requests]
        steps = (
            list(session.scalars(select(ApprovalStep).where(ApprovalStep.request_id.in_(ids)))) if ids else []
        )
        fallbacks = set(
            session.scalars(
                select(BusinessEvent.subject_id).where(
                    BusinessEvent.type == EventType.APPROVAL_FALLBACK_USED,
                    BusinessEvent.subject_type == "approval",
                    BusinessEvent.occurred_at >= since,
                )
            )
        )
    by_policy: dict[str, list[float]] = defaultdict(list)
    by_location: dict[str, list[float]] = defaultdict(list)
    decided = [r for r in requests if r.decided_at is not None and r.status != "withdrawn"]
    for r in decided:
        seconds = (r.decided_at - r.requested_at).total_seconds()  # type: ignore[operator]
        by_policy[r.policy].append(seconds)
        by_location[slugs.get(r.location_id, r.location_id)].append(seconds)
    policy_of = {r.id: r.policy for r in requests}
    by_step: dict[str, list[float]] = defaultdict(list)
    for s in steps:
        if s.finished_at is not None and s.started_at is not None:
            by_step[f"{policy_of[s.request_id]}/{s.name}"].append(
                (s.finished_at - s.started_at).total_seconds()
            )
    pending = [r for r in requests if r.status == OPEN]
    ages = [(now - r.requested_at).total_seconds() for r in pending]
    return {
        "days": days,
        "requests": len(requests),
        "cycle_time": {
            "by_policy": _times(by_policy),
            "by_step": _times(by_step),
            "by_location": _times(by_location),
        },
        "pending": {
            "count": len(pending),
            "p50_age_seconds": percentile(ages, 0.5),
            "oldest_seconds": max(ages, default=None),
        },
        "rates": {
            "escalation": round(sum(1 for s in steps if s.escalated_at) / len(steps), 4) if steps else None,
            "fallback": round(sum(1 for r in requests if r.id in fallbacks) / len(requests), 4)
            if requests
            else None,
            "returned": round(sum(1 for r in decided if r.status == "returned") / len(decided), 4)
            if decided
            else None,
        },
    }
