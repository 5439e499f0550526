"""What HL7 v2 messages say, read field by field: the patient (PID), a referral (RF1, ORC, OBR,
PRD, IN1, DG1, NTE), an appointment (SCH, AIS, TQ1), a result (OBR, OBX), charges (FT1), a merge
(MRG) and the order numbers a message names. ``hl7v2`` decodes and parses the message and writes
the ACK; missing or unreadable required values raise its ``Hl7Rejected`` (``AE``) naming the field.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any, Literal

from careops.domain.referrals import PatientIn, ReferralIn, ReferrerIn, phone_number
from careops.integrations.inbound.hl7v2 import (
    APPOINTMENT_TYPES,
    DATA_TYPE_ERROR,
    REQUIRED_FIELD_MISSING,
    SEGMENT_SEQUENCE_ERROR,
    Hl7Message,
    Hl7Rejected,
    Segment,
)

_RESULT_STATUS = {"F": "final", "C": "corrected", "X": "cancelled"}  # others: preliminary
_SEX: dict[str, Literal["female", "male", "other", "unknown"]] = {
    "M": "male",
    "F": "female",
    "O": "other",
    "A": "other",
    "U": "unknown",
    "N": "unknown",
}
_PRIORITY: dict[str, Literal["routine", "urgent", "stat"]] = {
    "S": "stat",
    "A": "urgent",
    "U": "urgent",
    "R": "routine",
    "P": "routine",
    "T": "urgent",
}


@dataclass
class Appointment:
    """What an SIU message says about an appointment, enough to find the case it belongs to."""

    event: str
    patient: PatientIn
    service_code: str | None
    filler_id: str | None
    placer_id: str | None
    start: str | None
    minutes: int | None = None


def value(
    segment: Segment | None, position: int, component: int = 1, subcomponent: int = 1, repetition: int = 1
) -> str:
    """One unescaped, trimmed value of a segment; '' when the segment or the value is absent."""
    if segment is None:
        return ""
    return segment.value(position, component, subcomponent, repetition).strip()


def repetitions(segment: Segment | None, position: int) -> int:
    return 0 if segment is None else segment.repetitions(position)


def patient(message: Hl7Message, phone_region: str) -> PatientIn:
    """PID as the intake patient; AE when PID, the patient identifier or the name is missing.

    Its phone is the first of PID-13 that is a possible number (national ones of ``phone_region``)."""
    pid = message.first("PID")
    if pid is None:
        raise Hl7Rejected("AE", SEGMENT_SEQUENCE_ERROR, "the message has no PID segment", ("PID", 0))
    mrn = _medical_record_number(pid)
    if not mrn:
        raise Hl7Rejected("AE", REQUIRED_FIELD_MISSING, "PID-3 (patient identifier) is empty", ("PID", 3))
    family, given = value(pid, 5, 1), value(pid, 5, 2)
    if not family and not given:
        raise Hl7Rejected("AE", REQUIRED_FIELD_MISSING, "PID-5 (patient name) is empty", ("PID", 5))
    birth = value(pid, 7)
    if birth and not re.fullmatch(r"\d{8}", birth[:8]):
        raise Hl7Rejected("AE", DATA_TYPE_ERROR, "PID-7 (date of birth) is not an HL7 date", ("PID", 7))
    return PatientIn(
        mrn=mrn[:64],
        given_name=given[:200] or None,
        family_name=family[:200] or None,
        birth_date=birth[:8] or None,
        sex=_SEX.get(value(pid, 8)[:1].upper()),
        phone=_phone(pid, phone_region),
        email=_email(pid),
    )


def _medical_record_number(pid: Any) -> str:
    """The PID-3 repetition typed MR, else the first one (older senders put the MRN in PID-2)."""
    count = repetitions(pid, 3)
    for repetition in range(1, count + 1):
        if value(pid, 3, 5, repetition=repetition).upper() == "MR":
            return value(pid, 3, 1, repetition=repetition)
    return value(pid, 3, 1) or value(pid, 2, 1)


def _phone(pid: Any, region: str) -> str | None:
    """PID-13's first number that is a possible phone number: XTN-12, XTN-6+7, or XTN-1."""
    for repetition in range(1, repetitions(pid, 13) + 1):
        candidates = (
            value(pid, 13, 12, repetition=repetition),
            value(pid, 13, 6, repetition=repetition) + value(pid, 13, 7, repetition=repetition),
            value(pid, 13, 1, repetition=repetition),
        )
        for candidate in candidates:
            digits = re.sub(r"[^\d+]", "", candidate)
            if len(digits) >= 7 and phone_number(candidate, region) is not None:
                return candidate[:64]
    return None


def _email(pid: Any) -> str | None:
    for position in (13, 14):
        for repetition in range(1, repetitions(pid, position) + 1):
            address = value(pid, position, 4, repetition=repetition)
            if "@" in address:
                return address[:200]
    return None


def facilities(message: Hl7Message) -> list[str]:
    """Where the message is for, most specific first: PV1-3 facility, MSH-6 receiving facility."""
    pv1 = message.first("PV1")
    found = [value(pv1, 3, 4), value(message.first("MSH"), 6, 1)]
    return [name for name in found if name]


def referral(message: Hl7Message, location: str | None, phone_region: str) -> ReferralIn:
    """REF^I12, ORM^O01, OMG^O19 or OML^O21 as a referral for ``location`` (a slug, or None)."""
    rf1, obr, orc = message.first("RF1"), message.first("OBR"), message.first("ORC")
    pr1 = message.first("PR1")
    service = value(obr, 4, 1) or value(pr1, 3, 1)
    service_text = value(obr, 4, 2) if value(obr, 4, 1) else value(pr1, 3, 2)
    priority = _PRIORITY.get(
        (value(rf1, 2) or value(orc, 7, 6) or value(obr, 27, 6) or value(obr, 5))[:1].upper()
    )
    external = value(rf1, 6) or value(orc, 2) or value(obr, 2) or message.header.control_id
    insurance = message.first("IN1")
    return ReferralIn(
        location=location,
        service_code=service[:64] or None,
        service_text=service_text[:200] or None,
        priority=priority,
        patient=patient(message, phone_region),
        referrer=_referrer(message),
        payer_code=value(insurance, 3, 1)[:64] or None,
        member_id=(value(insurance, 36) or value(insurance, 49, 1))[:64] or None,
        external_id=external[:64],
        clinical_notes=_notes(message) or None,
        diagnosis_codes=diagnosis_codes(message)[:20],
    )


def _referrer(message: Hl7Message) -> ReferrerIn:
    """The referring provider: PRD with role RP, else ORC-12 / OBR-16 ordering provider, else PV1-8."""
    for prd in message.segments("PRD"):
        if value(prd, 1, 1).upper() == "RP":
            code = value(prd, 7, 1)
            name = " ".join(part for part in (value(prd, 2, 2), value(prd, 2, 1)) if part)
            return ReferrerIn(code=code[:64] or None, name=name[:200] or None)
    for segment, position in (
        (message.first("ORC"), 12),
        (message.first("OBR"), 16),
        (message.first("PV1"), 8),
    ):
        code = value(segment, position, 1)
        name = " ".join(part for part in (value(segment, position, 3), value(segment, position, 2)) if part)
        if code or name:
            return ReferrerIn(code=code[:64] or None, name=name[:200] or None)
    return ReferrerIn()


def _notes(message: Hl7Message) -> str:
    """Diagnoses (DG1-3 code and text) and notes (NTE-3), one per line, for whoever triages."""
    lines = []
    for dg1 in message.segments("DG1"):
        code, text = value(dg1, 3, 1), value(dg1, 3, 2) or value(dg1, 4)
        if code or text:
            lines.append(f"Diagnosis: {code} {text}".strip())
    lines.extend(f"Note: {value(nte, 3)}" for nte in message.segments("NTE") if value(nte, 3))
    return "\n".join(lines)[:20_000]


def appointment(message: Hl7Message, phone_region: str) -> Appointment:
    """SIU^S12/S14/S15: the appointment ids, its start, the service (AIS-3) and the patient."""
    sch = message.first("SCH")
    if sch is None:
        raise Hl7Rejected("AE", SEGMENT_SEQUENCE_ERROR, "the message has no SCH segment", ("SCH", 0))
    placer, filler = value(sch, 1, 1), value(sch, 2, 1)
    if not placer and not filler:
        raise Hl7Rejected(
            "AE", REQUIRED_FIELD_MISSING, "SCH-1 and SCH-2 (appointment ids) are empty", ("SCH", 1)
        )
    ais, tq1 = message.first("AIS"), message.first("TQ1")
    start = value(ais, 4) or value(tq1, 7) or value(sch, 11, 4)
    return Appointment(
        minutes=_minutes(value(ais, 7) or value(sch, 9), value(ais, 8, 1) or value(sch, 10, 1)),
        event=APPOINTMENT_TYPES[message.header.kind],
        patient=patient(message, phone_region),
        service_code=(value(ais, 3, 1) or value(sch, 7, 1))[:64] or None,
        filler_id=filler[:64] or None,
        placer_id=placer[:64] or None,
        start=_timestamp(start),
    )


def _minutes(duration: str, units: str) -> int | None:
    """An appointment's length from its duration and units (minutes unless hours or seconds)."""
    if not duration.isdigit():
        return None
    scale = {"h": 60, "hr": 60, "hour": 60, "hours": 60, "s": 1 / 60, "sec": 1 / 60}.get(units.lower(), 1)
    minutes = int(int(duration) * scale)
    return minutes if 0 < minutes <= 24 * 60 else None


def order_numbers(message: Hl7Message) -> tuple[str, ...]:
    """The placer and filler order or referral numbers a message names, most specific first."""
    found = []
    for segment, position in (
        ("ORC", 2),
        ("ORC", 3),
        ("OBR", 2),
        ("OBR", 3),
        ("RF1", 6),
        ("RF1", 11),
        ("FT1", 23),
        ("SCH", 26),
        ("SCH", 27),
    ):
        for seen in message.segments(segment):
            number = value(seen, position, 1)[:64]
            if number and number not in found:
                found.append(number)
    return tuple(found)


def diagnosis_codes(message: Hl7Message) -> list[str]:
    """DG1-3 codes, in order, once each."""
    codes = [value(dg1, 3, 1).upper()[:64] for dg1 in message.segments("DG1")]
    return list(dict.fromkeys(code for code in codes if code))


@dataclass
class ResultReport:
    """What an ORU^R01 says: the orders it answers, the service, its status and its text."""

    order_numbers: tuple[str, ...]
    service_code: str | None
    status: str
    observed_at: str | None
    text: str


def result(message: Hl7Message) -> ResultReport:
    """ORU^R01: the first OBR's order and status, every OBX and NTE as the report's text."""
    obr = message.first("OBR")
    if obr is None:
        raise Hl7Rejected("AE", SEGMENT_SEQUENCE_ERROR, "the message has no OBR segment", ("OBR", 0))
    lines = []
    for segment in message.all_segments:
        if segment.name == "OBX":
            name = value(segment, 3, 2) or value(segment, 3, 1)
            reading = " ".join(
                part for part in (value(segment, 5, 1), value(segment, 6, 1), value(segment, 8, 1)) if part
            )
            lines.append(f"{name}: {reading}".strip(": "))
        elif segment.name == "NTE" and value(segment, 3):
            lines.append(value(segment, 3))
    return ResultReport(
        order_numbers=order_numbers(message),
        service_code=value(obr, 4, 1)[:64] or None,
        status=_RESULT_STATUS.get(value(obr, 25)[:1].upper(), "preliminary"),
        observed_at=_timestamp(value(obr, 7)),
        text="\n".join(lines)[:100_000],
    )


@dataclass
class ChargeLine:
    code: str
    quantity: int
    amount: float | None
    currency: str | None
    diagnosis_codes: list[str]
    posted_on: str | None


def charges(message: Hl7Message) -> list[ChargeLine]:
    """DFT^P03's FT1 segments: procedure code (FT1-25, else the transaction code FT1-7), quantity
    (FT1-10), extended amount (FT1-11, else FT1-12 times the quantity), diagnoses (FT1-19)."""
    lines = []
    for ft1 in message.segments("FT1"):
        code = (value(ft1, 25, 1) or value(ft1, 7, 1))[:64]
        if not code:
            raise Hl7Rejected("AE", REQUIRED_FIELD_MISSING, "FT1-7 (transaction code) is empty", ("FT1", 7))
        quantity_text = value(ft1, 10)
        quantity = int(quantity_text) if quantity_text.isdigit() and 0 < int(quantity_text) < 10_000 else 1
        amount = _number(value(ft1, 11, 1))
        unit = _number(value(ft1, 12, 1))
        if amount is None and unit is not None:
            amount = unit * quantity
        diagnoses = [value(ft1, 19, 1, repetition=r).upper()[:64] for r in range(1, repetitions(ft1, 19) + 1)]
        posted = value(ft1, 4)
        lines.append(
            ChargeLine(
                code=code,
                quantity=quantity,
                amount=amount,
                currency=(value(ft1, 11, 1, 2) or value(ft1, 12, 1, 2))[:8] or None,
                diagnosis_codes=[code for code in diagnoses if code],
                posted_on=f"{posted[:4]}-{posted[4:6]}-{posted[6:8]}"
                if re.fullmatch(r"\d{8}.*", posted)
                else None,
            )
        )
    if not lines:
        raise Hl7Rejected("AE", SEGMENT_SEQUENCE_ERROR, "the message has no FT1 segment", ("FT1", 0))
    return lines


def _number(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return number if 0 <= number < 1e9 else None


def merged_identifier(message: Hl7Message) -> str:
    """ADT^A40's MRG-1: the identifier of the record to merge into the one PID names."""
    mrg = message.first("MRG")
    prior = value(mrg, 1, 1)
    if not prior:
        raise Hl7Rejected(
            "AE", REQUIRED_FIELD_MISSING, "MRG-1 (prior patient identifier) is empty", ("MRG", 1)
        )
    return prior[:64]


def _timestamp(hl7_time: str) -> str | None:
    """An HL7 DTM (``YYYYMMDD[HHMM[SS]][+ZZZZ]``) as ISO 8601, or None."""
    match = re.fullmatch(r"(\d{8})(\d{2})?(\d{2})?(\d{2})?(?:\.\d+)?([+-]\d{4})?", hl7_time)
    if not match:
        return None
    date, hour, minute, second, zone = match.groups()
    try:
        moment = dt.datetime.strptime(
            date + (hour or "00") + (minute or "00") + (second or "00"), "%Y%m%d%H%M%S"
        )
    except ValueError:
        return None
    if zone:
        offset = dt.timedelta(hours=int(zone[1:3]), minutes=int(zone[3:5]))
        moment = moment.replace(tzinfo=dt.timezone(offset if zone[0] == "+" else -offset))
    return moment.isoformat()
