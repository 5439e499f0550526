"""The KPI registry, as data: each KPI's name, definition, the business events it counts, its unit
and what its dimension holds, with the one function that says what an event adds to it.

KPIs come from the business-event log only (never from counters of their own): the roll-up
(``observability.rollup``) applies ``tally`` to each sealed event once, and ``careops kpi
rebuild`` recomputes every KPI from the whole log. A capability adds its KPIs here, and to
docs/kpis.md (a test fails on an undocumented one). Rates are read from two KPIs (``RATES``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

# Upper bounds (seconds) of the histogram buckets of durations: 1 s … 1 week, then beyond.
BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 86400, 3 * 86400, 7 * 86400)
OVER = "le:inf"


@dataclass(frozen=True)
class LoggedEvent:
    """What the roll-up reads of a business event."""

    seq: int
    type: str
    location_id: str | None
    payload: Mapping[str, Any]
    occurred_at: dt.datetime


# What an event adds: (dimension, value) pairs; the context holds when each intake item was
# received, for durations from receipt of events that do not carry it.
Tally = Callable[[LoggedEvent, Mapping[str, dt.datetime]], list[tuple[str, float]]]


@dataclass(frozen=True)
class Kpi:
    name: str
    title: str
    definition: str
    events: tuple[str, ...]
    unit: str  # "count" or "seconds"
    dimension: str | None  # what the dimension holds, or None
    tally: Tally


def bucket(seconds: float) -> str:
    return next((f"le:{bound}" for bound in BUCKETS if seconds <= bound), OVER)


def _one(dimension: str) -> list[tuple[str, float]]:
    return [(dimension[:100], 1.0)]


_OUTCOMES = {
    "case.created": "case",
    "referral.incomplete": "exception",
    "referral.duplicate_detected": "duplicate",
    "referral.quarantined": "quarantined",
}


def _receipt_to_case(event: LoggedEvent, received: Mapping[str, dt.datetime]) -> list[tuple[str, float]]:
    """From ``received_at`` on the event (or, for events written before it was, the intake item's
    ``referral.received``) to the event."""
    stamped = event.payload.get("received_at")
    at = (
        dt.datetime.fromisoformat(stamped)
        if stamped
        else received.get(str(event.payload.get("intake_item_id")))
    )
    if at is None:  # a case without a logged receipt (e.g. from a migration): nothing to time
        return []
    return _seconds(max(0.0, (event.occurred_at - at).total_seconds()))


def _seconds(seconds: float) -> list[tuple[str, float]]:
    """A duration: its total, and its histogram bucket (for the percentiles)."""
    return [("", seconds), (bucket(seconds), seconds)]


KPIS: tuple[Kpi, ...] = (
    Kpi(
        "intake_volume",
        "Referrals received",
        "Every `referral.received`, by the channel it came on (api, webhook, hl7, fhir, email, form).",
        ("referral.received",),
        "count",
        "channel",
        lambda e, _: _one(str(e.payload.get("channel", ""))),
    ),
    Kpi(
        "intake_outcome",
        "Intake outcomes",
        "What became of what arrived: `case.created` (case, at intake or when its exception item was "
        "resolved), `referral.incomplete` (exception), `referral.duplicate_detected` (duplicate), "
        "`referral.quarantined` (quarantined: refused, kept for replay).",
        tuple(_OUTCOMES),
        "count",
        "outcome",
        lambda e, _: _one(_OUTCOMES[e.type]),
    ),
    Kpi(
        "intake_channel_outcome",
        "Intake outcomes, by channel",
        "The outcomes of `intake_outcome`, each under the channel its item came on: "
        "`hl7/case`, `email/exception`, … (`unknown/…` for events recorded before careops 0.1 named "
        "the channel of `referral.incomplete`).",
        tuple(_OUTCOMES),
        "count",
        "channel/outcome",
        lambda e, _: _one(f"{e.payload.get('channel') or 'unknown'}/{_OUTCOMES[e.type]}"),
    ),
    Kpi(
        "quarantine_reason",
        "Quarantined, by reason",
        "Every `referral.quarantined`, by its first reason code (technical failures: unreadable or "
        "refused payloads).",
        ("referral.quarantined",),
        "count",
        "reason",
        lambda e, _: _one(str((e.payload.get("reason_codes") or ["unknown"])[0])),
    ),
    Kpi(
        "exception_reason",
        "Exceptions, by reason",
        "Every reason code of every `referral.incomplete` (process failures: missing fields, unknown codes).",
        ("referral.incomplete",),
        "count",
        "reason",
        lambda e, _: [(str(code)[:100], 1.0) for code in e.payload.get("reason_codes") or []],
    ),
    Kpi(
        "receipt_to_case_seconds",
        "Time from receipt to case",
        "For each `case.created`, the seconds since the `referral.received` of its intake item: 0 for "
        "a complete referral, the wait in the exception queue for one completed later. Mean, p50, p90.",
        ("case.created", "referral.received"),
        "seconds",
        None,
        _receipt_to_case,
    ),
    Kpi(
        "triage_overdue",
        "Triage overdue",
        "Every `exception.opened` in the triage queue: a case whose triage deadline passed untriaged.",
        ("exception.opened",),
        "count",
        None,
        lambda e, _: _one("") if e.payload.get("queue") == "triage" else [],
    ),
    Kpi(
        "mapping_suggestions",
        "Mapping suggestions taken",
        "Each code mapping saved by hand (`reference.added` or `reference.changed` of a mapping with a "
        "`suggestion`): `accepted` (the first suggestion was saved), `overridden` (another target), "
        "`none` (nothing was suggested).",
        ("reference.added", "reference.changed"),
        "count",
        "suggestion",
        lambda e, _: _one(str(e.payload["suggestion"])) if "suggestion" in e.payload else [],
    ),
    Kpi(
        "case_status",
        "Case status funnel",
        "Cases entering each status: the status of each `case.created`, the `to` of each "
        "`case.transitioned`.",
        ("case.created", "case.transitioned"),
        "count",
        "status",
        lambda e, _: _one(str(e.payload.get("status" if e.type == "case.created" else "to", ""))),
    ),
    Kpi(
        "approval_outcome",
        "Approval outcomes",
        "Every `approval.decided`, by its outcome under its policy: `replenishment/approved`, "
        "`invoice/returned`, … (approved, rejected, returned, expired, withdrawn).",
        ("approval.decided",),
        "count",
        "policy/outcome",
        lambda e, _: _one(f"{e.payload.get('policy')}/{e.payload.get('outcome')}"),
    ),
    Kpi(
        "approval_cycle_seconds",
        "Approval cycle time",
        "For each `approval.decided` that approved, rejected or returned, the seconds from the request "
        "to the decision. Mean, p50, p90.",
        ("approval.decided",),
        "seconds",
        None,
        lambda e, _: (
            _seconds(float(e.payload["cycle_seconds"]))
            if e.payload.get("outcome") in ("approved", "rejected", "returned")
            else []
        ),
    ),
    Kpi(
        "approval_escalations",
        "Approval escalations",
        "Every `approval.escalated`, by what the step's time limit did (notify, add_next, reassign, expire).",
        ("approval.escalated",),
        "count",
        "action",
        lambda e, _: _one(str(e.payload.get("action", ""))),
    ),
    Kpi(
        "approval_fallbacks",
        "Fallback approvers used",
        "Every `approval.fallback_used`, by why the fallback covered (absent, nobody holds it here).",
        ("approval.fallback_used",),
        "count",
        "reason",
        lambda e, _: _one(str(e.payload.get("reason", ""))),
    ),
    Kpi(
        "delivery_outcome",
        "Deliveries to connectors",
        "Every attempt's outcome per connector: `billing/succeeded` (`delivery.succeeded`), "
        "`billing/failed` (`delivery.failed`, to be retried), `billing/dead_lettered`, `billing/replayed`.",
        ("delivery.succeeded", "delivery.failed", "delivery.dead_lettered", "delivery.replayed"),
        "count",
        "connector/outcome",
        lambda e, _: _one(f"{e.payload.get('connector')}/{e.type.split('.', 1)[1]}"),
    ),
)
BY_NAME = {kpi.name: kpi for kpi in KPIS}
# Each event type with the KPIs it counts in.
COUNTED_IN = {t: [kpi for kpi in KPIS if t in kpi.events] for kpi in KPIS for t in kpi.events}

# Rates: (name, title, numerator (kpi, dimension), denominators [(kpi, dimension or None for all)]).
RATES: tuple[tuple[str, str, tuple[str, str], tuple[tuple[str, str | None], ...]], ...] = (
    ("exception_rate", "Exception rate", ("intake_outcome", "exception"), (("intake_volume", None),)),
    ("duplicate_rate", "Duplicate rate", ("intake_outcome", "duplicate"), (("intake_volume", None),)),
    (
        "quarantine_rate",
        "Quarantine rate",
        ("intake_outcome", "quarantined"),
        (("intake_volume", None), ("intake_outcome", "quarantined")),
    ),
)
