"""HL7 v2 messages: decoding, the header, mapping to the intake model, and the acknowledgement.

Parsing is the ``hl7`` package's, with the message's own encoding characters and escape sequences
(``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\ \\X..\\``). Segment endings ``\\r``, ``\\n`` and ``\\r\\n`` are all read
as the standard ``\\r``. Z-segments and everything not mapped stay in the raw message kept on the
intake item. Nothing here touches the database; ``hl7_channel`` does.

The acknowledgement follows original-mode rules (HL7 v2 chapter 2): MSA-1 ``AA`` accepted, ``AE``
understood but its content is in error (an ERR segment names the field, e.g. ``PID^1^3``), ``AR``
rejected (unsupported type or version, or not an HL7 message at all); MSA-2 echoes MSH-10; the
ACK's MSH swaps the sending and receiving application and facility.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import uuid
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from careops.domain.referrals import PatientIn, ReferralIn, ReferrerIn, phone_number

SUPPORTED_VERSIONS = frozenset(
    {
        "2.1",
        "2.2",
        "2.3",
        "2.3.1",
        "2.4",
        "2.5",
        "2.5.1",
        "2.6",
        "2.7",
        "2.7.1",
        "2.8",
        "2.8.1",
        "2.8.2",
        "2.9",
    }
)


@dataclass(frozen=True)
class Disposition:
    """What careops does with one message type: ``process`` it (``handler`` names how), only
    ``record`` it (kept as an intake item and acknowledged, nothing else changes) or ``reject`` it
    with ``AR``. Every type not in ``DISPOSITIONS`` is rejected too."""

    action: Literal["process", "record", "reject"]
    handler: str
    meaning: str


def _siu(event: str) -> Disposition:
    return Disposition("process", "appointment", f"appointment {event}")


# The one table of what each HL7 message type does (documented in docs/channels.md).
DISPOSITIONS: dict[str, Disposition] = {
    "REF^I12": Disposition("process", "referral", "new referral: a case, or an exception item"),
    "ORM^O01": Disposition("process", "referral", "new order: a case, or an exception item"),
    "OMG^O19": Disposition("process", "referral", "new order: a case, or an exception item"),
    "OML^O21": Disposition("process", "referral", "new laboratory order: a case, or an exception item"),
    "REF^I13": Disposition("process", "referral_update", "referral modified: priority and diagnoses"),
    "REF^I14": Disposition("process", "referral_cancel", "referral cancelled: the case is cancelled"),
    "REF^I15": Disposition("record", "record", "referral status query: recorded; answer from the API"),
    "ADT^A01": Disposition("process", "patient", "admission: patient registered or updated"),
    "ADT^A04": Disposition("process", "patient", "registration: patient registered or updated"),
    "ADT^A05": Disposition("process", "patient", "pre-admission: patient registered or updated"),
    "ADT^A28": Disposition("process", "patient", "person added: patient registered or updated"),
    "ADT^A08": Disposition("process", "patient", "patient information updated"),
    "ADT^A31": Disposition("process", "patient", "person information updated"),
    "ADT^A40": Disposition("process", "merge", "merge: an exception item for a person to confirm"),
    "SIU^S12": _siu("booked"),
    "SIU^S13": _siu("rescheduled"),
    "SIU^S14": _siu("modified"),
    "SIU^S15": _siu("cancelled"),
    "SIU^S16": _siu("discontinued (as cancelled)"),
    "SIU^S17": _siu("deleted (as cancelled)"),
    "SIU^S26": _siu("missed (no-show)"),
    **{
        f"SIU^S{n}": Disposition("record", "record", "appointment service or resource change: recorded")
        for n in range(18, 26)
    },
    "ORU^R01": Disposition("process", "result", "result or report: matched to its case, else an exception"),
    "DFT^P03": Disposition("process", "charges", "charges: billing input on the case, else an exception"),
    "MDM^T02": Disposition("record", "record", "document notification: recorded"),
    "BAR^P01": Disposition("record", "record", "billing account added: recorded"),
    "VXU^V04": Disposition("reject", "", "immunisation update: not held by careops"),
    "RDE^O11": Disposition("reject", "", "pharmacy order: not held by careops"),
    "PPR^PC1": Disposition("reject", "", "problem list: not held by careops"),
}
REFERRAL_TYPES = frozenset(kind for kind, d in DISPOSITIONS.items() if d.handler == "referral")
PATIENT_TYPES = {
    **dict.fromkeys(("ADT^A01", "ADT^A04", "ADT^A05", "ADT^A28"), "registered"),
    **dict.fromkeys(("ADT^A08", "ADT^A31"), "updated"),
}
APPOINTMENT_TYPES = {
    "SIU^S12": "booked",
    "SIU^S13": "rescheduled",
    "SIU^S14": "modified",
    "SIU^S15": "cancelled",
    "SIU^S16": "cancelled",
    "SIU^S17": "cancelled",
    "SIU^S26": "no_show",
}
SUPPORTED_TYPES = frozenset(kind for kind, d in DISPOSITIONS.items() if d.action != "reject")
_RESULT_STATUS = {"F": "final", "C": "corrected", "X": "cancelled"}  # others: preliminary

# HL7 table 0357, message error condition codes
REQUIRED_FIELD_MISSING = ("101", "Required field missing")
DATA_TYPE_ERROR = ("102", "Data type error")
SEGMENT_SEQUENCE_ERROR = ("100", "Segment sequence error")
UNSUPPORTED_MESSAGE_TYPE = ("200", "Unsupported message type")
UNSUPPORTED_EVENT_CODE = ("201", "Unsupported event code")
UNSUPPORTED_VERSION = ("203", "Unsupported version id")
APPLICATION_ERROR = ("207", "Application internal error")

_SEGMENT_ENDINGS = re.compile(r"\r\n|\n|\r")
_CHARSETS = {
    "ASCII": "ascii",
    "8859/1": "latin-1",
    "8859/15": "iso8859-15",
    "UNICODE UTF-8": "utf-8",
    "UNICODE": "utf-8",
    "ISO IR100": "latin-1",
}
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


class Hl7Rejected(Exception):
    """A message that gets ``AE`` or ``AR``: the ACK code, the HL7 error and where it is.

    ``location`` is ``(segment, field)`` (e.g. ``("PID", 3)``) or None; ``reason`` is the reason code
    kept with the quarantined payload (``hl7:unsupported_message_type``, ``hl7:missing_field:PID-3``).
    """

    def __init__(
        self,
        ack_code: str,
        error: tuple[str, str],
        detail: str,
        location: tuple[str, int] | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.ack_code = ack_code
        self.error = error
        self.detail = detail
        self.location = location
        self._reason = reason

    @property
    def reason(self) -> str:
        if self._reason:
            return self._reason
        slug = self.error[1].lower().replace(" ", "_")
        if self.location:
            return f"hl7:{slug}:{self.location[0]}-{self.location[1]}"
        return f"hl7:{slug}"


@dataclass(frozen=True)
class Header:
    """What the ACK needs from MSH, read as far as the message allows."""

    field_separator: str = "|"
    encoding_characters: str = "^~\\&"
    sending_application: str = ""
    sending_facility: str = ""
    receiving_application: str = ""
    receiving_facility: str = ""
    message_type: str = ""
    trigger: str = ""
    control_id: str = ""
    processing_id: str = "P"
    version: str = ""

    @property
    def kind(self) -> str:
        """``REF^I12``-style message type and trigger event."""
        return f"{self.message_type}^{self.trigger}"

    @property
    def sender(self) -> str:
        """The sending application and facility as raw HL7 text (``APP|FACILITY``)."""
        return f"{self.sending_application}|{self.sending_facility}"


@dataclass(frozen=True)
class Delimiters:
    """A message's own delimiters, from MSH-1 and MSH-2 (the standard ones by default)."""

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"

    @classmethod
    def of(cls, header: Header) -> Delimiters:
        encoding = header.encoding_characters + "^~\\&"[len(header.encoding_characters) :]
        return cls(header.field_separator, encoding[0], encoding[1], encoding[2], encoding[3])

    def unescape(self, text: str) -> str:
        r"""``\F\ \S\ \T\ \R\ \E\`` to delimiters, ``\Xhh..\`` to characters, ``\.br\`` to a line break.

        Highlighting (``\H\ \N\``), character-set switches and local escapes (``\Z..\``) are dropped.
        """
        if self.escape not in text:
            return text
        return _escape_sequence(self.escape).sub(self._replace, text)

    def _replace(self, match: re.Match[str]) -> str:
        code = match.group(1)
        plain = {
            "F": self.field,
            "S": self.component,
            "T": self.subcomponent,
            "R": self.repetition,
            "E": self.escape,
            ".br": "\n",
            ".sp": "\n",
        }.get(code)
        if plain is not None:
            return plain
        if code[:1] == "X" and re.fullmatch(r"(?:[0-9A-Fa-f]{2})+", code[1:]):
            data = bytes.fromhex(code[1:])
            try:
                return data.decode("utf-8")
            except UnicodeDecodeError:
                return data.decode("latin-1")
        return ""


@lru_cache(maxsize=16)
def _escape_sequence(escape: str) -> re.Pattern[str]:
    quoted = re.escape(escape)
    return re.compile(f"{quoted}([^{quoted}]*){quoted}")


class Segment:
    """One segment split on the message's field separator; fields are numbered as in the standard.

    Repetitions, components and subcomponents are split only when a value is asked for: a message
    is read in tens of microseconds, where building its whole tree (python-hl7) took half a
    millisecond. python-hl7 stays the reference the tests compare this reader against.
    """

    __slots__ = ("delimiters", "fields", "name")

    def __init__(self, line: str, delimiters: Delimiters) -> None:
        fields = line.split(delimiters.field)
        if fields[0] == "MSH":
            fields.insert(1, delimiters.field)  # MSH-1 is the field separator itself
        self.name = fields[0]
        self.fields = fields
        self.delimiters = delimiters

    def raw(self, position: int) -> str:
        return self.fields[position] if 0 < position < len(self.fields) else ""

    def repetitions(self, position: int) -> int:
        raw = self.raw(position)
        return len(raw.split(self.delimiters.repetition)) if raw else 0

    def value(self, position: int, component: int = 1, subcomponent: int = 1, repetition: int = 1) -> str:
        raw = self.raw(position)
        if not raw or (self.name == "MSH" and position <= 2):
            return raw
        d = self.delimiters
        for separator, index in (
            (d.repetition, repetition),
            (d.component, component),
            (d.subcomponent, subcomponent),
        ):
            parts = raw.split(separator)
            if index > len(parts):
                return ""
            raw = parts[index - 1]
        return d.unescape(raw)


@dataclass
class Hl7Message:
    text: str
    header: Header
    all_segments: list[Segment]

    def segments(self, name: str) -> list[Segment]:
        return [segment for segment in self.all_segments if segment.name == name]

    def first(self, name: str) -> Segment | None:
        return next((segment for segment in self.all_segments if segment.name == name), None)


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


def decode(raw: bytes) -> str:
    """The message text with ``\\r`` segment endings, in the character set MSH-18 declares.

    UTF-8 is tried first (the HL7 v2.8 default); a message that is not UTF-8 is read in its
    declared set, or Latin-1, so that it is always decoded (and kept) rather than dropped.
    """
    data = raw.removeprefix(b"\xef\xbb\xbf").strip(b"\x00\x0b\x1c\r\n \t")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode(_declared_charset(data) or "latin-1", errors="replace")
    text = text.replace("\x00", "")  # NUL is not HL7 text (and PostgreSQL refuses it)
    return "\r".join(segment for segment in _SEGMENT_ENDINGS.split(text) if segment.strip())


def _declared_charset(data: bytes) -> str | None:
    first_line = _SEGMENT_ENDINGS.split(data.decode("latin-1"), maxsplit=1)[0]
    if not first_line.startswith("MSH") or len(first_line) < 4:
        return None
    fields = first_line.split(first_line[3])
    declared = fields[17].split(first_line[4:5] or "^")[0].strip().upper() if len(fields) > 17 else ""
    return _CHARSETS.get(declared)


_BATCH_HEADERS = ("FHS", "BHS")


def read_header(text: str) -> Header:
    """MSH read by position, so that even a message the parser refuses can be acknowledged; for a
    batch, its FHS or BHS (same fields 1 to 6; the file's or batch's control id is field 11)."""
    first_line = text.split("\r", 1)[0]
    if not first_line.startswith(("MSH", *_BATCH_HEADERS)) or len(first_line) < 8:
        return Header()
    separator = first_line[3]
    fields = first_line.split(separator)
    encoding = fields[1] if len(fields) > 1 and fields[1] else "^~\\&"
    component = encoding[0]

    def at(position: int) -> str:
        # MSH-1 is the separator itself, so MSH-n is fields[n - 1].
        return fields[position - 1] if len(fields) >= position else ""

    def first_component(position: int) -> str:
        return at(position).split(component)[0]

    if first_line.startswith(_BATCH_HEADERS):
        return Header(separator, encoding, at(3), at(4), at(5), at(6), control_id=at(11))
    message_type = at(9).split(component)
    return Header(
        field_separator=separator,
        encoding_characters=encoding,
        sending_application=at(3),
        sending_facility=at(4),
        receiving_application=at(5),
        receiving_facility=at(6),
        message_type=message_type[0],
        trigger=message_type[1] if len(message_type) > 1 else "",
        control_id=at(10),
        processing_id=first_component(11) or "P",
        version=first_component(12),
    )


def resend_digest(text: str) -> str:
    """SHA-256 of a message without MSH-7 (date/time of message): a resend whose engine renewed
    the time stamp is the same message."""
    first_line, newline, rest = text.partition("\r")
    if first_line.startswith("MSH") and len(first_line) > 3:
        fields = first_line.split(first_line[3])
        if len(fields) > 6:
            fields[6] = ""  # MSH-7 (MSH-1 is the separator itself)
        first_line = first_line[3].join(fields)
    return hashlib.sha256(f"{first_line}{newline}{rest}".encode()).hexdigest()


def parse(raw: bytes) -> Hl7Message:
    """Decode and parse a message, or ``Hl7Rejected`` with ``AR`` naming what is wrong."""
    text = decode(raw)
    if text.startswith(_BATCH_HEADERS):
        raise Hl7Rejected(
            "AR",
            UNSUPPORTED_MESSAGE_TYPE,
            "HL7 batches (FHS/BHS) are not accepted: send each message on its own",
            (text[:3], 1),
            reason="hl7:batch_not_supported",
        )
    if not text.startswith("MSH"):
        raise Hl7Rejected(
            "AR", SEGMENT_SEQUENCE_ERROR, "the message does not start with an MSH segment", ("MSH", 1)
        )
    header = read_header(text)
    if not header.message_type:
        raise Hl7Rejected("AR", REQUIRED_FIELD_MISSING, "MSH-9 (message type) is empty", ("MSH", 9))
    if not header.control_id:
        raise Hl7Rejected("AR", REQUIRED_FIELD_MISSING, "MSH-10 (message control id) is empty", ("MSH", 10))
    if not header.version:
        raise Hl7Rejected("AR", REQUIRED_FIELD_MISSING, "MSH-12 (version id) is empty", ("MSH", 12))
    if header.version not in SUPPORTED_VERSIONS:
        raise Hl7Rejected(
            "AR", UNSUPPORTED_VERSION, f"HL7 version {header.version!r} is not supported", ("MSH", 12)
        )
    disposition = DISPOSITIONS.get(header.kind)
    if disposition is not None and disposition.action == "reject":
        raise Hl7Rejected(
            "AR", UNSUPPORTED_MESSAGE_TYPE, f"message type {header.kind} ({disposition.meaning})", ("MSH", 9)
        )
    if header.kind not in SUPPORTED_TYPES:
        known_type = any(kind.startswith(f"{header.message_type}^") for kind in SUPPORTED_TYPES)
        error = UNSUPPORTED_EVENT_CODE if known_type else UNSUPPORTED_MESSAGE_TYPE
        raise Hl7Rejected("AR", error, f"message type {header.kind} is not accepted here", ("MSH", 9))
    delimiters = Delimiters.of(header)
    return Hl7Message(text, header, [Segment(line, delimiters) for line in text.split("\r")])


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


def escape(text: str, header: Header) -> str:
    """Text safe inside a field of a message with ``header``'s delimiters."""
    d = Delimiters.of(header)
    component, repetition, escape_char, subcomponent = d.component, d.repetition, d.escape, d.subcomponent
    replacements = [
        (escape_char, f"{escape_char}E{escape_char}"),
        (header.field_separator, f"{escape_char}F{escape_char}"),
        (component, f"{escape_char}S{escape_char}"),
        (subcomponent, f"{escape_char}T{escape_char}"),
        (repetition, f"{escape_char}R{escape_char}"),
    ]
    for plain, escaped in replacements:
        text = text.replace(plain, escaped)
    return re.sub(r"[\r\n]+", " ", text)


def acknowledgement(
    header: Header,
    code: str,
    text: str = "",
    rejected: Hl7Rejected | None = None,
    now: dt.datetime | None = None,
) -> str:
    """The ACK for a message with ``header``: MSH (sender and receiver swapped), MSA, and ERR if any."""
    f = header.field_separator
    d = Delimiters.of(header)
    component, subcomponent = d.component, d.subcomponent
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%d%H%M%S+0000")
    trigger = f"ACK{component}{header.trigger}{component}ACK" if header.trigger else "ACK"
    msh = f.join(
        [
            "MSH",
            header.encoding_characters,
            header.receiving_application or "careops",
            header.receiving_facility,
            header.sending_application,
            header.sending_facility,
            stamp,
            "",
            trigger,
            uuid.uuid4().hex[:20],
            header.processing_id or "P",
            header.version if header.version in SUPPORTED_VERSIONS else "2.5.1",
        ]
    )
    msa = f.join(["MSA", code, header.control_id, escape(text, header)[:80]])
    segments = [msh, msa]
    if rejected is not None:
        error_code, error_text = rejected.error
        where = ""
        if rejected.location:
            segment, position = rejected.location
            where = component.join([segment, "1", str(position)])
        legacy = component.join(
            [
                *(where.split(component) if where else ["", "", ""]),
                subcomponent.join([error_code, error_text, "HL70357"]),
            ]
        )
        segments.append(
            f.join(
                [
                    "ERR",
                    legacy,
                    where,
                    component.join([error_code, error_text, "HL70357"]),
                    "E",
                    "",
                    "",
                    "",
                    escape(rejected.detail, header)[:250],
                ]
            )
        )
    return "\r".join(segments) + "\r"
