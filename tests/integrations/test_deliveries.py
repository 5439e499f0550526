"""Deliveries to outbound connectors on SQLite and PostgreSQL, against a real HTTP receiver on
loopback that fails on purpose (500s, a closed connection, an answer after the timeout, a target
down for a while) and a real SMTP server (aiosmtpd): every delivery arrives, is taken once by its
idempotency key, carries only its declared fields; the breaker stops hammering a dead target; dead
letters are replayed once; a connector that keeps order gets a case's events in order."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from careops.db import Database
from careops.domain.deliveries import ConnectorBreaker, Delivery
from careops.domain.models import BusinessEvent
from careops.governance.audit import seal_all
from careops.governance.signing import create_connector
from careops.integrations.outbound.delivery import Deliverer
from careops.integrations.outbound.subscriptions import SubscriptionError, load_text
from careops.orchestration.deliveries import plan
from careops.settings import Settings
from tests.conftest import referral
from tests.e2e.test_crash_recovery import free_port


class Receiver(BaseHTTPRequestHandler):
    """Answers as ``script`` says for each request (by its number): ok, 500, close, slow."""

    script: Callable[[int], str] = staticmethod(lambda n: "ok")
    requests: list[tuple[str, dict[str, Any]]] = []
    lock = threading.Lock()

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.lock:
            n = len(self.requests)
            self.requests.append((self.headers["Idempotency-Key"], body))
        what = self.script(n)
        if what == "close":
            self.close_connection = True
            self.connection.close()
            return
        if what == "slow":
            time.sleep(1.0)
        self.send_response(500 if what == "500" else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    Receiver.requests, Receiver.script = [], staticmethod(lambda n: "ok")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/in"
    server.shutdown()


def subscribe(db: Database, url: str, **extra: str) -> Deliverer:
    create_connector(db, "billing", "outbound", url, actor="test")
    text = f"""
connectors:
  - name: billing
    kind: webhook
    events: [case.created]
    fields: [service, status]
    retry: {{attempts: {extra.get("attempts", 6)}, first: 0s, longest: 0s}}
    breaker: {{failures: {extra.get("failures", 50)}, open_for: 1h}}
    ordered: {extra.get("ordered", "false")}
"""
    deliverer = Deliverer(db, load_text(text), timeout=0.5)
    plan(db, deliverer.subscriptions.values())  # a first start reads on from now
    return deliverer


def cases(client: TestClient, db: Database, settings: Settings, count: int) -> list[str]:
    made = [client.post("/api/v1/referrals", json=referral()).json()["case_id"] for _ in range(count)]
    seal_all(db, settings.secret_key)
    return made


def drain(deliverer: Deliverer, rounds: int = 40) -> None:
    for _ in range(rounds):
        deliverer.run_once()


def statuses(db: Database) -> dict[str, int]:
    with db.sessions() as session:
        found: dict[str, int] = {}
        for status in session.scalars(select(Delivery.status)):
            found[status] = found.get(status, 0) + 1
        return found


def test_every_delivery_arrives_once_through_failures_with_only_its_fields(
    client: TestClient, db: Database, settings: Settings, receiver: str
) -> None:
    deliverer = subscribe(db, receiver)
    faults = {0: "500", 1: "close", 2: "slow", 3: "500"}
    Receiver.script = staticmethod(lambda n: faults.get(n, "ok"))
    made = cases(client, db, settings, 5)
    drain(deliverer)
    assert statuses(db) == {"delivered": 5}
    keys = {key for key, _ in Receiver.requests}
    with db.sessions() as session:
        ids = set(session.scalars(select(Delivery.id)))
    assert keys == ids  # each delivery taken under its own key; retries repeat the key
    bodies = {key: body for key, body in Receiver.requests}
    assert {b["event"]["case_id"] for b in bodies.values()} == set(made)
    assert all(set(b["data"]) == {"service", "status"} for b in bodies.values())  # not intake_item_id
    assert all(b["delivery_id"] == key for key, b in bodies.items())
    with db.sessions() as session:
        kinds = [
            e
            for e in session.scalars(select(BusinessEvent.type).where(BusinessEvent.type.like("delivery.%")))
        ]
    assert kinds.count("delivery.succeeded") == 5 and kinds.count("delivery.failed") >= 3


def test_the_breaker_stops_a_dead_target_and_a_probe_reopens_it(
    client: TestClient, db: Database, settings: Settings, receiver: str
) -> None:
    deliverer = subscribe(db, receiver, failures="2", attempts="50")
    Receiver.script = staticmethod(lambda n: "500")
    cases(client, db, settings, 6)
    deliverer.run_once(limit=2)  # two failures open the breaker
    drain(deliverer, 5)
    assert len(Receiver.requests) == 2  # nothing more while it is open
    with db.transaction() as session:
        session.execute(update(ConnectorBreaker).values(open_until=dt.datetime(2000, 1, 1, tzinfo=dt.UTC)))
    Receiver.script = staticmethod(lambda n: "ok")
    deliverer.run_once()  # half open: one probe
    assert len(Receiver.requests) == 3
    drain(deliverer)
    assert statuses(db) == {"delivered": 6}
    with db.sessions() as session:
        assert session.get(ConnectorBreaker, "billing").state == "closed"  # type: ignore[union-attr]


def test_dead_letters_are_replayed_once(
    client: TestClient, db: Database, settings: Settings, receiver: str, admin_token: str
) -> None:
    deliverer = subscribe(db, receiver, attempts="2")
    Receiver.script = staticmethod(lambda n: "500")
    cases(client, db, settings, 2)
    drain(deliverer, 5)
    assert statuses(db) == {"dead": 2}
    dead = client.get("/api/v1/deliveries", params={"status": "dead"}).json()["items"]
    assert len(dead) == 2 and dead[0]["last_error"] == "billing answered 500" and dead[0]["attempts"] == 2
    Receiver.script = staticmethod(lambda n: "ok")
    one = client.post(f"/api/v1/deliveries/{dead[0]['id']}/replay", json={})
    assert one.status_code == 200 and one.json() == {"replayed": 1}
    again = client.post(f"/api/v1/deliveries/{dead[0]['id']}/replay", json={})
    assert again.status_code == 409
    rest = client.post("/api/v1/delivery-replays", json={"connector": "billing"})
    assert rest.json() == {"replayed": 1}
    before = len(Receiver.requests)
    drain(deliverer)
    assert statuses(db) == {"delivered": 2} and len(Receiver.requests) == before + 2
    health = client.get("/api/v1/connectors/health").json()["items"]
    assert health == []  # no connectors file in these settings: nothing subscribed to report


def test_a_connector_that_keeps_order_gets_a_cases_events_in_order(
    client: TestClient, db: Database, settings: Settings, receiver: str
) -> None:
    text = """
connectors:
  - name: billing
    kind: webhook
    events: [case.created, case.transitioned]
    fields: [to]
    retry: {attempts: 9, first: 0s, longest: 0s}
    ordered: true
"""
    create_connector(db, "billing", "outbound", receiver, actor="test")
    deliverer = Deliverer(db, load_text(text), timeout=0.5)
    plan(db, deliverer.subscriptions.values())
    Receiver.script = staticmethod(lambda n: "500" if n < 2 else "ok")
    case_id = client.post("/api/v1/referrals", json=referral()).json()["case_id"]
    moved = client.post(
        f"/api/v1/cases/{case_id}/transitions",
        json={"action": "hold", "reason_code": "waiting_for_documents"},
    )
    assert moved.status_code == 200, moved.text
    seal_all(db, settings.secret_key)
    drain(deliverer)
    types = [body["event"]["type"] for _, body in Receiver.requests]
    assert types == ["case.created", "case.created", "case.created", "case.transitioned"]


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope.original_content)
        return "250 taken"


def test_an_email_connector_sends_the_declared_fields(
    client: TestClient, db: Database, settings: Settings
) -> None:
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        text = f"""
connectors:
  - name: ops-mail
    kind: email
    events: [case.created]
    fields: [service]
    email: {{host: 127.0.0.1, port: {port}, sender: careops@example.org, to: [ops@example.org]}}
"""
        deliverer = Deliverer(db, load_text(text), timeout=2)
        plan(db, deliverer.subscriptions.values())
        cases(client, db, settings, 1)
        drain(deliverer, 3)
    finally:
        controller.stop()
    [message] = mailbox.messages
    with db.sessions() as session:
        delivery_id = session.scalars(select(Delivery.id)).one()
    assert f"Message-ID: <{delivery_id}@careops>".encode() in message
    assert b"service: XRAY-CHEST" in message and b"intake_item_id" not in message


def test_the_subscriptions_file_says_what_is_wrong_and_where() -> None:
    with pytest.raises(SubscriptionError, match=r":5 connectors\[0\]\.events: no event 'case.made'"):
        load_text("connectors:\n  - name: a\n    kind: webhook\n    events:\n      - case.made\n")
    with pytest.raises(SubscriptionError, match="delivery events are not delivered"):
        load_text("connectors:\n  - {name: a, kind: webhook, events: [delivery.failed]}\n")
    with pytest.raises(SubscriptionError, match="kind is one of webhook, n8n, email"):
        load_text("connectors:\n  - {name: a, kind: fax, events: [case.created]}\n")


def test_the_command_line_lists_shows_replays_purges_and_reports_health(
    client: TestClient, db: Database, settings: Settings, receiver: str, database_url: str, tmp_path: Any
) -> None:
    from tests.test_cli import careops

    deliverer = subscribe(db, receiver, attempts="1")
    Receiver.script = staticmethod(lambda n: "500")
    cases(client, db, settings, 1)
    drain(deliverer, 3)
    connectors = tmp_path / "connectors.yaml"
    connectors.write_text(
        "connectors:\n  - {name: billing, kind: webhook, events: [case.created], fields: [status]}\n"
    )
    env = {"CAREOPS_CONNECTORS_FILE": str(connectors), "COLUMNS": "200"}
    listed = careops(database_url, "deliveries", "list", "--status", "dead", **env)
    assert "billing answered 500" in listed.stdout
    with db.sessions() as session:
        delivery_id = session.scalars(select(Delivery.id)).one()
    assert json.loads(careops(database_url, "deliveries", "show", delivery_id).stdout)["status"] == "dead"
    [health] = json.loads(careops(database_url, "deliveries", "health", **env).stdout)
    assert (health["connector"], health["dead_letters"]) == ("billing", 1)
    replayed = careops(database_url, "deliveries", "replay", "--connector", "billing")
    assert "1 dead letters replayed" in replayed.stderr
    Receiver.script = staticmethod(lambda n: "ok")
    drain(deliverer, 3)
    assert statuses(db) == {"delivered": 1}
    assert (
        "0 delivered rows purged" in careops(database_url, "deliveries", "purge", "--older-than", "1d").stderr
    )


def test_a_rules_connector_call_goes_to_the_connector_it_names(
    db: Database, settings: Settings, receiver: str
) -> None:
    from careops.domain.events import Event, EventType, record_events

    deliverer = subscribe(db, receiver)  # billing subscribes to case.created only
    with db.transaction() as session:
        record_events(
            session,
            Event(EventType.CONNECTOR_CALL_QUEUED, "case", "c" * 32, "automation:run",
                  payload={"connector": "billing", "message": "invoice-ready"}),
            Event(EventType.CONNECTOR_CALL_QUEUED, "case", "d" * 32, "automation:run",
                  payload={"connector": "nobody-knows", "message": "x"}),
        )  # fmt: skip
    seal_all(db, settings.secret_key)
    drain(deliverer, 3)
    [(_key, body)] = Receiver.requests
    assert body["event"]["type"] == "connector.call_queued" and body["event"]["subject_id"] == "c" * 32
    assert statuses(db) == {"delivered": 1}
