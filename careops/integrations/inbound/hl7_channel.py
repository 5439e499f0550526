"""The HL7 v2 channel: one message in, one ACK out, whatever the transport (MLLP or HTTP).

What each message type does is ``hl7v2.DISPOSITIONS``: referrals and orders go through the same
intake as ``POST /api/v1/referrals``; registrations, merges, appointments, results, charges and
referral updates through their orchestration modules; some types are only recorded. The sender,
its message control id (MSH-10) and the message's digest (without MSH-7) are the idempotency key,
across transports: a message sent again, its time stamp renewed or not, gets ``AA`` again and
changes nothing.
Whatever cannot be read or mapped is kept whole in quarantine and answered ``AE`` or ``AR``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from careops.db import Database
from careops.errors import Forbidden
from careops.governance.scoping import EVERYWHERE, LocationScope
from careops.integrations.inbound import hl7_content, hl7v2
from careops.integrations.inbound.channel_metrics import measured
from careops.integrations.inbound.facilities import location_for
from careops.observability import tracing
from careops.orchestration.charges import Charge, record_charges
from careops.orchestration.external_appointments import AppointmentNotice, record_appointment
from careops.orchestration.intake import CatalogueCache, IntakeAnswer, IntakeRequest, accept_referral
from careops.orchestration.quarantine import quarantine
from careops.orchestration.referral_updates import cancel_referral, modify_referral
from careops.orchestration.registrations import record_message, record_patient, request_merge
from careops.orchestration.results import ResultNotice, record_result
from careops.settings import Settings

CONTENT_TYPE = "application/hl7-v2"
ACCEPTED_CONTENT_TYPES = frozenset({"text/plain", "application/hl7-v2", "x-application/hl7-v2+er7"})
# One idempotency namespace for every HL7 sender and transport: the key names the sender.
PRINCIPAL = "hl7"


@dataclass
class Hl7Result:
    ack: str
    code: str  # AA, AE or AR
    outcome: str  # case_created, exception, duplicate, patient_recorded, ..., quarantined, failed
    body: dict[str, Any]


class Hl7Channel:
    """Handles one message at a time; safe to call from many threads."""

    def __init__(self, db: Database, settings: Settings, catalogue: CatalogueCache) -> None:
        self.db = db
        self.settings = settings
        self.catalogue = catalogue

    def handle(
        self, raw: bytes, transport: str, actor: str = PRINCIPAL, scope: LocationScope = EVERYWHERE
    ) -> Hl7Result:
        with measured(f"hl7-{transport}") as seen:
            try:
                result = self.accept(raw, actor, scope)
            except hl7v2.Hl7Rejected as rejected:
                result = self._reject(raw, hl7v2.read_header(hl7v2.decode(raw)), rejected, actor)
            seen.accepted, seen.quarantined = result.code == "AA", result.outcome == "quarantined"
        return result

    def accept(self, raw: bytes, actor: str = PRINCIPAL, scope: LocationScope = EVERYWHERE) -> Hl7Result:
        """Store the message and its ``AA``, or raise ``Hl7Rejected`` having stored nothing."""
        message = hl7v2.parse(raw)
        try:
            answer = self._apply(message, actor, scope)
        except ValidationError as exc:
            fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors()[:5])
            raise hl7v2.Hl7Rejected("AE", hl7v2.DATA_TYPE_ERROR, f"values out of range: {fields}") from exc
        except Forbidden as exc:
            raise hl7v2.Hl7Rejected(
                "AR", hl7v2.APPLICATION_ERROR, exc.detail, ("MSH", 6), reason="hl7:location_not_permitted"
            ) from exc
        outcome = str(answer.body["outcome"])
        ack = hl7v2.acknowledgement(message.header, "AA", _summary(answer))
        return Hl7Result(ack, "AA", outcome, answer.body)

    def refuse(self, raw: bytes, transport: str, reason: str, detail: str) -> Hl7Result:
        """AR for bytes that are not one well-framed message (kept in quarantine all the same)."""
        with measured(f"hl7-{transport}") as seen:
            seen.quarantined = True
            header = hl7v2.read_header(hl7v2.decode(raw))
            refused = hl7v2.Hl7Rejected("AR", hl7v2.APPLICATION_ERROR, detail, reason=reason)
            return self._reject(raw, header, refused, PRINCIPAL)

    def failure(self, raw: bytes, error: Exception) -> Hl7Result:
        """The ACK when nothing could be committed (e.g. the database is down): AE, send again."""
        header = hl7v2.read_header(hl7v2.decode(raw))
        rejected = hl7v2.Hl7Rejected(
            "AE", hl7v2.APPLICATION_ERROR, f"not stored ({type(error).__name__}); send the message again"
        )
        ack = hl7v2.acknowledgement(header, "AE", rejected.detail, rejected)
        return Hl7Result(ack, "AE", "failed", {"outcome": "failed"})

    def _apply(self, message: hl7v2.Hl7Message, actor: str, scope: LocationScope) -> IntakeAnswer:
        header = message.header
        tracing.bind_correlation(header.control_id[:64])  # HL7 messages are correlated by MSH-10
        request = IntakeRequest(
            raw=message.text.encode(),
            content_type=CONTENT_TYPE,
            channel="hl7",
            principal_id=PRINCIPAL,
            content_key=f"{header.sender}|{header.control_id}",
            content_digest=hl7v2.resend_digest(message.text),
            correlation_id=header.control_id[:64],
            scope=scope,
            sender=header.sender[:200],
        )
        slugs = self.catalogue.get(self.db).locations
        location = location_for(hl7_content.facilities(message), self.settings, slugs)
        kind, region = header.kind, self.settings.default_phone_region
        handler = hl7v2.DISPOSITIONS[kind].handler
        if handler == "referral":
            return accept_referral(
                self.db,
                request,
                hl7_content.referral(message, location, region),
                self.settings,
                self.catalogue,
            )
        if handler == "record":
            return record_message(self.db, request, location, self.catalogue)
        patient = hl7_content.patient(message, region)
        orders = hl7_content.order_numbers(message)
        if handler == "patient":
            return record_patient(
                self.db, request, patient, location, hl7v2.PATIENT_TYPES[kind], self.settings, self.catalogue
            )
        if handler == "merge":
            prior = hl7_content.merged_identifier(message)
            return request_merge(self.db, request, patient, prior, location, self.catalogue)
        if handler == "result":
            report = hl7_content.result(message)
            found = ResultNotice(
                report.order_numbers, report.service_code, report.status, report.observed_at, report.text
            )
            return record_result(self.db, request, patient, location, found, self.catalogue)
        if handler == "charges":
            lines = [
                Charge(**{**line.__dict__, "diagnosis_codes": tuple(line.diagnosis_codes)})
                for line in hl7_content.charges(message)
            ]
            diagnoses = hl7_content.diagnosis_codes(message)
            return record_charges(
                self.db, request, patient, location, orders, lines, diagnoses, self.catalogue
            )
        if handler in ("referral_update", "referral_cancel"):
            referral = hl7_content.referral(message, location, region)
            if handler == "referral_cancel":
                return cancel_referral(
                    self.db, request, patient, location, orders, referral.service_code, self.catalogue
                )
            return modify_referral(
                self.db,
                request,
                patient,
                location,
                orders,
                referral.service_code,
                referral.priority,
                referral.diagnosis_codes,
                self.catalogue,
            )
        appointment = hl7_content.appointment(message, region)
        if appointment.start is None and appointment.event in ("booked", "rescheduled"):
            raise hl7v2.Hl7Rejected(
                "AE", hl7v2.REQUIRED_FIELD_MISSING, "AIS-4 / TQ1-7 (appointment start) is empty", ("AIS", 4)
            )
        notice = AppointmentNotice(
            appointment.event,
            appointment.service_code,
            appointment.start,
            appointment.minutes,
            appointment.placer_id,
            appointment.filler_id,
            orders,
        )
        return record_appointment(self.db, request, patient, location, notice, self.catalogue)

    def _reject(self, raw: bytes, header: hl7v2.Header, rejected: hl7v2.Hl7Rejected, actor: str) -> Hl7Result:
        """Keep the message whole in quarantine, then NAK it naming the reason and the quarantine id."""
        quarantine_id = quarantine(
            self.db,
            raw=raw[: self.settings.quarantine_max_bytes],
            content_type=CONTENT_TYPE,
            channel="hl7",
            reasons=[rejected.reason],
            actor=actor,
            sender=header.sender[:200] or None,
        )
        text = f"{rejected.detail} (quarantine {quarantine_id})"
        ack = hl7v2.acknowledgement(header, rejected.ack_code, text, rejected)
        body = {"outcome": "quarantined", "quarantine_id": quarantine_id, "reason_codes": [rejected.reason]}
        return Hl7Result(ack, rejected.ack_code, "quarantined", body)


def _summary(answer: IntakeAnswer) -> str:
    """MSA-3: what became of the message, by ids and reason codes only (never PHI)."""
    body = answer.body
    outcome = body["outcome"]
    if outcome == "exception":
        return f"queued for review: {', '.join(body['reason_codes'])}"[:80]
    if "case_id" in body:
        return f"{outcome.replace('_', ' ')}: case {body['case_id']}"
    return f"{outcome.replace('_', ' ')}: {body.get('patient_id', body['intake_item_id'])}"
