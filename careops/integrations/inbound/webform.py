"""The partner web form: a referral typed in by a partner clinic, into the one intake.

Unlike the machine channels, a person is there to fix what is missing: the form is checked with
the same evaluation as every referral (required fields of the chosen service, known codes), and
what is wrong is shown next to its field instead of opening an exception item. A complete form
goes through ``accept_referral`` (channel ``form``) with its upload as a document, and the
submitter gets a reference number. CSRF is a signed token in the page tied to a cookie; a
sliding-window limit per client address keeps scripts out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from careops.db import Database
from careops.domain.referrals import PRIORITIES, ReferralIn
from careops.governance.abuse import CsrfTokens, RateLimiter
from careops.integrations.inbound.channel_metrics import measured
from careops.orchestration.intake import (
    Attachment,
    CatalogueCache,
    IntakeRequest,
    accept_referral,
    evaluate,
)
from careops.settings import Settings

PRINCIPAL = "form"
UPLOAD_TYPES = {"application/pdf": b"%PDF-", "image/jpeg": b"\xff\xd8\xff", "image/png": b"\x89PNG"}
FIELDS = (
    "patient.given_name",
    "patient.family_name",
    "patient.birth_date",
    "patient.mrn",
    "patient.phone",
    "patient.email",
    "service_code",
    "priority",
    "referrer.code",
    "referrer.name",
    "payer_code",
    "member_id",
    "clinical_notes",
)
_REASON_FIELD = {
    "unknown_service_code": "service_code",
    "unknown_referrer_code": "referrer.code",
    "unknown_payer_code": "payer_code",
    "unknown_location": "location",
}


class FormRejected(Exception):
    """The form cannot be taken at all (bad or expired CSRF token, too many submissions)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass
class FormOutcome:
    errors: dict[str, str] = field(default_factory=dict)  # field -> message for the person
    reference: str | None = None  # the intake item id, given to the submitter
    outcome: str | None = None


def check_upload(content_type: str, data: bytes, max_bytes: int) -> str | None:
    """Why an upload is refused (a message for the person), or None."""
    if len(data) > max_bytes:
        return f"The file is larger than {max_bytes // (1024 * 1024)} MB."
    magic = UPLOAD_TYPES.get(content_type)
    if magic is None or not data.startswith(magic):
        return "Attach a PDF, JPEG or PNG file."
    return None


class WebForm:
    def __init__(self, db: Database, settings: Settings, catalogue: CatalogueCache) -> None:
        self.db = db
        self.settings = settings
        self.catalogue = catalogue
        self.tokens = CsrfTokens(settings.secret_key, settings.form_token_max_age_seconds, "form")
        self.limiter = RateLimiter(settings.form_submissions_per_minute)

    def choices(self, location: str) -> dict[str, list[str]] | None:
        """The codes the form offers at a location (None: no such location)."""
        snapshot = self.catalogue.get(self.db)
        place = snapshot.locations.get(location)
        if place is None:
            return None
        org = place.organisation_id

        def codes(table: dict[tuple[str, str], Any]) -> list[str]:
            return sorted({ref.code for (owner, _), ref in table.items() if owner == org})

        return {
            "services": codes(snapshot.services),
            "payers": codes(snapshot.payers),
            "priorities": list(PRIORITIES),
        }

    def submit(
        self,
        location: str,
        values: dict[str, str],
        upload: Attachment | None,
        nonce: str,
        client: str,
        refused: dict[str, str] | None = None,
    ) -> FormOutcome:
        """The reference number, or the message for every field to fix (``refused`` adds the
        transport's own, e.g. an upload of the wrong type); nothing is written until all is right."""
        with measured("form") as seen:
            if not self.limiter.allow(client):
                detail = "too many referrals from this address in a minute; please wait and try again"
                raise FormRejected(429, detail)
            try:
                referral_in = _referral(location, values)
            except ValidationError as exc:  # e.g. a NUL pasted into a field: nothing is written
                return FormOutcome(
                    errors={".".join(map(str, e["loc"])): _unreadable(e) for e in exc.errors()}
                )
            evaluation = evaluate(self.catalogue.get(self.db), referral_in, self.settings)
            errors = {
                _REASON_FIELD.get(reason, reason.partition(":")[2]): _message(reason)
                for reason in evaluation.reasons
            }
            errors.update(refused or {})
            if errors:
                return FormOutcome(errors=errors)
            request = IntakeRequest(
                raw=_raw(values, upload),
                content_type="application/x-www-form-urlencoded",
                channel="form",
                principal_id=PRINCIPAL,
                idempotency_key=f"form:{nonce}",
                conditional=True,  # one page, one referral: a second click answers with the first
                sender=(values.get("referrer.code") or values.get("referrer.name") or "")[:200] or None,
                attachments=(upload,) if upload else (),
            )
            answer = accept_referral(self.db, request, referral_in, self.settings, self.catalogue)
            seen.accepted = True
            return FormOutcome(reference=answer.body["intake_item_id"], outcome=answer.body["outcome"])


def _referral(location: str, values: dict[str, str]) -> ReferralIn:
    def get(name: str, limit: int = 200) -> str | None:
        value = (values.get(name) or "").strip()
        return value[:limit] or None

    priority = get("priority")
    # Validated as one document, so that an error names the form's field (``patient.family_name``).
    return ReferralIn.model_validate(
        {
            "location": location,
            "service_code": get("service_code", 64),
            "priority": priority if priority in PRIORITIES else None,
            "patient": {
                "mrn": get("patient.mrn", 64),
                "given_name": get("patient.given_name"),
                "family_name": get("patient.family_name"),
                "birth_date": get("patient.birth_date", 64),
                "phone": get("patient.phone", 64),
                "email": get("patient.email"),
            },
            "referrer": {"code": get("referrer.code", 64), "name": get("referrer.name")},
            "payer_code": get("payer_code", 64),
            "member_id": get("member_id", 64),
            "clinical_notes": (values.get("clinical_notes") or "")[:20_000] or None,
        }
    )


def _raw(values: dict[str, str], upload: Attachment | None) -> bytes:
    """What was submitted, as the intake item's raw payload (the file itself is a document)."""
    kept = {name: values.get(name, "") for name in FIELDS}
    if upload is not None:
        kept["upload"] = f"{upload.filename} ({upload.content_type}, {len(upload.content)} bytes)"
    return json.dumps(kept, ensure_ascii=False, sort_keys=True).encode()


def _unreadable(error: Any) -> str:
    if error["type"] == "string_too_long":
        return f"At most {error['ctx']['max_length']} characters, please."
    return "This cannot be read; please retype it."


def _message(reason: str) -> str:
    kind = reason.partition(":")[0]
    if kind == "missing_field":
        return "Please fill this in."
    if kind == "invalid_field":
        return "This does not look right; dates as 12/04/1980 or 1980-04-12, phones with the area code."
    return "We do not know this code; please check it."
