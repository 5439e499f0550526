"""The email channel: a referral by email (RFC 5322 / MIME) into the one intake, never dropped.

The message is kept whole as the intake item's raw payload; its attachments become documents of
the item (text extracted from PDFs and text files, for whoever triages and for the AI layer).
The fields a referral needs are looked for, best effort, in the subject, the body and the
attachments' text (``Patient: Jane Doe``, ``DOB: 12/04/1980``, ``Service: MRI knee``, ...);
whatever is missing sends the item to the exception queue with the email attached.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import getaddresses, parseaddr

from pydantic import ValidationError

from careops.db import Database
from careops.domain.referrals import PatientIn, ReferralIn, ReferrerIn
from careops.errors import Forbidden
from careops.governance.scoping import EVERYWHERE, LocationScope
from careops.integrations.inbound.channel_metrics import measured
from careops.integrations.inbound.document_text import TEXT_LIMIT, extract_text
from careops.integrations.inbound.facilities import location_for
from careops.orchestration.intake import (
    Attachment,
    CatalogueCache,
    IntakeAnswer,
    IntakeRequest,
    accept_referral,
)
from careops.orchestration.quarantine import quarantine
from careops.settings import Settings

PRINCIPAL = "email"
CONTENT_TYPE = "message/rfc822"
_FIELDS = {
    "name": r"(?:patient(?:'s)?\s*(?:full\s*)?name|patient|name)",
    "birth_date": r"(?:d\.?o\.?b\.?|date\s+of\s+birth|birth\s*date|born)",
    "mrn": r"(?:mrn|nhs\s*(?:number|no\.?)|patient\s*id|hospital\s*(?:number|no\.?))",
    "service": r"(?:requested\s+service|service|examination|exam|procedure|test|scan)",
    "referrer": r"(?:referrer|referring\s+(?:gp|doctor|clinician|physician)|gp\s*code)",
    "location": r"(?:location|site|clinic)",
    "phone": r"(?:phone|telephone|tel|mobile)",
}
_PATTERNS = {
    name: re.compile(rf"(?im)^[ \t>*-]*{label}[ \t]*[:#=\-][ \t]*(.+?)[ \t]*$")
    for name, label in _FIELDS.items()
}
# A label later on the same line ("Patient: Doe, Jane DOB: 12/04/1980", as PDF text often comes
# out) ends the value before it, and is looked for there when no line starts with it.
_NEXT_LABEL = re.compile(rf"(?i)[ \t]+(?:{'|'.join(_FIELDS.values())})[ \t]*:")
_INLINE_PATTERNS = {
    name: re.compile(rf"(?i)(?<![^ \t]){label}[ \t]*:[ \t]*([^\n]+?)[ \t]*$", re.M)
    for name, label in _FIELDS.items()
}
_LINE_BREAKS = re.compile(r"<br\s*/?>|</(?:p|div|tr|li|h[1-6]|table)\s*>", re.I)
_TAGS = re.compile(r"<(script|style)\b.*?</\1>|<[^>]+>", re.S | re.I)
_CODE = re.compile(r"^[A-Z]{1,6}-?\d{1,6}$")
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_HEADER_LINE = re.compile(rb"^[\x21-\x39\x3b-\x7e]+:")


class EmailRefused(Exception):
    """An email careops will not take (SMTP 5xx): the reason code and a sentence."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass
class ParsedEmail:
    sender: str | None
    recipients: list[str]
    subject: str
    message_id: str | None
    body: str
    attachments: list[Attachment] = field(default_factory=list)

    @property
    def text(self) -> str:
        """Where fields are looked for: subject, body, then the attachments' text."""
        return "\n".join([self.subject, self.body, *(a.text or "" for a in self.attachments)])


def parse(raw: bytes) -> ParsedEmail:
    """Any bytes as an email: the standard parser forgives malformed structure, and every part
    is decoded (quoted-printable, base64, any charset Python knows; else Latin-1)."""
    message = BytesParser(policy=policy.default).parsebytes(raw)
    plain: list[str] = []
    markup: list[str] = []
    attachments: list[Attachment] = []
    for part in message.walk():
        if part.is_multipart():
            continue
        kind = part.get_content_type()
        filename = _filename(part)
        if part.get_content_disposition() == "attachment" or (filename and not kind.startswith("text/")):
            data = _payload(part)
            name = filename or f"attachment-{len(attachments) + 1}"
            attachments.append(Attachment(name, kind, data, extract_text(kind, data)))
        elif kind == "text/plain":
            plain.append(_text(part))
        elif kind == "text/html":
            markup.append(_text(part))
    body = "\n".join(plain) if plain else _html_text("\n".join(markup))
    body = body.replace("\x00", "")  # NUL is no text (and PostgreSQL refuses it)
    sender = parseaddr(_header(message, "From"))[1] or None
    recipients = [address for _, address in getaddresses([_header(message, "To"), _header(message, "Cc")])]
    return ParsedEmail(
        sender=sender,
        recipients=[r for r in recipients if r],
        subject=_header(message, "Subject"),
        message_id=_header(message, "Message-ID").strip() or None,
        body=body[:TEXT_LIMIT],
        attachments=attachments,
    )


# What the standard library's header parsers raise on a header too broken to read (an address
# list holding a group where a mailbox should be raises AttributeError from inside the parser).
_BROKEN_HEADER = (ValueError, LookupError, IndexError, TypeError, AttributeError)


def _header(message: Message, name: str) -> str:
    """A header as text; one too broken to decode is read as it is instead of failing the email."""
    try:
        value = message.get(name)
    except _BROKEN_HEADER:  # the header as it was sent, not parsed
        value = next((raw for key, raw in message.raw_items() if key.lower() == name.lower()), "")
    return "" if value is None else str(value)


def _filename(part: Message) -> str | None:
    try:
        return part.get_filename()
    except _BROKEN_HEADER:
        return None


def _payload(part: Message) -> bytes:
    data = part.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""


def _text(part: Message) -> str:
    if isinstance(part, EmailMessage):
        try:
            return str(part.get_content())
        except (LookupError, ValueError, UnicodeDecodeError, AssertionError):
            pass
    data = _payload(part)
    charset = part.get_content_charset() or "utf-8"
    try:
        return data.decode(charset, errors="replace")
    except LookupError:
        return data.decode("latin-1")


def referral(email: ParsedEmail, location: str | None) -> ReferralIn:
    """The fields found in the email, each one only when found; never an error."""
    found = {name: _find(name, email.text) for name in _PATTERNS}
    given, family = _split_name(found["name"])
    referrer = found["referrer"]
    is_code = bool(referrer and _CODE.match(referrer.split()[0].upper()))
    return ReferralIn(
        location=(found["location"] or location or "")[:64] or None,
        service_code=(found["service"] or "")[:64] or None,
        patient=PatientIn(
            mrn=(found["mrn"] or "")[:64] or None,
            given_name=given,
            family_name=family,
            birth_date=(found["birth_date"] or "").split()[0][:64] if found["birth_date"] else None,
            phone=(found["phone"] or "")[:64] or None,
        ),
        referrer=ReferrerIn(
            code=referrer.split()[0].upper()[:64] if referrer and is_code else None,
            name=referrer[:200] if referrer and not is_code else None,
        ),
        external_id=(email.message_id or "")[:64] or None,
        clinical_notes=email.body[:20_000] or None,
    )


def _html_text(markup: str) -> str:
    """An HTML-only email as text, a line per line break, paragraph, row or list item."""
    return html.unescape(_TAGS.sub(" ", _LINE_BREAKS.sub("\n", markup)))


def _find(name: str, text: str) -> str | None:
    match = _PATTERNS[name].search(text) or _INLINE_PATTERNS[name].search(text)
    if match is None:
        return None
    return _NEXT_LABEL.split(match.group(1), maxsplit=1)[0].strip()[:200] or None


def _split_name(name: str | None) -> tuple[str | None, str | None]:
    """'Doe, Jane' and 'Jane Doe' both give ('Jane', 'Doe')."""
    if not name:
        return None, None
    if "," in name:
        family, _, given = name.partition(",")
    else:
        given, _, family = name.rpartition(" ")
    return (given.strip()[:200] or None), (family.strip()[:200] or None)


class EmailChannel:
    def __init__(self, db: Database, settings: Settings, catalogue: CatalogueCache) -> None:
        self.db = db
        self.settings = settings
        self.catalogue = catalogue

    def receive(
        self,
        raw: bytes,
        envelope_sender: str | None = None,
        recipients: list[str] | None = None,
        scope: LocationScope = EVERYWHERE,
        transport: str = "smtp",
    ) -> IntakeAnswer:
        """Take one email: its intake answer, or ``EmailRefused`` (kept in quarantine)."""
        with measured(f"email-{transport}") as seen:
            try:
                answer = self.accept(raw, envelope_sender, recipients, scope)
            except EmailRefused as refused:
                seen.quarantined = True
                quarantine(
                    self.db,
                    raw=raw[: self.settings.quarantine_max_bytes],
                    content_type=CONTENT_TYPE,
                    channel="email",
                    reasons=[refused.reason],
                    actor=PRINCIPAL,
                    sender=(envelope_sender or "")[:200] or None,
                )
                raise
            seen.accepted = True
            return answer

    def accept(
        self,
        raw: bytes,
        envelope_sender: str | None = None,
        recipients: list[str] | None = None,
        scope: LocationScope = EVERYWHERE,
    ) -> IntakeAnswer:
        """The email through the intake, or ``EmailRefused`` having stored nothing."""
        if raw.startswith(_OLE_MAGIC):
            raise EmailRefused(
                "email:not_rfc5322", "an Outlook .msg file, not an RFC 5322 email: save it as .eml"
            )
        if not _HEADER_LINE.match(raw.lstrip()[:1000]):
            raise EmailRefused("email:not_rfc5322", "no RFC 5322 header at the start of the message")
        email = parse(raw)
        sender = (envelope_sender or email.sender or "").lower()
        if not self._allowed(sender):
            raise EmailRefused(
                "email:sender_not_allowed", f"the sender {sender or '(none)'} is not on the allowlist"
            )
        mailboxes = [address.partition("@")[0] for address in [*(recipients or []), *email.recipients]]
        slugs = self.catalogue.get(self.db).locations
        location = location_for(mailboxes, self.settings, slugs, pass_unmapped=False)
        try:
            referral_in = referral(email, location)
        except ValidationError as exc:  # a value out of range for the schema: keep it for a human
            raise EmailRefused(
                "email:unreadable_fields", f"fields out of range: {exc.error_count()}"
            ) from exc
        request = IntakeRequest(
            raw=raw,
            content_type=CONTENT_TYPE,
            channel="email",
            principal_id=PRINCIPAL,
            content_key=email.message_id or "no-message-id",
            correlation_id=(email.message_id or "")[:64] or None,
            scope=scope,
            sender=sender[:200] or None,
            attachments=tuple(email.attachments),
        )
        try:
            return accept_referral(self.db, request, referral_in, self.settings, self.catalogue)
        except Forbidden as exc:
            raise EmailRefused("email:location_not_permitted", exc.detail) from exc

    def _allowed(self, sender: str) -> bool:
        allowed = [entry.lower() for entry in self.settings.email_allowed_senders]
        if not allowed:
            return True
        domain = sender.rpartition("@")[2]
        return sender in allowed or f"@{domain}" in allowed
