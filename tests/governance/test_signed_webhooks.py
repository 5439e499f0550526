"""Signed webhooks: inbound referrals verified (body, age, replay, rotation), outbound bodies signed
so that a receiver with nothing but the documented algorithm verifies them."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from careops.db import Database
from careops.domain.models import ConnectorSecret, utcnow
from careops.governance.signing import create_connector, rotate_secret, signed_headers
from careops.settings import Settings
from tests.conftest import referral

URL = "/api/v1/webhooks/partner/referrals"


def _post(client: TestClient, body: bytes, headers: dict[str, str]) -> Any:
    return client.post(
        URL, content=body, headers={**headers, "Content-Type": "application/json", "Authorization": ""}
    )


def test_a_signed_referral_is_taken_once_and_every_bad_signature_is_refused(
    client: TestClient, db: Database
) -> None:
    secret = create_connector(db, "partner", "inbound", None, actor="test")
    body = json.dumps(referral()).encode()
    headers = signed_headers([secret], body)
    taken = _post(client, body, headers)
    assert taken.status_code == 201, taken.text
    replayed = _post(client, body, headers)
    assert replayed.status_code == 401 and "replay" in replayed.json()["detail"]
    other = json.dumps(referral()).encode()
    assert _post(client, other + b" ", signed_headers([secret], other)).status_code == 401  # body changed
    assert _post(client, other, signed_headers(["whsec_wrong"], other)).status_code == 401
    assert _post(client, other, signed_headers([secret], other, now=time.time() - 3600)).status_code == 401
    assert _post(client, other, {}).status_code == 401
    unknown = client.post(
        "/api/v1/webhooks/nobody/referrals", content=other, headers=signed_headers([secret], other)
    )
    assert unknown.status_code == 401
    assert _post(client, other, signed_headers([secret], other)).status_code == 201


def test_a_rotated_secret_overlaps_then_ends(client: TestClient, db: Database) -> None:
    old = create_connector(db, "partner", "inbound", None, actor="test")
    new = rotate_secret(db, "partner", dt.timedelta(hours=1), actor="test")
    for secret in (old, new):
        body = json.dumps(referral()).encode()
        assert _post(client, body, signed_headers([secret], body)).status_code == 201
    with db.transaction() as session:
        session.execute(
            update(ConnectorSecret).where(ConnectorSecret.expires_at.is_not(None)).values(expires_at=utcnow())
        )
    body = json.dumps(referral()).encode()
    assert _post(client, body, signed_headers([old], body)).status_code == 401
    assert _post(client, body, signed_headers([new], body)).status_code == 201


def test_a_signed_but_broken_body_is_kept_in_quarantine(client: TestClient, db: Database) -> None:
    secret = create_connector(db, "partner", "inbound", None, actor="test")
    body = b'{"location": "north", "patient": '
    refused = _post(client, body, signed_headers([secret], body))
    assert refused.status_code == 422
    kept = client.get(f"/api/v1/quarantine/{refused.json()['quarantine_id']}").json()
    assert kept["channel"] == "webhook" and kept["raw_payload"] == body.decode()


class _Receiver(BaseHTTPRequestHandler):
    received: list[tuple[dict[str, str], bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    _Receiver.received = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hooks"
    server.shutdown()


def _verify_as_a_receiver_would(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The documented algorithm, written without careops."""
    timestamp = headers["x-careops-timestamp"]
    expected = "v1=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return expected in [part.strip() for part in headers["x-careops-signature"].split(",")]


def test_outbound_pings_are_signed_with_every_live_secret(
    db: Database, settings: Settings, receiver: str
) -> None:
    old = create_connector(db, "billing", "outbound", receiver, actor="test")
    env = {**os.environ, "CAREOPS_DATABASE_URL": settings.database_url}
    careops = str(Path(sys.executable).parent / "careops")
    ping = subprocess.run(
        [careops, "connector", "ping", "billing"], env=env, capture_output=True, text=True, timeout=60
    )
    assert ping.returncode == 0, ping.stderr
    new = rotate_secret(db, "billing", dt.timedelta(hours=1), actor="test")
    assert subprocess.run([careops, "connector", "ping", "billing"], env=env, timeout=60).returncode == 0
    (first_headers, first_body), (second_headers, second_body) = _Receiver.received
    assert json.loads(first_body) == {"type": "ping", "connector": "billing"}
    assert _verify_as_a_receiver_would(old, first_headers, first_body)
    assert not _verify_as_a_receiver_would(new, first_headers, first_body)
    assert _verify_as_a_receiver_would(old, second_headers, second_body)
    assert _verify_as_a_receiver_would(new, second_headers, second_body)
    listed = subprocess.run(
        [careops, "connector", "list"], env=env, capture_output=True, text=True, timeout=60
    )
    assert "billing" in listed.stdout and "live secrets: 2" in listed.stdout
    assert old not in listed.stdout + listed.stderr


def test_cases_sent_to_a_connector_are_masked_as_for_its_role(
    client: TestClient, db: Database, settings: Settings, receiver: str
) -> None:
    case_id = client.post("/api/v1/referrals", json=referral()).json()["case_id"]
    billing = create_connector(db, "billing", "outbound", receiver, actor="test", sees_as="finance")
    create_connector(db, "dashboards", "outbound", receiver, actor="test", sees_as="operations_manager")
    env = {**os.environ, "CAREOPS_DATABASE_URL": settings.database_url}
    careops = str(Path(sys.executable).parent / "careops")
    for name in ("billing", "dashboards"):
        command = [careops, "connector", "send-case", name, case_id]
        sent = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        assert sent.returncode == 0, sent.stderr
    (billing_headers, billing_body), (_, dashboards_body) = _Receiver.received
    assert _verify_as_a_receiver_would(billing, billing_headers, billing_body)
    for_billing = json.loads(billing_body)["case"]
    for_dashboards = json.loads(dashboards_body)["case"]
    assert for_billing["member_id"] == "943 476 5919" and for_billing["patient"]["given_name"] == "Alex"
    assert for_billing["patient"]["birth_date"] == "1980"
    assert for_dashboards["member_id"] is None and for_dashboards["patient"]["given_name"] == "A****"
    assert for_dashboards["patient"]["phone"] is None and "Alex" not in dashboards_body.decode()
