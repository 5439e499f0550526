"""The HL7 channel end to end: HTTP and MLLP over real sockets, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import threading
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import hl7
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from careops.db import Database
from careops.domain.models import ExceptionItem, IntakeItem, Patient, Referrer, Service, ServiceCase
from careops.errors import ConfigurationError
from careops.integrations.inbound.hl7_channel import Hl7Channel
from careops.integrations.inbound.mllp import END_BLOCK, START_BLOCK, frame, start_mllp, tls_context
from careops.orchestration.intake import CatalogueCache
from careops.settings import Settings

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "hl7"
HL7 = {"Content-Type": "application/hl7-v2"}


@pytest.fixture
def hl7_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"facility_locations": {"GHH": "north", "GHHRFacility": "north"}})


@pytest.fixture
def hl7_db(db: Database) -> Database:
    """The demo catalogue, plus the LOINC code and ordering provider of the ORM samples."""
    with db.transaction() as session:
        ct_head = session.scalars(select(Service).where(Service.code == "CT-HEAD")).one()
        ct_head.aliases = [*ct_head.aliases, "24725-4"]
        session.add(Referrer(organisation_id=ct_head.organisation_id, code="3850", name="Dr Jones"))
    return db


@pytest.fixture
def hl7_client(hl7_settings: Settings, hl7_db: Database, admin_token: str) -> TestClient:
    from careops.api.app import create_app

    client = TestClient(create_app(hl7_settings, hl7_db), raise_server_exceptions=False)
    client.headers["Authorization"] = f"Bearer {admin_token}"
    return client


def msa(ack_text: str) -> tuple[str, str, str]:
    ack = hl7.parse(ack_text.replace("\n", "\r"))
    segment = ack.segment("MSA")
    return str(segment(1)), str(segment(2)), str(segment(3)) if len(segment) > 3 else ""


def counts(db: Database) -> dict[str, int]:
    with db.sessions() as session:
        rows = session.execute(select(IntakeItem.status, func.count()).group_by(IntakeItem.status)).all()
        items = {str(status): int(n) for status, n in rows}
        items["cases"] = session.scalar(select(func.count()).select_from(ServiceCase)) or 0
        items["exceptions"] = session.scalar(select(func.count()).select_from(ExceptionItem)) or 0
        return items


def test_an_order_over_http_creates_one_case_and_a_resend_changes_nothing(
    hl7_client: TestClient, hl7_db: Database
) -> None:
    body = (SAMPLES / "ORM-O01-01.hl7").read_bytes()
    first = hl7_client.post("/api/v1/hl7", content=body, headers=HL7)
    assert first.status_code == 200
    assert first.headers["content-type"].startswith("application/hl7-v2")
    code, control_id, text = msa(first.text)
    assert (code, control_id) == ("AA", "MSG00018")
    assert text.startswith("case created: case ")
    again = hl7_client.post(
        "/api/v1/hl7", content=body.replace(b"\r", b"\n"), headers={"Content-Type": "text/plain"}
    )
    assert msa(again.text)[:2] == ("AA", "MSG00018")
    assert msa(again.text)[2] == text
    with hl7_db.sessions() as session:
        case = session.scalars(select(ServiceCase)).one()
        patient = session.get(Patient, case.patient_id)
        item = session.scalars(select(IntakeItem).where(IntakeItem.channel == "hl7")).one()
    assert patient is not None and (patient.mrn, patient.family_name, patient.given_name) == (
        "PATID1234",
        "Everyman",
        "Adam",
    )
    assert item.sender == "ORDApp|GHHSFacility^2.16.840.1.122848.1.30^ISO"
    assert item.raw_payload.startswith("MSH|")


def test_a_resend_with_a_renewed_time_stamp_is_the_same_message_but_a_reused_id_is_not(
    hl7_client: TestClient, hl7_db: Database
) -> None:
    """Engines may renew MSH-7 when they resend; an incomplete referral shows it best, because
    the case duplicate check would not catch a second exception item."""
    body = (SAMPLES / "REF-I12-01.hl7").read_bytes()
    first = msa(hl7_client.post("/api/v1/hl7", content=body, headers=HL7).text)
    restamped = body.replace(b"|202201251620+0000|", b"|202612010915+0000|", 1)
    assert restamped != body
    assert msa(hl7_client.post("/api/v1/hl7", content=restamped, headers=HL7).text) == first
    assert counts(hl7_db) == {"incomplete": 1, "cases": 0, "exceptions": 1}
    other = body.replace(b"EVERYMAN^ADAM", b"EVERYWOMAN^EVE", 1)  # the same MSH-10, another message
    assert msa(hl7_client.post("/api/v1/hl7", content=other, headers=HL7).text)[0] == "AA"
    assert counts(hl7_db)["exceptions"] == 2


def test_a_referral_with_unknown_codes_is_accepted_into_the_exception_queue(
    hl7_client: TestClient, hl7_db: Database
) -> None:
    answer = hl7_client.post("/api/v1/hl7", content=(SAMPLES / "REF-I12-01.hl7").read_bytes(), headers=HL7)
    code, _, text = msa(answer.text)
    assert code == "AA"
    assert "unknown_service_code" in text
    with hl7_db.sessions() as session:
        exception = session.scalars(select(ExceptionItem)).one()
    assert "unknown_service_code" in exception.reason_codes


def test_unsupported_and_malformed_messages_are_refused_and_kept(
    hl7_client: TestClient, hl7_db: Database
) -> None:
    unsupported = hl7_client.post(
        "/api/v1/hl7", content=(SAMPLES / "VXU-V04-01.hl7").read_bytes(), headers=HL7
    )
    assert unsupported.status_code == 200
    assert msa(unsupported.text)[0] == "AR"
    assert "immunisation update: not held by careops" in msa(unsupported.text)[2]
    assert "ERR|" in unsupported.text
    garbage = hl7_client.post("/api/v1/hl7", content=b"\x00\xffnot hl7", headers=HL7)
    assert msa(garbage.text)[0] == "AR", garbage.text
    assert counts(hl7_db).get("quarantined") == 2
    listed = hl7_client.get("/api/v1/quarantine").json()["items"]
    assert {item["channel"] for item in listed} == {"hl7"}
    assert any(item["reasons"] == ["hl7:unsupported_message_type:MSH-9"] for item in listed)


BATCH = (
    "FHS|^~\\&|LAB|GHH|CAREOPS|NORTH|20260101120000||||F-77\r"
    "BHS|^~\\&|LAB|GHH|CAREOPS|NORTH|20260101120000||||B-42\r"
    "MSH|^~\\&|LAB|GHH|CAREOPS|NORTH|20260101120000||ORM^O01|M-1|P|2.5.1\r"
    "PID|1||MRN-B1||DOE^JANE\r"
    "BTS|1\r"
    "FTS|1\r"
)


def test_a_batch_is_refused_with_ar_echoing_its_control_id_and_kept(
    hl7_client: TestClient, hl7_db: Database
) -> None:
    answer = hl7_client.post("/api/v1/hl7", content=BATCH.encode(), headers=HL7)
    code, control_id, text = msa(answer.text)
    assert (code, control_id) == ("AR", "F-77")
    assert "batches (FHS/BHS) are not accepted" in text
    ack = hl7.parse(answer.text)
    assert str(ack.segment("MSH")(3)) == "CAREOPS" and str(ack.segment("MSH")(5)) == "LAB"
    assert str(ack.segment("ERR")(2)) == "FHS^1^1"
    batch_only = BATCH.split("\r", 1)[1]  # BHS first, without the file header
    assert msa(hl7_client.post("/api/v1/hl7", content=batch_only.encode(), headers=HL7).text)[:2] == (
        "AR",
        "B-42",
    )
    assert counts(hl7_db) == {"quarantined": 2, "cases": 0, "exceptions": 0}
    [first, _] = hl7_client.get("/api/v1/quarantine").json()["items"]
    assert first["reasons"] == ["hl7:batch_not_supported"]


def test_a_message_without_the_patient_identifier_gets_ae_naming_pid_3(hl7_client: TestClient) -> None:
    text = "MSH|^~\\&|A|B|C|D|20260101||ORM^O01|X1|P|2.5.1\rPID|1||||DOE^JANE\rOBR|1|||71046\r"
    answer = hl7_client.post("/api/v1/hl7", content=text.encode(), headers=HL7)
    assert msa(answer.text)[0] == "AE"
    err = hl7.parse(answer.text).segment("ERR")
    assert str(err(2)) == "PID^1^3"


def test_http_refuses_other_media_types_and_callers_without_a_token(
    hl7_client: TestClient, hl7_db: Database
) -> None:
    body = (SAMPLES / "ORM-O01-01.hl7").read_bytes()
    refused = hl7_client.post("/api/v1/hl7", content=body, headers={"Content-Type": "application/json"})
    assert refused.status_code == 415 and msa(refused.text)[0] == "AR"
    with hl7_db.sessions() as session:  # kept for replay under the reason it was refused for
        kept = session.scalars(select(IntakeItem).where(IntakeItem.status == "quarantined")).one()
        assert kept.reasons == ["hl7:unsupported_media_type"] and kept.raw_payload == body.decode()
    anonymous = hl7_client.post("/api/v1/hl7", content=body, headers={**HL7, "Authorization": ""})
    assert anonymous.status_code == 401


def test_registration_then_appointment_schedules_the_case(hl7_client: TestClient, hl7_db: Database) -> None:
    adt = hl7_client.post("/api/v1/hl7", content=(SAMPLES / "ADT-A04-01.hl7").read_bytes(), headers=HL7)
    assert msa(adt.text)[0] == "AA"
    assert "patient recorded" in msa(adt.text)[2]
    order = hl7_client.post("/api/v1/hl7", content=(SAMPLES / "ORM-O01-01.hl7").read_bytes(), headers=HL7)
    assert msa(order.text)[0] == "AA"
    with hl7_db.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Patient)) == 1
        case = session.scalars(select(ServiceCase)).one()
    # CT head needs authorisation with no payer given: book only once it is ready to schedule.
    requested = hl7_client.post(f"/api/v1/cases/{case.id}/authorisations", json={"units": 1})
    approval = {"number": "AUTH-1", "valid_from": "2021-10-01", "valid_days": 365}
    approved = hl7_client.post(f"/api/v1/authorisations/{requested.json()['id']}/approve", json=approval)
    assert approved.status_code == 200, approved.text
    booked = hl7_client.post("/api/v1/hl7", content=(SAMPLES / "SIU-S12-01.hl7").read_bytes(), headers=HL7)
    assert msa(booked.text)[0] == "AA"
    assert case.id in msa(booked.text)[2]
    timeline = hl7_client.get(f"/api/v1/cases/{case.id}").json()
    assert timeline["status"] == "scheduled"
    assert "appointment.booked" in {event["type"] for event in timeline["timeline"]}
    [appointment] = timeline["appointments"]
    assert (appointment["source"], appointment["external_id"], appointment["status"]) == (
        "hl7",
        "36996",
        "confirmed",
    )
    cancelled = hl7_client.post("/api/v1/hl7", content=(SAMPLES / "SIU-S15-01.hl7").read_bytes(), headers=HL7)
    assert msa(cancelled.text)[0] == "AA"
    after = hl7_client.get(f"/api/v1/cases/{case.id}").json()
    assert after["status"] == "ready_to_schedule"  # free to be booked again
    assert [a["status"] for a in after["appointments"]] == ["cancelled"]


async def _exchange(port: int, payloads: list[bytes]) -> list[str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    acks = []
    for payload in payloads:
        writer.write(payload)
        await writer.drain()
        data = await reader.readuntil(END_BLOCK)
        assert data.startswith(START_BLOCK)
        acks.append(data[1:-2].decode())
    writer.close()
    return acks


def test_mllp_over_a_real_socket_with_concurrent_connections(
    hl7_settings: Settings, hl7_db: Database
) -> None:
    channel = Hl7Channel(hl7_db, hl7_settings, CatalogueCache(0))
    messages = [p.read_bytes() for p in sorted(SAMPLES.glob("*.hl7"))]
    malformed = [p.read_bytes() for p in sorted((SAMPLES / "malformed").iterdir())]

    async def scenario() -> list[list[str]]:
        server = await start_mllp(channel, "127.0.0.1", 0, 64 * 1024)
        port = server.sockets[0].getsockname()[1]
        try:
            framed = [frame(m) for m in messages]
            runs = await asyncio.gather(
                _exchange(port, framed[:15]),
                _exchange(port, framed[15:]),
                _exchange(port, [frame(m) for m in malformed]),
                _exchange(port, [b"junk-without-start" + END_BLOCK, frame(b"x" * 70_000)]),
            )
            # The listener still answers after all that.
            runs.append(await _exchange(port, [frame((SAMPLES / "ORM-O01-01.hl7").read_bytes())]))
            return runs
        finally:
            server.close()
            await server.wait_closed()

    runs = asyncio.run(scenario())
    codes = [msa(ack)[0] for ack in runs[0] + runs[1]]
    # Only the immunisation, pharmacy and problem-list samples are refused (their disposition).
    assert codes.count("AA") == 27 and codes.count("AR") == 3
    assert [msa(ack)[0] for ack in runs[2] + runs[3]] == ["AR"] * 8
    assert msa(runs[4][0])[0] == "AA"
    totals = counts(hl7_db)
    # Conservation: every message is an item: accepted, recorded, incomplete (exception), or
    # quarantined.
    assert totals.get("quarantined") == 3 + 8
    assert totals.get("recorded") == 2  # MDM^T02 and BAR^P01
    assert sum(v for k, v in totals.items() if k not in ("cases", "exceptions")) == 30 + 8


def test_closing_the_mllp_listener_ends_its_open_connections(
    hl7_settings: Settings, hl7_db: Database
) -> None:
    """An engine's idle connection is closed with the listener, and no connection thread outlives it."""
    channel = Hl7Channel(hl7_db, hl7_settings, CatalogueCache(0))
    order = frame((SAMPLES / "ORM-O01-01.hl7").read_bytes())

    async def scenario() -> tuple[bytes, bytes, list[str]]:
        server = await start_mllp(channel, "127.0.0.1", 0, 64 * 1024)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(order)
        ack = await reader.readuntil(END_BLOCK)
        server.close()
        await server.wait_closed()
        after = await asyncio.wait_for(reader.read(65536), 5)
        writer.close()
        return ack, after, [t.name for t in threading.enumerate() if t.name == "careops-mllp"]

    ack, after, threads = asyncio.run(scenario())
    assert b"MSA|AA|" in ack
    assert after == b""  # the listener closed the connection
    assert threads == []


def test_the_mllp_listener_takes_only_allowed_peers(hl7_settings: Settings, hl7_db: Database) -> None:
    channel = Hl7Channel(hl7_db, hl7_settings, CatalogueCache(0))
    order = frame((SAMPLES / "ORM-O01-01.hl7").read_bytes())

    async def send(allowed: list[IPv4Network]) -> bytes:
        server = await start_mllp(channel, "127.0.0.1", 0, 64 * 1024, allowed)
        port = server.sockets[0].getsockname()[1]
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(order)
            await writer.drain()
            try:
                answer = await reader.read(65536)
            except ConnectionResetError:  # closed with our frame unread: the kernel resets
                answer = b""
            writer.close()
            return answer
        finally:
            server.close()
            await server.wait_closed()

    assert asyncio.run(send([IPv4Network("10.0.0.0/8")])) == b""  # closed unread: nothing stored
    assert counts(hl7_db) == {"cases": 0, "exceptions": 0}
    assert b"MSA|AA|" in asyncio.run(send([IPv4Network("10.0.0.0/8"), IPv4Network("127.0.0.1/32")]))


def _certificate(
    name: str, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None, ca: bool = False
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, issuer_key = issuer or (subject, key)
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(IPv4Address("127.0.0.1"))]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256()), key


def _write_pem(path: Path, certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Path:
    path.write_bytes(
        certificate.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return path


def test_mllp_over_mutual_tls_takes_only_clients_with_a_certificate(
    hl7_settings: Settings, hl7_db: Database, tmp_path: Path
) -> None:
    """The interface engine's certificate is signed by the CA careops is told to trust; a client
    without one does not get through the handshake, and nothing is stored."""
    ca_certificate, ca_key = _certificate("careops test CA", None, ca=True)
    server = _write_pem(tmp_path / "server.pem", *_certificate("careops", (ca_certificate.subject, ca_key)))
    engine = _write_pem(tmp_path / "engine.pem", *_certificate("engine", (ca_certificate.subject, ca_key)))
    trusted = tmp_path / "ca.pem"
    trusted.write_bytes(ca_certificate.public_bytes(serialization.Encoding.PEM))
    channel = Hl7Channel(hl7_db, hl7_settings, CatalogueCache(0))
    order = frame((SAMPLES / "ORM-O01-01.hl7").read_bytes())

    async def send(client_certificate: Path | None) -> bytes:
        listener = await start_mllp(
            channel, "127.0.0.1", 0, 64 * 1024, tls=tls_context(server, server, trusted)
        )
        port = listener.sockets[0].getsockname()[1]
        client = ssl.create_default_context(cafile=str(trusted))
        if client_certificate is not None:
            client.load_cert_chain(client_certificate)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
            writer.write(order)
            await writer.drain()
            answer = await reader.readuntil(END_BLOCK)
            writer.close()
            return answer
        except (ssl.SSLError, ConnectionError, asyncio.IncompleteReadError):
            return b""
        finally:
            listener.close()
            await listener.wait_closed()

    assert asyncio.run(send(None)) == b""
    assert counts(hl7_db) == {"cases": 0, "exceptions": 0}
    assert b"MSA|AA|" in asyncio.run(send(engine))
    with pytest.raises(ConfigurationError, match="CAREOPS_MLLP_TLS_KEY"):
        tls_context(server, None, None)


def test_production_refuses_an_open_mllp_listener_without_allowed_peers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CAREOPS_MLLP_ALLOWED_PEERS", '["10.1.2.3", "192.168.0.0/24"]')
    production = Settings(
        mode="production",
        secret_key="s" * 40,
        database_url="postgresql+psycopg://postgres@127.0.0.1/careops",
        mllp_port=2575,
        mllp_host="0.0.0.0",
    )
    assert production.mllp_allowed_peers == [IPv4Network("10.1.2.3/32"), IPv4Network("192.168.0.0/24")]
    production.check_production(processes=3)
    with pytest.raises(ConfigurationError, match="CAREOPS_MLLP_ALLOWED_PEERS"):
        production.model_copy(update={"mllp_allowed_peers": []}).check_production(processes=3)
    production.model_copy(update={"mllp_allowed_peers": [], "mllp_host": "127.0.0.1"}).check_production(3)
    mutual_tls = {"mllp_allowed_peers": [], "mllp_tls_client_ca": Path("engines-ca.pem")}
    production.model_copy(update=mutual_tls).check_production(3)


def test_channel_metrics_are_exposed_without_phi(hl7_client: TestClient) -> None:
    hl7_client.post("/api/v1/hl7", content=(SAMPLES / "ORM-O01-01.hl7").read_bytes(), headers=HL7)
    hl7_client.post("/api/v1/hl7", content=b"garbage", headers=HL7)
    exposition = hl7_client.get("/metrics")
    assert exposition.status_code == 200
    text = exposition.text
    assert 'careops_channel_received_total{channel="hl7-http"}' in text
    assert 'careops_channel_quarantined_total{channel="hl7-http"}' in text
    assert 'careops_channel_latency_seconds_bucket{channel="hl7-http"' in text
    assert "EVERYMAN" not in text.upper() and "PATID1234" not in text
    anonymous = hl7_client.get("/metrics", headers={"Authorization": ""})
    assert anonymous.status_code == 401


def test_fuzzed_mllp_frames_never_stop_the_listener(hl7_settings: Settings, hl7_db: Database) -> None:
    import random

    channel = Hl7Channel(hl7_db, hl7_settings, CatalogueCache(0))
    rng = random.Random(7)
    pieces = [START_BLOCK, END_BLOCK, b"\x1c", b"\r", b"MSH|^~\\&|", b"|ORM^O01|", b"\x00", b"\xff\xfe"]
    frames = []
    for _ in range(40):
        junk = b"".join(
            rng.choice(pieces) if rng.random() < 0.3 else bytes([rng.randrange(256)])
            for _ in range(rng.randrange(1, 300))
        )
        frames.append(junk + END_BLOCK)

    async def scenario() -> list[str]:
        server = await start_mllp(channel, "127.0.0.1", 0, 64 * 1024)
        port = server.sockets[0].getsockname()[1]
        try:
            for junk in frames:  # each on its own connection; the peer may be cut off mid-way
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(junk)
                await writer.drain()
                writer.write_eof()
                while await reader.read(65536):
                    pass
                writer.close()
            return await _exchange(port, [frame((SAMPLES / "ORM-O01-01.hl7").read_bytes())])
        finally:
            server.close()
            await server.wait_closed()

    [ack] = asyncio.run(scenario())
    assert msa(ack)[0] == "AA"


_SAMPLE_TEXTS = [path.read_bytes().decode("latin-1") for path in sorted(SAMPLES.glob("*.hl7"))]
_FIELD_VALUES = st.one_of(
    st.sampled_from(["", "^", "~", "&", "\\", "^^^^MR", "A~B~", "\\F\\", "\\X0D\\", "\\E", "\\Zx\\"]),
    st.sampled_from(["19800230", "20261301", "1980", "99999999999999", "-1", "ZZ^I12", "ORM^O01", "2.9"]),
    st.text(alphabet="ab1 ^~&\\|.-", max_size=12),
)


@st.composite
def mutated_messages(draw: st.DrawFn) -> bytes:
    """A sample message with up to three fields replaced, segments dropped or repeated."""
    segments = draw(st.sampled_from(_SAMPLE_TEXTS)).split("\r")
    for _ in range(draw(st.integers(1, 3))):
        index = draw(st.integers(0, len(segments) - 1))
        fields = segments[index].split("|")
        action = draw(st.sampled_from(["field", "field", "drop", "repeat"]))
        if action == "field" and len(fields) > 2:
            fields[draw(st.integers(2, len(fields) - 1))] = draw(_FIELD_VALUES)
            segments[index] = "|".join(fields)
        elif action == "drop" and index > 0:
            del segments[index]
        elif action == "repeat" and index > 0:
            segments.insert(index, segments[index])
    return "\r".join(segments).encode("latin-1")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=mutated_messages())
def test_mutated_sample_messages_are_always_answered(
    hl7_settings: Settings, hl7_db: Database, raw: bytes
) -> None:
    channel = Hl7Channel(hl7_db, hl7_settings, CatalogueCache(60))
    result = channel.handle(raw, "http")
    assert result.code in ("AA", "AE", "AR")
    assert result.ack.startswith("MSH|") and f"MSA|{result.code}|" in result.ack
