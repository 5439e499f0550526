"""Every channel under random and mutated input, on SQLite and PostgreSQL: whatever arrives ends
as an accepted item, or as a documented refusal (ACK AE/AR, OperationOutcome, problem) with the
payload kept in quarantine byte for byte, or (MLLP, a broken frame) as a closed connection with
what was sent kept; never a 5xx, a hung connection or a dead listener. The partner form's
refusal is the page itself, with the submitter's values and a message for each field.

Each test ends by checking that the server still takes a valid referral.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from careops.api.app import create_app
from careops.db import Database
from careops.domain.models import IntakeItem
from careops.integrations.inbound import hl7v2
from careops.integrations.inbound.email_channel import EmailChannel, EmailRefused
from careops.integrations.inbound.hl7_channel import Hl7Channel
from careops.integrations.inbound.mllp import END_BLOCK, START_BLOCK, frame, start_mllp
from careops.orchestration.intake import CatalogueCache, IntakeRequest
from careops.settings import Settings
from tests.conftest import referral
from tests.integrations.test_fhir import json_values
from tests.integrations.test_hl7_channel import SAMPLES, msa, mutated_messages
from tests.web.test_referral_form import GOOD, token

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
HL7 = {"Content-Type": "application/hl7-v2"}
FHIR = {"Content-Type": "application/fhir+json"}
ORDER = (SAMPLES / "ORM-O01-01.hl7").read_bytes()


def kept(db: Database, sent: bytes) -> IntakeItem | None:
    """The quarantined item holding exactly these bytes, if there is one."""
    digest = hashlib.sha256(sent).hexdigest()
    with db.sessions() as session:
        return session.scalars(
            select(IntakeItem).where(IntakeItem.payload_sha256 == digest, IntakeItem.status == "quarantined")
        ).first()


def taken(db: Database, sent: bytes) -> bool:
    digest = hashlib.sha256(sent).hexdigest()
    with db.sessions() as session:
        return (
            session.scalars(select(IntakeItem.id).where(IntakeItem.payload_sha256 == digest)).first()
            is not None
        )


def still_serving(client: TestClient) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.post("/api/v1/referrals", json=referral()).status_code == 201


# -- HL7 v2 over HTTP ---------------------------------------------------------------------------

_SEPARATORS = st.sampled_from(list("|#!$%*;"))


@st.composite
def hl7_inputs(draw: st.DrawFn) -> bytes:
    """A mutated sample; any bytes at all; a sample with other delimiters; a huge segment."""
    kind = draw(st.sampled_from(["mutated", "bytes", "delimiters", "huge", "truncated"]))
    if kind == "mutated":
        return draw(mutated_messages())
    if kind == "bytes":
        return draw(st.binary(max_size=600))
    if kind == "delimiters":
        separator = draw(_SEPARATORS)
        return ORDER.replace(b"|", separator.encode())
    if kind == "huge":
        size = draw(st.sampled_from([70_000, 900_000, 1_100_000]))  # the last is over the 1 MiB limit
        return ORDER.rstrip(b"\r") + b"\rNTE|1||" + b"x" * size + b"\r"
    return ORDER[: draw(st.integers(0, len(ORDER)))]


@FUZZ
@given(sent=hl7_inputs())
def test_hl7_over_http_is_acknowledged_and_whatever_is_refused_is_kept(
    client: TestClient, db: Database, sent: bytes
) -> None:
    answer = client.post("/api/v1/hl7", content=sent, headers=HL7)
    assert answer.status_code in (200, 413), answer.text[:300]
    code = msa(answer.text)[0]
    assert code in ("AA", "AE", "AR")
    if code == "AA":  # the message is stored under the key a resend of it would be found by
        message = hl7v2.parse(sent)
        header = message.header
        key = IntakeRequest(
            sent, "", "hl7", "hl7", content_key=f"{header.sender}|{header.control_id}",
            content_digest=hl7v2.resend_digest(message.text),
        ).idempotency_key  # fmt: skip
        with db.sessions() as session:
            assert session.scalars(select(IntakeItem.id).where(IntakeItem.idempotency_key == key)).first()
    else:
        assert kept(db, sent) is not None, answer.text[:300]


def test_hl7_fuzzing_leaves_the_server_serving(client: TestClient) -> None:
    for sent in (b"\x00" * 100, b"MSH|" + bytes(range(256)), b"MSH|^~\\&|" + b"|" * 5000):
        assert client.post("/api/v1/hl7", content=sent, headers=HL7).status_code == 200
    still_serving(client)


# -- HL7 v2 over MLLP ---------------------------------------------------------------------------


def test_a_peer_that_stalls_inside_a_frame_is_cut_off_and_its_bytes_kept(
    settings: Settings, db: Database
) -> None:
    channel = Hl7Channel(db, settings, CatalogueCache(0))
    partial = START_BLOCK + ORDER[:120]

    async def scenario() -> tuple[bytes, list[str]]:
        server = await start_mllp(channel, "127.0.0.1", 0, 64 * 1024, frame_seconds=0.5)
        port = server.sockets[0].getsockname()[1]
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(partial)
            await writer.drain()
            closed = await asyncio.wait_for(reader.read(), timeout=10)  # the server ends it
            writer.close()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(START_BLOCK)  # a frame begun, nothing more (VT is no blank between frames)
            await writer.drain()
            closed += await asyncio.wait_for(reader.read(), timeout=10)
            writer.close()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            idle_then_sent = []
            await asyncio.sleep(1)  # idle between frames is fine: no frame was begun
            writer.write(frame(ORDER))
            await writer.drain()
            idle_then_sent.append((await reader.readuntil(b"\x1c\r"))[1:-2].decode())
            writer.close()
            return closed, idle_then_sent
        finally:
            server.close()

    closed, [ack] = asyncio.run(scenario())
    assert closed == b""
    item = kept(db, partial)  # as it came, start block and all
    assert item is not None and item.reasons == ["mllp:incomplete_frame"]
    assert msa(ack)[0] in ("AA", "AE")  # answered: the listener lives on


@settings(FUZZ, max_examples=25)
@given(chunks=st.lists(st.binary(min_size=1, max_size=200), min_size=1, max_size=6), cut=st.booleans())
def test_mllp_framing_of_any_bytes_is_answered_or_closed_never_hung(
    settings: Settings, db: Database, chunks: list[bytes], cut: bool
) -> None:
    channel = Hl7Channel(db, settings, CatalogueCache(60))

    async def scenario() -> bytes:
        server = await start_mllp(channel, "127.0.0.1", 0, 4096, frame_seconds=0.3)
        port = server.sockets[0].getsockname()[1]
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for chunk in chunks:
                writer.write(chunk)
            if cut:
                writer.write_eof()
            await writer.drain()
            try:  # an ACK per frame sent, or a close; a stall inside a frame ends within 0.3 s
                await asyncio.wait_for(reader.read(), timeout=3)
            except TimeoutError:  # still open: only right where the bytes sent end between frames
                last = b"".join(chunks).rpartition(END_BLOCK)[2]
                if cut or last.strip(b"\r\n\t "):
                    pytest.fail("the listener neither answered nor closed the connection")
            writer.close()
            return await _exchange_one(port)
        finally:
            server.close()

    assert msa(asyncio.run(scenario()).decode())[0] in ("AA", "AE")


async def _exchange_one(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(frame(ORDER))
    await writer.drain()
    ack = await asyncio.wait_for(reader.readuntil(b"\x1c\r"), timeout=10)
    writer.close()
    return ack[1:-2]


# -- FHIR R4 ------------------------------------------------------------------------------------


def _deeply_nested(resource: dict[str, Any], depth: int) -> bytes:
    """The resource with an extension nested ``depth`` deep (written as text: too deep for json)."""
    opening = '{"url": "http://x", "extension": [' * depth
    note = '"note": [{"text": "x", "extension": [' + opening + "]}" * depth + "]}]"
    return (json.dumps(resource)[:-1] + ", " + note + "}").encode()


@st.composite
def fhir_inputs(draw: st.DrawFn) -> tuple[str, bytes]:
    """Deep nesting, huge arrays, wrong types, references to nowhere, not JSON at all."""
    resource: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
    }
    kind = draw(st.sampled_from(["nested", "array", "types", "nowhere", "bytes", "bundle"]))
    if kind == "nested":
        return "/fhir/r4/ServiceRequest", _deeply_nested(resource, draw(st.integers(50, 3000)))
    if kind == "array":
        resource["identifier"] = [{"value": str(i)} for i in range(draw(st.sampled_from([1000, 60_000])))]
    elif kind == "types":
        resource[draw(st.sampled_from(["status", "intent", "subject", "code", "note", "_status"]))] = draw(
            json_values
        )
    elif kind == "nowhere":
        resource["subject"] = {
            "reference": draw(st.sampled_from(["#nope", "urn:uuid:" + str(uuid.uuid4()), "x"]))
        }
    elif kind == "bytes":
        return "/fhir/r4/ServiceRequest", draw(st.binary(max_size=300))
    else:
        entry = {
            "resource": resource,
            "request": {"method": draw(st.sampled_from(["POST", "GET", "DELETE"]))},
        }
        bundle = {
            "resourceType": "Bundle",
            "type": draw(st.sampled_from(["batch", "transaction"])),
            "entry": [entry],
        }
        return "/fhir/r4", json.dumps(bundle).encode()
    return "/fhir/r4/ServiceRequest", json.dumps(resource).encode()


@FUZZ
@given(sent=fhir_inputs())
def test_fhir_input_is_taken_or_refused_with_an_outcome_and_kept(
    client: TestClient, db: Database, sent: tuple[str, bytes]
) -> None:
    path, body = sent
    answer = client.post(path, content=body, headers=FHIR)
    assert answer.status_code in (200, 201, 400, 404, 413, 422), answer.text[:300]
    resource = answer.json()
    if answer.status_code >= 400:
        assert resource["resourceType"] == "OperationOutcome"
        assert kept(db, body) is not None
    else:
        assert resource["resourceType"] in ("ServiceRequest", "Bundle")


def test_fhir_fuzzing_leaves_the_server_serving(client: TestClient) -> None:
    for body in (b"[" * 100_000, b'{"resourceType": "ServiceRequest", "x": "' + b"\xff" * 10 + b'"}'):
        assert client.post("/fhir/r4/ServiceRequest", content=body, headers=FHIR).status_code == 400
    still_serving(client)


# -- email (RFC 5322 / MIME) --------------------------------------------------------------------


@st.composite
def emails(draw: st.DrawFn) -> bytes:
    """Malformed headers, nested multiparts, wrong charsets, large attachments."""
    message = EmailMessage()
    message["From"] = draw(st.sampled_from(["gp@clinic.example", "<<broken", "=?x?q?bad?=", ""]))
    message["To"] = draw(st.sampled_from(["north@careops.example", "", "undisclosed-recipients:;"]))
    message["Subject"] = draw(
        st.text(st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp")), max_size=40)
    )
    message["Message-ID"] = f"<{uuid.uuid4()}@clinic.example>"
    charset = draw(st.sampled_from(["utf-8", "latin-1", "no-such-charset", "utf-16"]))
    body = "Patient: Doe, Jane\nDOB: 12/04/1980\nService: XRAY-CHEST\n" + draw(st.text(max_size=200))
    message.set_content(body)
    raw = message.as_bytes().replace(b'charset="utf-8"', f'charset="{charset}"'.encode())
    depth = draw(st.integers(0, 40))
    for level in range(depth):  # parts inside parts
        boundary = f"b{level}"
        raw = (
            b"From: gp@clinic.example\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="
            + boundary.encode() + b"\r\n\r\n--" + boundary.encode() + b"\r\n" + raw.split(b"\n\n", 1)[-1]
            + b"\r\n--" + boundary.encode() + b"--\r\n"
        )  # fmt: skip
    if draw(st.booleans()):
        attachment = draw(st.sampled_from([b"%PDF-1.4 broken", b"\x00" * 2_000_000, bytes(range(256)) * 10]))
        raw += (
            b"\r\n--tail\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: binary\r\n\r\n"
            + attachment
        )
    return raw


@FUZZ
@given(raw=emails())
def test_an_email_of_any_shape_is_taken_or_refused_and_kept(
    settings: Settings, db: Database, raw: bytes
) -> None:
    channel = EmailChannel(db, settings, CatalogueCache(60))
    try:
        answer = channel.receive(raw)
    except EmailRefused as refused:
        assert refused.reason.startswith("email:")
        assert kept(db, raw) is not None
    else:
        assert answer.body["outcome"] in ("exception", "case_created", "duplicate")
        assert taken(db, raw)


# -- the partner form ---------------------------------------------------------------------------


@pytest.fixture
def form_client(settings: Settings, db: Database) -> Iterator[TestClient]:
    """An anonymous partner, not held back by the per-address limit (the fuzzer posts fast)."""
    unlimited = settings.model_copy(update={"form_submissions_per_minute": 1_000_000})
    with TestClient(create_app(unlimited, db), raise_server_exceptions=False) as client:
        yield client


_FORM_VALUES = st.one_of(
    st.text(max_size=50),
    st.sampled_from(
        ["", " ", "\x00", "31/02/1980", "1980-04-12", "+44 20 7946 0958", "XRAY-CHEST", "é" * 300]
    ),
)


@FUZZ
@given(
    values=st.dictionaries(st.sampled_from(sorted(GOOD)), _FORM_VALUES, max_size=len(GOOD)), big=st.booleans()
)
def test_a_form_post_of_any_values_is_taken_or_answered_with_its_messages(
    form_client: TestClient, db: Database, values: dict[str, str], big: bool
) -> None:
    client = form_client
    csrf = token(client.get("/refer/north").text)
    files = {"upload": ("letter.pdf", b"%PDF-1.4 " + b"x" * (11 * 2**20 if big else 100), "application/pdf")}
    answer = client.post("/refer/north", data={**GOOD, **values, "csrf_token": csrf}, files=files)
    assert answer.status_code in (200, 201, 413, 422), answer.text[:300]
    assert answer.headers["content-type"].startswith("text/html")
    if answer.status_code == 201:
        reference = re.search(r'id="reference">([0-9a-f]+)<', answer.text)
        assert reference is not None
        with db.sessions() as session:
            assert session.get(IntakeItem, reference.group(1)) is not None
