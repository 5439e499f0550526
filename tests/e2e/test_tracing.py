"""One trace from the HTTP request or the MLLP message through the intake transaction, the outbox
dispatch and the durable workflow's steps, as a real OTLP collector receives it from `careops
serve`; the correlation id rides on the spans, the problem answers and the response header."""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from careops.db import Database
from careops.domain.models import OutboxMessage
from tests.e2e.otlp import ReceivedSpan, otlp_receiver
from tests.e2e.test_crash_recovery import CAREOPS, cli, free_port, wait_for_health
from tests.e2e.test_phi_canary import _mllp, traced_demo

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
CHAIN = ("intake.transaction", "outbox.dispatch", "await_triage", "open_triage_overdue")


def _orm(control_id: str) -> bytes:
    segments = [
        f"MSH|^~\\&|LAB|GHH|CAREOPS|NORTH|20261201120000||ORM^O01|{control_id}|P|2.5",
        f"PID|1||MRN-{control_id}^^^GHH^MR||Doe^Jane||19710203|F",
        "ORC|NW|ORD-1",
        "OBR|1|ORD-1||XRAY-CHEST^Chest X-ray",
    ]
    return "\r".join(segments).encode()


def _trace_of(spans: list[ReceivedSpan], root: ReceivedSpan) -> dict[str, ReceivedSpan]:
    """The spans of ``root``'s trace, by name (the first of each name)."""
    found: dict[str, ReceivedSpan] = {}
    for span in spans:
        if span.trace_id == root.trace_id:
            found.setdefault(span.name, span)
    return found


def _ancestors(spans: list[ReceivedSpan], span: ReceivedSpan) -> list[str]:
    by_id = {s.span_id: s for s in spans}
    found = []
    while span.parent_span_id in by_id:
        span = by_id[span.parent_span_id]
        found.append(span.span_id)
    return found


def _complete(spans: list[ReceivedSpan], root_name: str) -> bool:
    roots = [s for s in spans if s.name == root_name and not s.parent_span_id]
    return any(set(CHAIN) <= set(_trace_of(spans, root)) for root in roots)


def _outbox_drained(database_url: str) -> None:
    """Wait until the outbox has nothing pending (the dispatcher hands a batch to one workflow,
    under the trace of its first event: the seed's, if the request's event joined that batch)."""
    db = Database(database_url)
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            with db.sessions() as session:
                pending = session.scalar(
                    select(func.count()).select_from(OutboxMessage).where(OutboxMessage.status == "pending")
                )
            if not pending:
                return
            time.sleep(0.1)
        raise AssertionError("the outbox was not drained")
    finally:
        db.dispose()


def test_one_trace_from_request_and_mllp_message_to_the_workflow_step(database_url: str) -> None:
    with otlp_receiver() as collector:
        env = traced_demo(database_url, collector)
        token = cli(env, "token", "create", "--name", "engine", "--all-scopes")
        port, mllp = free_port(), free_port()
        server = subprocess.Popen(
            [CAREOPS, "serve", "--port", str(port), "--workers", "1", "--mllp-port", str(mllp)],
            env=env, start_new_session=True,
        )  # fmt: skip
        try:
            base = f"http://127.0.0.1:{port}"
            wait_for_health(base)
            _outbox_drained(database_url)  # the demo's seeded cases' follow-ups are another trace
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/hl7-v2"}
            sent_id = f"trace-test-{uuid.uuid4().hex[:8]}"
            over_http = httpx.post(
                f"{base}/api/v1/hl7", content=_orm(uuid.uuid4().hex[:10]), headers=headers, timeout=30
            )
            refused = httpx.post(
                f"{base}/api/v1/referrals",
                json={"location": "north", "priority": "whenever"},
                headers={"Authorization": f"Bearer {token}", "X-Correlation-Id": sent_id},
                timeout=30,
            )
            spans = collector.wait_for(lambda s: _complete(s, "POST /api/v1/hl7"))
            acks = asyncio.run(_mllp(mllp, [_orm(mllp_control := uuid.uuid4().hex[:10])]))
            spans = collector.wait_for(lambda s: _complete(s, "MLLP message"))
        finally:
            server.terminate()
            server.wait(30)

    assert over_http.status_code == 200 and b"MSA|AA" in acks[0]
    http_root = next(s for s in spans if s.name == "POST /api/v1/hl7" and not s.parent_span_id)
    chain = _trace_of(spans, http_root)
    assert set(CHAIN) <= set(chain), sorted(chain)
    assert http_root.kind == "SPAN_KIND_SERVER"
    assert http_root.attributes["http.route"] == "/api/v1/hl7"
    assert http_root.attributes["http.response.status_code"] == 200
    assert chain["intake.transaction"].attributes["channel"] == "hl7"
    assert chain["intake.transaction"].attributes["outcome"] == "case_created"
    # request -> (FastAPI's own spans) -> intake -> dispatch -> workflow -> step
    assert http_root.span_id in _ancestors(spans, chain["intake.transaction"])
    assert chain["intake.transaction"].span_id in _ancestors(spans, chain["outbox.dispatch"])
    assert chain["await_triage"].parent_span_id == chain["outbox.dispatch"].span_id
    assert chain["open_triage_overdue"].parent_span_id == chain["await_triage"].span_id
    # HL7 messages are correlated by their control id (MSH-10) from the moment it is read
    assert chain["intake.transaction"].attributes["careops.correlation_id"]

    mllp_root = next(s for s in spans if s.name == "MLLP message")
    mllp_chain = _trace_of(spans, mllp_root)
    assert mllp_root.attributes["careops.correlation_id"] == mllp_control
    assert mllp_chain["intake.transaction"].attributes["careops.correlation_id"] == mllp_control

    # the caller's correlation id: in the problem, the response header and the request's span
    assert refused.status_code == 422
    assert refused.json()["correlation_id"] == sent_id == refused.headers["x-correlation-id"]
    assert any(
        s.attributes.get("careops.correlation_id") == sent_id for s in spans if s.kind == "SPAN_KIND_SERVER"
    )


def test_no_endpoint_no_spans_and_a_correlation_id_all_the_same(tmp_path: Path) -> None:
    """Without an endpoint nothing is exported, and every answer still names its correlation id."""
    from fastapi.testclient import TestClient

    from careops.api.app import create_app
    from careops.settings import Settings

    settings = Settings(database_url=f"sqlite:///{tmp_path / 'c.db'}")
    with TestClient(create_app(settings)) as client:
        answer = client.get("/api/v1/cases")
    assert answer.status_code == 401
    assert answer.json()["correlation_id"] == answer.headers["x-correlation-id"]
    assert len(answer.headers["x-correlation-id"]) == 32
