"""A referral as it arrives, and its normalised form with the reasons it cannot yet become a case.

Wrong *types* are rejected by the schema (422); missing or unreadable *values* are work for a
human and become reason codes such as ``missing_field:patient.birth_date``.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from typing import Annotated, Literal

import phonenumbers
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

# No field of a referral holds a NUL: nobody writes one, and PostgreSQL cannot store it.
WITHOUT_NUL = r"^[^\x00]*$"
Text = Annotated[str, StringConstraints(max_length=200, pattern=WITHOUT_NUL)]
Code = Annotated[str, StringConstraints(max_length=64, pattern=WITHOUT_NUL)]
Name = Annotated[str, StringConstraints(max_length=100, pattern=WITHOUT_NUL)]  # the patient's columns

ALWAYS_REQUIRED = ("location", "service_code", "patient.given_name", "patient.family_name")
PRIORITIES = ("routine", "urgent", "stat")


class PatientIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mrn: Code | None = Field(None, description="Medical record number at the referring organisation.")
    given_name: Name | None = None
    family_name: Name | None = None
    birth_date: Code | None = Field(None, description="ISO 8601, YYYYMMDD, DD.MM.YYYY or DD/MM/YYYY.")
    sex: Literal["female", "male", "other", "unknown"] | None = None
    phone: Code | None = Field(None, description="Any common format; stored as E.164.")
    email: Text | None = None


class ReferrerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: Code | None = Field(None, description="Referrer code from the directory.")
    name: Text | None = None


class ReferralIn(BaseModel):
    """A referral for one service at one location."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "location": "north",
                    "service_code": "MRI-KNEE",
                    "priority": "routine",
                    "patient": {
                        "mrn": "MRN-100234",
                        "given_name": "Alex",
                        "family_name": "Example",
                        "birth_date": "1980-04-12",
                        "sex": "female",
                        "phone": "+44 20 7946 0958",
                    },
                    "referrer": {"code": "GP-001"},
                    "payer_code": "NHS",
                    "member_id": "943 476 5919",
                    "external_id": "REF-2026-0001",
                }
            ]
        },
    )
    location: Code | None = Field(None, description="Location slug, e.g. `north`.")
    service_code: Code | None = Field(None, description="Service code or alias from the catalogue.")
    service_text: Annotated[str, StringConstraints(max_length=200, pattern=WITHOUT_NUL)] | None = Field(
        None,
        description="The sender's name of the service (HL7 OBR-4.2, FHIR display or text): careops "
        "suggests a mapping from it when the code is unknown.",
    )
    priority: Literal["routine", "urgent", "stat"] | None = None
    patient: PatientIn = Field(default_factory=PatientIn)
    referrer: ReferrerIn = Field(default_factory=ReferrerIn)
    payer_code: Code | None = None
    member_id: Code | None = None
    external_id: Code | None = Field(None, description="The sender's own reference.")
    clinical_notes: Annotated[str, StringConstraints(max_length=20_000, pattern=WITHOUT_NUL)] | None = None
    diagnosis_codes: list[Code] = Field(
        default_factory=list, max_length=20, description="Diagnosis codes (ICD-10-CM), e.g. `M25.561`."
    )


class NormalisedReferral(BaseModel):
    location: str | None
    service_code: str | None
    priority: str
    mrn: str | None
    given_name: str | None
    family_name: str | None
    birth_date: dt.date | None
    sex: str | None
    phone: str | None
    email: str | None
    referrer_code: str | None
    payer_code: str | None
    member_id: str | None
    external_id: str | None
    diagnosis_codes: list[str] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list, description="invalid_field:... reason codes")

    def value(self, field: str) -> object:
        """The value behind a dotted field name as used in reason codes and required_fields."""
        return getattr(self, _FIELD_ATTRIBUTES.get(field, field))


_FIELD_ATTRIBUTES = {
    "patient.mrn": "mrn",
    "patient.given_name": "given_name",
    "patient.family_name": "family_name",
    "patient.birth_date": "birth_date",
    "patient.sex": "sex",
    "patient.phone": "phone",
    "patient.email": "email",
    "referrer.code": "referrer_code",
}
KNOWN_FIELDS = frozenset(
    {*_FIELD_ATTRIBUTES, "location", "service_code", "payer_code", "member_id", "external_id"}
)

_SPACES = re.compile(r"\s+")
_CODE_SEPARATORS = re.compile(r"[\s_/]+")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def clean_text(value: str | None) -> str | None:
    """Trim and collapse inner whitespace; empty becomes None."""
    if value is None:
        return None
    cleaned = _SPACES.sub(" ", value).strip()
    return cleaned or None


def normalise_code(value: str | None) -> str | None:
    """Codes compare upper-case with single dashes: ' mri knee ' and 'MRI_KNEE' both give 'MRI-KNEE'."""
    cleaned = clean_text(value)
    if cleaned is None:
        return None
    return _CODE_SEPARATORS.sub("-", cleaned.upper()).strip("-") or None


def normalise_name(value: str | None) -> str | None:
    """Names keep their own case unless shouted or whispered: 'SMITH' and 'smith' give 'Smith'."""
    cleaned = clean_text(value)
    if cleaned is None:
        return None
    if cleaned.isupper() or cleaned.islower():
        return "-".join(part.capitalize() for part in cleaned.title().split("-"))
    return cleaned


def parse_date(value: str | None, date_order: str = "DMY") -> dt.date | None:
    """Read ISO 8601, HL7 YYYYMMDD, or day/month/year with '.', '/' or '-'; ValueError if unreadable."""
    cleaned = clean_text(value)
    if cleaned is None:
        return None
    digits = cleaned[:10] if re.fullmatch(r"\d{4}-\d{2}-\d{2}([T ].*)?", cleaned) else cleaned
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", digits):
        return dt.date.fromisoformat(digits)
    if re.fullmatch(r"\d{8}", digits):
        return dt.date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
    match = re.fullmatch(r"(\d{1,2})[./-](\d{1,2})[./-](\d{4})", digits)
    if match:
        first, second, year = (int(g) for g in match.groups())
        day, month = (first, second) if date_order == "DMY" else (second, first)
        return dt.date(year, month, day)
    raise ValueError(f"unreadable date format: {len(cleaned)} characters")


@functools.lru_cache(maxsize=1024)
def phone_number(text: str, region: str) -> phonenumbers.PhoneNumber | None:
    """``text`` as a possible phone number (a national one of ``region``, or international), or None.

    Cached: a channel choosing among a message's numbers and the normalisation after it parse each
    number once (the parse is most of a referral's normalisation). Never mutate what it returns.
    """
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    return number if phonenumbers.is_possible_number(number) else None


def normalise_phone(value: str | None, region: str) -> str | None:
    """E.164, or ValueError when the number is not a possible phone number."""
    cleaned = clean_text(value)
    if cleaned is None:
        return None
    number = phone_number(cleaned, region)
    if number is None:
        raise ValueError("not a possible phone number")
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def normalise(
    referral: ReferralIn, *, phone_region: str = "GB", date_order: str = "DMY"
) -> NormalisedReferral:
    """Clean every field; unreadable values become ``invalid_field:<field>`` problems, not exceptions."""
    problems: list[str] = []
    birth_date: dt.date | None = None
    phone: str | None = None
    try:
        birth_date = parse_date(referral.patient.birth_date, date_order)
    except ValueError:
        problems.append("invalid_field:patient.birth_date")
    try:
        phone = normalise_phone(referral.patient.phone, phone_region)
    except ValueError:
        problems.append("invalid_field:patient.phone")
    email = clean_text(referral.patient.email)
    if email is not None:
        email = email.lower()
        if not _EMAIL.match(email):
            problems.append("invalid_field:patient.email")
            email = None
    if birth_date is not None and not dt.date(1880, 1, 1) <= birth_date <= dt.date.today():
        problems.append("invalid_field:patient.birth_date")
        birth_date = None
    return NormalisedReferral(
        location=(clean_text(referral.location) or "").lower() or None,
        service_code=normalise_code(referral.service_code),
        priority=referral.priority or "routine",
        mrn=normalise_code(referral.patient.mrn),
        given_name=normalise_name(referral.patient.given_name),
        family_name=normalise_name(referral.patient.family_name),
        birth_date=birth_date,
        sex=referral.patient.sex,
        phone=phone,
        email=email,
        referrer_code=normalise_code(referral.referrer.code),
        payer_code=normalise_code(referral.payer_code),
        member_id=clean_text(referral.member_id),
        external_id=clean_text(referral.external_id),
        diagnosis_codes=list(
            dict.fromkeys(c for c in ((clean_text(c) or "").upper() for c in referral.diagnosis_codes) if c)
        ),
        problems=problems,
    )


def missing_fields(referral: NormalisedReferral, required: list[str]) -> list[str]:
    """Reason codes for every required field that has no value (always-required fields first)."""
    reasons: list[str] = []
    for field in (*ALWAYS_REQUIRED, *required):
        if (
            field in KNOWN_FIELDS
            and referral.value(field) in (None, "")
            and f"invalid_field:{field}" not in (referral.problems)
        ):
            code = f"missing_field:{field}"
            if code not in reasons:
                reasons.append(code)
    return reasons
