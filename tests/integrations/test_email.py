"""The email channel: real SMTP (aiosmtpd, smtplib) and saved .eml files, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import smtplib
import threading
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as examples
from hypothesis import strategies as st
from sqlalchemy import func, select

from careops.db import Database
from careops.domain.models import Document, ExceptionItem, IntakeItem, Patient, ServiceCase
from careops.integrations.inbound.document_text import extract_text
from careops.integrations.inbound.email_channel import EmailChannel, EmailRefused, parse, referral
from careops.integrations.inbound.smtp import start_smtp
from careops.orchestration.intake import CatalogueCache
from careops.settings import Settings
from tests.test_cli import careops

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "email"


def pdf_with_text(text: str) -> bytes:
    """A minimal one-page PDF that shows ``text`` (built by hand: offsets and all)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = b"%PDF-1.4\n"
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return out


def referral_email(
    body: str,
    attachment: bytes | None = None,
    sender: str = "gp@clinic.example",
    cte: str = "quoted-printable",
) -> bytes:
    message = EmailMessage()
    message["From"] = f"Dr Who <{sender}>"
    message["To"] = "north@referrals.example"
    message["Subject"] = "Referral: chest X-ray"
    message["Message-ID"] = "<ref-1@clinic.example>"
    message.set_content(body, charset="iso-8859-1", cte=cte)
    if attachment is not None:
        message.add_attachment(attachment, maintype="application", subtype="pdf", filename="letter.pdf")
    return bytes(message)


BODY = """Dear colleague,

Patient: Müller, Jörg
DOB: 12/04/1980
MRN: MRN-E1
Service: XRAY-CHEST
Referrer: GP-001

Thank you.
"""


@pytest.fixture
def channel(settings: Settings, db: Database) -> EmailChannel:
    return EmailChannel(db, settings, CatalogueCache(0))


def counts(db: Database) -> dict[str, int]:
    with db.sessions() as session:
        rows = session.execute(
            select(IntakeItem.status, func.count())
            .where(IntakeItem.channel == "email")
            .group_by(IntakeItem.status)
        ).all()
        return {str(status): int(n) for status, n in rows}


def test_pdf_text_is_extracted() -> None:
    assert "Patient: Jane Doe" in (extract_text("application/pdf", pdf_with_text("Patient: Jane Doe")) or "")
    assert extract_text("application/pdf", b"%PDF-1.4 broken") is None
    assert extract_text("image/png", b"\x89PNG") is None


def test_a_complete_referral_email_creates_a_case_and_keeps_its_attachment(
    channel: EmailChannel, db: Database
) -> None:
    raw = referral_email(BODY, pdf_with_text("Clinical letter"))
    answer = channel.receive(raw, recipients=["north@referrals.example"])
    assert answer.body["outcome"] == "case_created", answer.body
    with db.sessions() as session:
        case = session.scalars(select(ServiceCase)).one()
        patient = session.get(Patient, case.patient_id)
        document = session.scalars(select(Document)).one()
        item = session.get(IntakeItem, answer.body["intake_item_id"])
    assert patient is not None and (patient.given_name, patient.family_name) == ("Jörg", "Müller")
    assert document.filename == "letter.pdf" and "Clinical letter" in (document.text or "")
    assert item is not None and item.sender == "gp@clinic.example"
    again = channel.receive(raw)
    assert again.body == answer.body  # the same email again changes nothing
    with db.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Document)) == 1


def test_fields_missing_from_the_body_are_found_in_the_pdf(channel: EmailChannel, db: Database) -> None:
    letter = pdf_with_text("Service: XRAY-CHEST")
    answer = channel.receive(referral_email("Patient: Jane Roe\nDOB: 1975-01-02\n", letter))
    assert answer.body["outcome"] == "case_created", answer.body


def test_labels_on_one_line_end_each_other_s_values() -> None:
    """PDF text often comes out as one line; prose labels elsewhere do not win over a line's own."""
    letter = pdf_with_text("Patient: Roe, Jane DOB: 1975-01-02 Service: XRAY-CHEST Referrer: GP-001")
    email = parse(referral_email("Reason for referral: cough\nService: MRI-KNEE\n", letter))
    found = referral(email, None)
    assert (found.patient.given_name, found.patient.family_name) == ("Jane", "Roe")
    assert found.patient.birth_date == "1975-01-02"
    assert found.service_code == "MRI-KNEE"  # the body's own line comes first
    assert found.referrer.code == "GP-001"


def test_an_html_only_email_keeps_its_lines() -> None:
    message = EmailMessage()
    message["From"] = "gp@clinic.example"
    message["Subject"] = "Referral"
    message.set_content(
        "<html><body><p>Patient: Html, Hal<br>DOB: 1960-02-02</p>"
        "<div>Service: XRAY-CHEST</div></body></html>",
        subtype="html",
    )
    found = referral(parse(bytes(message)), None)
    assert (found.patient.given_name, found.patient.family_name) == ("Hal", "Html")
    assert (found.patient.birth_date, found.service_code) == ("1960-02-02", "XRAY-CHEST")


@pytest.mark.parametrize("path", sorted(SAMPLES.glob("*.eml")), ids=lambda p: p.name)
def test_every_sample_email_is_kept_never_dropped(channel: EmailChannel, db: Database, path: Path) -> None:
    raw = path.read_bytes()
    if path.name == "mail_outlook_1.eml":  # an Outlook .msg file under an .eml name
        with pytest.raises(Exception, match="Outlook"):
            channel.receive(raw)
        assert counts(db) == {"quarantined": 1}
        return
    answer = channel.receive(raw)
    assert answer.body["outcome"] == "exception"  # none of them is a referral: a human looks
    assert "missing_field:service_code" in answer.body["reason_codes"]
    email = parse(raw)
    with db.sessions() as session:
        documents = session.scalar(select(func.count()).select_from(Document)) or 0
        exception = session.scalars(select(ExceptionItem)).one()
    assert documents == len(email.attachments)
    assert exception.intake_item_id == answer.body["intake_item_id"]


def test_the_sender_allowlist_refuses_and_keeps(settings: Settings, db: Database) -> None:
    strict = EmailChannel(
        db, settings.model_copy(update={"email_allowed_senders": ["@nhs.example"]}), CatalogueCache(0)
    )
    with pytest.raises(Exception, match="allowlist"):
        strict.receive(referral_email(BODY))
    assert counts(db) == {"quarantined": 1}
    assert strict.receive(referral_email(BODY, sender="gp@nhs.example")).body["outcome"] == "case_created"


@pytest.fixture
def smtp_port(channel: EmailChannel) -> Iterator[int]:
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(start_smtp(channel, "127.0.0.1", 0, 2 * 1024 * 1024))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield int(server.sockets[0].getsockname()[1])
    loop.call_soon_threadsafe(server.close)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def test_real_smtp_delivery_is_answered_after_it_is_stored(smtp_port: int, db: Database) -> None:
    with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as client:
        code, features = client.ehlo()
        assert code == 250 and b"SIZE" in features
        refused = client.sendmail("gp@clinic.example", ["north@referrals.example"], referral_email(BODY))
        assert refused == {}
        for path in sorted(SAMPLES.glob("mail_test_*.eml")):
            # On the wire, lines end in CRLF (the saved files use bare LF).
            wire = path.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            client.sendmail("sender@example.com", ["intake@referrals.example"], wire)
        with pytest.raises((smtplib.SMTPSenderRefused, smtplib.SMTPDataError)) as too_big:
            client.sendmail(
                "a@example.com", ["north@referrals.example"], b"Subject: x\r\n\r\n" + b"x" * (3 * 1024 * 1024)
            )
        assert too_big.value.smtp_code == 552
    totals = counts(db)
    assert totals == {"accepted": 1, "incomplete": len(list(SAMPLES.glob("mail_test_*.eml")))}


def test_the_cli_imports_saved_emails_and_the_api_serves_their_documents(
    client: TestClient, database_url: str, db: Database, tmp_path: Path
) -> None:
    saved = tmp_path / "referral.eml"
    saved.write_bytes(referral_email(BODY, pdf_with_text("Clinical letter")))
    result = careops(
        database_url,
        "intake",
        "eml",
        str(saved),
        str(SAMPLES / "mail_outlook_1.eml"),
        CAREOPS_DEFAULT_LOCATION="north",
    )
    assert result.returncode == 0, result.stderr
    lines = [line.split("\t") for line in result.stdout.splitlines()]
    assert lines[0][1] == "case_created" and lines[1][1:] == ["quarantined", "email:not_rfc5322"]
    documents = client.get(f"/api/v1/intake/{lines[0][2]}/documents").json()["items"]
    assert [d["filename"] for d in documents] == ["letter.pdf"]
    content = client.get(documents[0]["links"]["content"])
    assert content.content.startswith(b"%PDF") and "attachment" in content.headers["content-disposition"]
    assert "Clinical letter" in client.get(f"/api/v1/documents/{documents[0]['id']}/text").text


def test_a_refused_email_is_replayed_once_the_sender_is_allowed(settings: Settings, db: Database) -> None:
    from careops.governance.scoping import EVERYWHERE
    from careops.integrations.inbound.channels import Inbound
    from careops.integrations.inbound.replay import replay
    from careops.orchestration.quarantine import list_quarantined

    strict = settings.model_copy(update={"email_allowed_senders": ["@nhs.example"]})
    with pytest.raises(Exception, match="allowlist"):
        Inbound.build(db, strict, CatalogueCache(0)).email.receive(referral_email(BODY))
    [item] = list_quarantined(db, 10, EVERYWHERE)
    relaxed = Inbound.build(db, settings, CatalogueCache(0))
    assert replay(relaxed, item["id"], actor="test", scope=EVERYWHERE)["outcome"] == "case_created"
    assert counts(db) == {"accepted": 1, "replayed": 1}


def test_a_quarantined_8bit_latin1_email_is_replayed_byte_for_byte(settings: Settings, db: Database) -> None:
    """Bytes that are not UTF-8 are kept exactly (raw_bytes), not as their readable escapes."""
    from careops.governance.scoping import EVERYWHERE
    from careops.integrations.inbound.channels import Inbound
    from careops.integrations.inbound.replay import replay
    from careops.orchestration.quarantine import list_quarantined

    raw = referral_email(BODY, cte="8bit")
    assert "Müller".encode("latin-1") in raw
    strict = settings.model_copy(update={"email_allowed_senders": ["@nhs.example"]})
    with pytest.raises(Exception, match="allowlist"):
        Inbound.build(db, strict, CatalogueCache(0)).email.receive(raw)
    [listed] = list_quarantined(db, 10, EVERYWHERE)
    with db.sessions() as session:
        kept = session.get(IntakeItem, listed["id"])
        assert kept is not None and kept.raw_bytes == raw and "M\\xfcller" in kept.raw_payload
    outcome = replay(
        Inbound.build(db, settings, CatalogueCache(0)), listed["id"], actor="test", scope=EVERYWHERE
    )
    assert outcome["outcome"] == "case_created"
    with db.sessions() as session:
        patient = session.scalars(select(Patient)).one()
        assert (patient.family_name, patient.given_name) == ("Müller", "Jörg")


def test_the_sample_emails_are_all_here() -> None:
    assert len(list(SAMPLES.glob("*.eml"))) == 10


_EMAILS = [path.read_bytes() for path in sorted(SAMPLES.glob("*.eml"))]
_INSERTS = st.sampled_from(
    [
        b"",
        b"\r\n",
        b"\r\n\r\n",
        b"Content-Type: multipart/mixed; boundary=x\r\n",
        b"Content-Transfer-Encoding: base64\r\n",
        b"=?utf-8?b?////?=",
        b"=\r\n",
        b"--",
        b"\xff\xfe",
        b"Patient: \r\nDOB: 31/02/1980\r\n",
    ]
)


@st.composite
def mutated_emails(draw: st.DrawFn) -> bytes:
    """A sample email with up to three byte ranges replaced by pieces of MIME, or cut short."""
    raw = draw(st.sampled_from(_EMAILS))
    for _ in range(draw(st.integers(1, 3))):
        start = draw(st.integers(0, len(raw)))
        end = min(len(raw), start + draw(st.integers(0, 200)))
        raw = raw[:start] + draw(_INSERTS | st.binary(max_size=20)) + raw[end:]
    if draw(st.booleans()):
        raw = raw[: draw(st.integers(0, len(raw)))]
    return raw


@examples(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=mutated_emails())
def test_a_mutated_sample_email_is_taken_or_refused_and_kept(channel: EmailChannel, raw: bytes) -> None:
    try:
        answer = channel.receive(raw)
    except EmailRefused as refused:
        assert refused.reason.startswith("email:")
    else:
        assert answer.body["outcome"] in ("exception", "case_created", "duplicate")


def test_an_address_header_the_standard_library_cannot_parse_is_read_as_sent(channel: EmailChannel) -> None:
    # Python's address parser raises AttributeError on this To: (a group where a mailbox should
    # be); the email got no answer but 451, again and again.
    raw = (
        b"From: gp@clinic.example\r\nTo:Content-Type: multipart/mixed; boundary=x\r\n <north@careops.example>"
        b"\r\nSubject: Referral\r\n\r\nPatient: Doe, Jane\r\n"
    )
    answer = channel.receive(raw)
    assert answer.body["outcome"] == "exception"
