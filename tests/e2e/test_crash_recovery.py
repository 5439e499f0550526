"""Real processes: `careops serve` under load, kill -9, restart; nothing lost, nothing doubled."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from careops.db import Database
from careops.domain.models import ExceptionItem, IntakeItem, OutboxMessage, Patient, ServiceCase
from tests.conftest import referral

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
CAREOPS = str(Path(sys.executable).parent / "careops")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_health(base_url: str, seconds: float = 30) -> None:
    """Return once ``/healthz`` answers 200; fail the test if it does not within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError("server did not start")


class Server:
    def __init__(self, env: dict[str, str], port: int) -> None:
        self.env, self.port = env, port
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [CAREOPS, "serve", "--port", str(self.port)], env=self.env, start_new_session=True
        )
        wait_for_health(f"http://127.0.0.1:{self.port}")

    def kill_everything(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(20)


def cli(env: dict[str, str], *args: str) -> str:
    return subprocess.run(
        [CAREOPS, *args], env=env, check=True, capture_output=True, text=True
    ).stdout.strip()


def _cases(database_url: str) -> int:
    db = Database(database_url)
    with db.sessions() as session:
        count = session.scalar(select(func.count()).select_from(ServiceCase)) or 0
    db.dispose()
    return count


def test_kill_9_under_load_loses_nothing_and_doubles_nothing(database_url: str, tmp_path: Path) -> None:
    env = {**os.environ, "CAREOPS_DATABASE_URL": database_url, "CAREOPS_TRIAGE_TIMEOUT_SECONDS": "4"}
    cli(env, "migrate")
    cli(env, "seed", "--demo")
    seeded = _cases(database_url)  # the demo's home-care patients, each with a case
    token = cli(env, "token", "create", "--name", "load", "--all-scopes")
    server = Server(env, free_port())
    server.start()
    sent: dict[str, tuple[bytes, int | None]] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def post(client: httpx.Client, key: str, body: bytes) -> int | None:
        try:
            response = client.post("/api/v1/referrals", content=body, headers={"Idempotency-Key": key})
            return response.status_code
        except httpx.HTTPError:
            return None

    def load() -> None:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", headers=headers, timeout=5) as client:
            while not stop.is_set():
                key, body = uuid.uuid4().hex, json.dumps(referral()).encode()
                with lock:
                    sent[key] = (body, None)
                status = post(client, key, body)
                with lock:
                    sent[key] = (body, status)

    threads = [threading.Thread(target=load) for _ in range(4)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(3)
        server.kill_everything()
        stop.set()
        for thread in threads:
            thread.join(10)
        answered = {k for k, (_, status) in sent.items() if status is not None}
        assert answered and {sent[k][1] for k in answered} == {201}
        server.start()
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", headers=headers, timeout=10) as client:
            for key, (body, status) in list(sent.items()):
                if status is None:
                    assert post(client, key, body) == 201
        db = Database(database_url)
        with db.sessions() as session:
            cases_per_patient = session.execute(
                select(Patient.mrn_index, func.count(ServiceCase.id))  # MRNs are stored encrypted
                .join(ServiceCase, ServiceCase.patient_id == Patient.id)
                .group_by(Patient.mrn_index)
            ).all()
            assert len(cases_per_patient) == len(sent) + seeded
            assert {count for _, count in cases_per_patient} == {1}
            keyed = (
                select(func.count()).select_from(IntakeItem).where(IntakeItem.idempotency_key.is_not(None))
            )
            assert session.scalar(keyed) == len(sent)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with db.sessions() as session:
                overdue = session.scalar(
                    select(func.count()).select_from(ExceptionItem).where(ExceptionItem.queue == "triage")
                )
                pending = session.scalar(
                    select(func.count())
                    .select_from(OutboxMessage)
                    .where(OutboxMessage.status != "dispatched")
                )
            if overdue == len(sent) + seeded and pending == 0:
                break
            time.sleep(0.5)
        assert (overdue, pending) == (len(sent) + seeded, 0)
        time.sleep(2)
        with db.sessions() as session:
            per_case = session.execute(
                select(ExceptionItem.case_id, func.count())
                .where(ExceptionItem.queue == "triage")
                .group_by(ExceptionItem.case_id)
            ).all()
        assert len(per_case) == len(sent) + seeded and {count for _, count in per_case} == {1}
        db.dispose()
    finally:
        stop.set()
        server.stop()
