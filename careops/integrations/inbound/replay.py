"""Replay: a quarantined payload goes through its channel again, e.g. after reference data is fixed.

The replay is idempotent (a second replay, or two at once, creates nothing more) and leaves the
quarantined item ``replayed``, or ``quarantined`` with the new reasons when it is still rejected.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from careops.db import Database
from careops.domain.referrals import ReferralIn
from careops.errors import ValidationFailed
from careops.governance.scoping import LocationScope
from careops.integrations.inbound import fhir_r4, hl7v2
from careops.integrations.inbound.channels import Inbound
from careops.integrations.inbound.email_channel import EmailRefused
from careops.orchestration.intake import IntakeRequest, accept_referral
from careops.orchestration.quarantine import quarantined_payload, rejection_reasons, settle


class StillRejected(Exception):
    def __init__(self, reasons: list[str], detail: str) -> None:
        super().__init__(detail)
        self.reasons = reasons
        self.detail = detail


def replay(inbound: Inbound, item_id: str, *, actor: str, scope: LocationScope) -> dict[str, Any]:
    """Run a quarantined payload through its channel; its outcome, or 422 with the new reasons."""
    db = inbound.hl7.db
    channel, raw, content_type = quarantined_payload(db, item_id, scope)
    try:
        outcome = _through_channel(inbound, channel, raw, content_type, item_id, actor, scope)
    except StillRejected as rejected:
        settle(
            db,
            item_id,
            status="quarantined",
            actor=actor,
            payload={"reason_codes": rejected.reasons},
            reasons=rejected.reasons,
        )
        raise ValidationFailed(
            f"the payload is still rejected: {rejected.detail}", reason_codes=rejected.reasons
        ) from rejected
    settle(
        db,
        item_id,
        status="replayed",
        actor=actor,
        payload={"outcome": outcome["outcome"], "intake_item_id": outcome.get("intake_item_id")},
    )
    return {"quarantine_id": item_id, "status": "replayed", **outcome}


def discard(db: Database, item_id: str, reason: str, *, actor: str, scope: LocationScope) -> dict[str, Any]:
    """Give up on a quarantined payload, saying why (kept, and audited, but no longer listed)."""
    reason = " ".join(reason.split())
    if not reason:
        message = "say why the payload is given up: it is kept with the reason"
        raise ValidationFailed(message, errors=[{"field": "reason", "message": message}])
    quarantined_payload(db, item_id, scope)
    settle(db, item_id, status="discarded", actor=actor, payload={"reason": reason[:500]})
    return {"quarantine_id": item_id, "status": "discarded"}


def _through_channel(
    inbound: Inbound,
    channel: str,
    raw: bytes,
    content_type: str | None,
    item_id: str,
    actor: str,
    scope: LocationScope,
) -> dict[str, Any]:
    if channel == "hl7":
        try:
            return inbound.hl7.accept(raw, actor, scope).body
        except hl7v2.Hl7Rejected as rejected:
            raise StillRejected([rejected.reason], rejected.detail) from rejected
    if channel in ("api", "webhook"):  # JSON referrals, by token or signed by a connector
        try:
            referral = ReferralIn.model_validate_json(raw)
        except ValidationError as exc:
            error = ValidationFailed.from_errors(exc.errors())
            raise StillRejected(rejection_reasons(error), error.detail) from exc
        request = IntakeRequest(
            raw,
            content_type or "application/json",
            channel,
            principal_id="replay",  # one key per quarantined item, whoever replays it
            idempotency_key=f"quarantine:{item_id}",
            scope=scope,
        )
        hl7 = inbound.hl7
        return accept_referral(hl7.db, request, referral, hl7.settings, hl7.catalogue).body
    if channel == "email":
        try:
            return inbound.email.accept(raw, scope=scope).body
        except EmailRefused as refused:
            raise StillRejected([refused.reason], refused.detail) from refused
    if channel == "fhir":
        try:
            answer = inbound.fhir.accept(raw, scope)
        except fhir_r4.FhirError as error:
            raise StillRejected([error.reason], error.diagnostics) from error
        return {"outcome": "fhir_accepted", "status": answer.status, "resource": answer.location or "Bundle"}
    raise StillRejected(
        [f"replay_unsupported:{channel}"], f"payloads of the {channel} channel cannot be replayed"
    )
