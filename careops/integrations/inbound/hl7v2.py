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
from typing import Literal

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
