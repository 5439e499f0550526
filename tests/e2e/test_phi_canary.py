"""The PHI canary: unmistakable patient data goes in through every channel of a real `careops
serve` (HTTP workers, embedded worker, MLLP, SMTP), valid and broken, beside the demo's traffic;
then every log line, the metrics, every span a real OTLP collector received, every error body,
every answer and export for a caller not entitled to PHI in clear, and the audit export are
scanned for it. Zero hits allowed. A caller
entitled to PHI does see it (the control that proves the canary was stored and the scan finds it).
"""

from __future__ import annotations

import asyncio
import json
import os
import smtplib
import subprocess
import time
import uuid
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest

from careops.demo.live import DEMO_MIX
from careops.demo.traffic import TrafficStats, simulate
from careops.integrations.inbound.mllp import frame
from tests.e2e.otlp import Collector, otlp_receiver
from tests.e2e.test_crash_recovery import CAREOPS, cli, free_port, wait_for_health

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
CANARY = "ZZCANARY"
GIVEN, FAMILY = f"{CANARY}GIVEN", f"{CANARY}FAMILY"
MRN, EMAIL = f"{CANARY}-MRN-4711", f"{CANARY.lower()}@patient.example"
NOTES = f"{CANARY} history of something only the care team may read"


def _referral(**patient: Any) -> dict[str, Any]:
    return {
        "location": "north",
        "service_code": "XRAY-CHEST",
        "patient": {"mrn": MRN, "given_name": GIVEN, "family_name": FAMILY, "birth_date": "1971-02-03",
                    "email": EMAIL, "phone": "020 7946 0999", **patient},
        "referrer": {"code": "GP-001"},
        "payer_code": "NHS",
        "member_id": f"{CANARY}-MEMBER-1",
        "clinical_notes": NOTES,
    }  # fmt: skip


def _hl7(control_id: str, pid_3: str = MRN, date: str = "19710203") -> bytes:
    segments = [
        f"MSH|^~\\&|LAB|GHH|CAREOPS|NORTH|20261201120000||ORM^O01|{control_id}|P|2.5",
        f"PID|1||{pid_3}^^^GHH^MR||{FAMILY}^{GIVEN}||{date}|F|||1 {CANARY} Street^^Leeds||020 7946 0999",
        "ORC|NW|ORD-1",
        f"OBR|1|ORD-1||XRAY-CHEST^Chest X-ray|||20261201||||||{CANARY} notes",
    ]
    return "\r".join(segments).encode()


def _fhir(birth_date: str = "1971-02-03") -> dict[str, Any]:
    patient = {"resourceType": "Patient", "id": "p1", "identifier": [{"value": MRN}],
               "name": [{"family": FAMILY, "given": [GIVEN]}], "birthDate": birth_date}  # fmt: skip
    return {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "contained": [patient],
        "code": {"coding": [{"code": "XRAY-CHEST"}]},
        "subject": {"reference": "#p1", "display": f"{GIVEN} {FAMILY}"},
        "locationReference": [{"display": "north"}],
        "note": [{"text": NOTES}],
    }


def _email() -> bytes:
    message = EmailMessage()
    message["From"] = "gp@clinic.example"
    message["To"] = "north@referrals.example"
    message["Subject"] = f"Referral for {GIVEN} {FAMILY}"
    message.set_content(
        f"Patient: {FAMILY}, {GIVEN}\nDOB: 03/02/1971\nMRN: {MRN}\nService: XRAY-CHEST\n{NOTES}\n"
    )
    return bytes(message)


async def _mllp(port: int, payloads: list[bytes]) -> list[bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answers = []
    for payload in payloads:
        writer.write(frame(payload))
        await writer.drain()
        answers.append(await reader.readuntil(b"\x1c\r"))
    writer.close()
    return answers


def _hits(text: str | bytes) -> int:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return text.upper().count(CANARY)


def test_no_phi_in_logs_metrics_spans_errors_masked_answers_or_exports(
    database_url: str, tmp_path: Path
) -> None:
    with otlp_receiver() as collector:
        _canary_run(database_url, tmp_path, collector)


def traced_demo(database_url: str, collector: Collector) -> dict[str, str]:
    """The environment of a migrated demo database whose triage deadline passes within a second,
    GHH's messages going to north, and spans going to ``collector`` five times a second."""
    env = {
        **os.environ,
        "CAREOPS_DATABASE_URL": database_url,
        "CAREOPS_TRIAGE_TIMEOUT_SECONDS": "1",
        "CAREOPS_FACILITY_LOCATIONS": '{"GHH": "north"}',
        "CAREOPS_OTLP_TRACES_ENDPOINT": collector.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    cli(env, "migrate")
    cli(env, "seed", "--demo")
    return env


def _canary_run(database_url: str, tmp_path: Path, collector: Collector) -> None:
    env = traced_demo(database_url, collector)
    masked = cli(env, "token", "create", "--name", "ops", "--all-scopes")  # admin, but no phi:read
    entitled = cli(env, "token", "create", "--name", "engine", "--scopes", "cases:read,phi:read")
    port, mllp, smtp = free_port(), free_port(), free_port()
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [CAREOPS, "serve", "--port", str(port), "--workers", "1", "--mllp-port", str(mllp),
             "--smtp-port", str(smtp)],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            base = f"http://127.0.0.1:{port}"
            wait_for_health(base)
            errors, masked_answers = _traffic(base, masked, mllp, smtp)
            stats = TrafficStats()  # the demo's own traffic alongside, valid and broken
            deadline = time.monotonic() + 3
            asyncio.run(simulate(base, masked, stats, rate_per_second=20, mix=DEMO_MIX,
                                 stop=lambda: time.monotonic() > deadline, seed=7))  # fmt: skip
            time.sleep(2.5)  # the triage deadline passes: the worker opens its exceptions
            with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {masked}"}) as api:
                metrics = api.get("/metrics").text
                masked_answers += [api.get(path).text for path in _masked_reads(api)]
            control = httpx.get(
                f"{base}/api/v1/cases", headers={"Authorization": f"Bearer {entitled}"}, params={"limit": 200}
            ).text
        finally:
            server.terminate()
            server.wait(30)
    export = tmp_path / "audit.jsonl"
    cli(env, "audit", "seal")
    cli(env, "audit", "export", "--format", "jsonl", "--output", str(export))

    assert stats.sent >= 20 and stats.errors == 0
    assert _hits(control) >= 3, "the entitled caller must see the canary: else this test proves nothing"
    assert [e for e in errors if _hits(e)] == []
    assert [a for a in masked_answers if _hits(a)] == []
    assert _hits(metrics) == 0
    assert _hits(export.read_text()) == 0 and export.stat().st_size > 0
    logs = log_path.read_text()
    assert [line for line in logs.splitlines() if _hits(line)] == []
    spans = collector.spans
    assert {"intake.transaction", "MLLP message", "open_triage_overdue"} <= {s.name for s in spans}
    assert [span.raw for span in spans if _hits(span.raw)] == []


def _traffic(base: str, token: str, mllp: int, smtp: int) -> tuple[list[str], list[str]]:
    """Canary traffic, valid and broken; returns the error bodies and the masked answers."""
    errors: list[str] = []
    answers: list[str] = []
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, headers=headers, timeout=30) as api:
        for body in (_referral(), _referral(birth_date=None)):
            answers.append(api.post("/api/v1/referrals", json=body).text)
        broken = [
            api.post("/api/v1/referrals", json=_referral(birth_date=f"{CANARY}-not-a-date")),
            api.post("/api/v1/referrals", json={**_referral(), "priority": CANARY}),
            api.post(
                "/api/v1/referrals",
                content=f'{{"patient": "{CANARY}'.encode(),
                headers={"Content-Type": "application/json"},
            ),
            api.post(
                "/api/v1/referrals",
                content=(CANARY * 200_000).encode(),
                headers={"Content-Type": "application/json"},
            ),
            api.post(
                "/api/v1/hl7",
                content=_hl7(uuid.uuid4().hex[:10], date=f"{CANARY}"),
                headers={"Content-Type": "application/hl7-v2"},
            ),
            api.post(
                "/api/v1/hl7",
                content=_hl7(uuid.uuid4().hex[:10], pid_3=""),
                headers={"Content-Type": "application/hl7-v2"},
            ),
            api.post(
                "/api/v1/hl7", content=f"NOT HL7 {CANARY}".encode(), headers={"Content-Type": "text/plain"}
            ),
            api.post(
                "/fhir/r4/ServiceRequest",
                json=_fhir(birth_date=CANARY),
                headers={"Content-Type": "application/fhir+json"},
            ),
            api.post(
                "/fhir/r4/ServiceRequest",
                content=f'{{"resourceType": "{CANARY}"'.encode(),
                headers={"Content-Type": "application/fhir+json"},
            ),
            api.post(
                "/fhir/r4/Patient",
                json={"resourceType": "Patient", "name": [{"family": CANARY}], "gender": CANARY},
                headers={"Content-Type": "application/fhir+json"},
            ),
        ]
        errors += [r.text for r in broken]
        assert sum(r.status_code >= 400 for r in broken) >= 6
        answers.append(api.post("/api/v1/hl7", content=_hl7(uuid.uuid4().hex[:10]),
                                headers={"Content-Type": "application/hl7-v2"}).text)  # fmt: skip
        created = api.post(
            "/fhir/r4/ServiceRequest", json=_fhir(), headers={"Content-Type": "application/fhir+json"}
        )
        assert created.status_code == 201, created.text
        answers.append(api.get(f"/fhir/r4/{created.headers['location']}").text)
        errors.append(api.post("/console/login", data={"username": CANARY, "password": CANARY}).text)
    acks = asyncio.run(_mllp(mllp, [_hl7(uuid.uuid4().hex[:10]), _hl7(uuid.uuid4().hex[:10], date=CANARY)]))
    errors += [a.decode() for a in acks]
    with smtplib.SMTP("127.0.0.1", smtp, timeout=30) as mail:
        mail.sendmail("gp@clinic.example", ["north@referrals.example"], _email())
    return errors, answers


def _masked_reads(api: httpx.Client) -> list[str]:
    """Every read and export a caller without phi:read can make of what the traffic left behind."""
    paths = ["/api/v1/cases?limit=200", "/api/v1/cases/export", "/api/v1/exceptions?limit=200",
             "/api/v1/quarantine?limit=200"]  # fmt: skip
    for case in api.get("/api/v1/cases", params={"limit": 200}).json()["items"]:
        paths.append(f"/api/v1/cases/{case['id']}")
    for item in api.get("/api/v1/exceptions", params={"limit": 200}).json()["items"]:
        paths.append(f"/api/v1/exceptions/{item['id']}")
        if item["intake_item_id"]:
            paths.append(f"/api/v1/intake/{item['intake_item_id']}/documents")
    for item in api.get("/api/v1/quarantine", params={"limit": 200}).json()["items"]:
        paths.append(f"/api/v1/quarantine/{item['id']}")
    assert len(paths) > 10
    return paths


def test_the_canary_scan_itself_finds_what_it_looks_for() -> None:
    assert _hits(json.dumps(_referral())) > 0 and _hits(b"zzcanary") == 1
