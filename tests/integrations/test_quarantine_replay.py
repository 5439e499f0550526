"""Quarantine replay and discard, through the API and the CLI, on SQLite and PostgreSQL."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from careops.db import Database
from careops.domain.models import BusinessEvent, ServiceCase
from careops.governance.tokens import create_token
from tests.test_cli import careops

HL7 = {"Content-Type": "application/hl7-v2"}


def order(control_id: str, mrn: str) -> bytes:
    return (
        f"MSH|^~\\&|EHR|GHH|CAREOPS|north|20261201||ORM^O01|{control_id}|P|2.5.1\r"
        f"PID|1||{mrn}^^^^MR||Doe^Jane||19800412|F\r"
        "ORC|NW|PO-1|||||||20261201|||GP-001^Referrer^Dr\r"
        "OBR|1|PO-1||XRAY-CHEST\r"
    ).encode()


def quarantined_ids(client: TestClient) -> list[str]:
    return [item["id"] for item in client.get("/api/v1/quarantine").json()["items"]]


def cases(db: Database) -> int:
    with db.sessions() as session:
        return session.scalar(select(func.count()).select_from(ServiceCase)) or 0


def event_types(db: Database, subject_id: str) -> set[str]:
    with db.sessions() as session:
        return set(session.scalars(select(BusinessEvent.type).where(BusinessEvent.subject_id == subject_id)))


def south_only(client: TestClient, db: Database) -> dict[str, str]:
    token, _ = create_token(db, "south-feed", ["intake:write"], actor="test", locations=["south"])
    return {**HL7, "Authorization": f"Bearer {token}"}


def test_a_message_refused_for_its_sender_is_replayed_into_one_case(client: TestClient, db: Database) -> None:
    refused = client.post("/api/v1/hl7", content=order("Q-1", "MRN-Q1"), headers=south_only(client, db))
    assert "MSA|AR|" in refused.text  # a feed bound to south sent an order for north
    [quarantine_id] = quarantined_ids(client)
    assert cases(db) == 0
    replayed = client.post(f"/api/v1/quarantine/{quarantine_id}/replay")  # the administrator sees all
    assert replayed.status_code == 200
    assert replayed.json()["outcome"] == "case_created"
    assert cases(db) == 1
    assert client.post(f"/api/v1/quarantine/{quarantine_id}/replay").status_code == 409
    assert quarantined_ids(client) == []
    assert cases(db) == 1
    assert "quarantine.replayed" in event_types(db, quarantine_id)


def test_concurrent_replays_create_the_case_exactly_once(client: TestClient, db: Database) -> None:
    client.post("/api/v1/hl7", content=order("Q-2", "MRN-Q2"), headers=south_only(client, db))
    [quarantine_id] = quarantined_ids(client)
    with ThreadPoolExecutor(4) as pool:
        statuses = list(
            pool.map(
                lambda _: client.post(f"/api/v1/quarantine/{quarantine_id}/replay").status_code, range(4)
            )
        )
    assert statuses.count(200) >= 1
    assert set(statuses) <= {200, 409}
    assert cases(db) == 1


def test_a_payload_still_broken_stays_with_new_reasons_until_discarded(
    client: TestClient, db: Database
) -> None:
    broken = client.post("/api/v1/referrals", content=b'{"location": "north", "patient": ')
    assert broken.status_code == 422
    quarantine_id = broken.json()["quarantine_id"]
    still = client.post(f"/api/v1/quarantine/{quarantine_id}/replay")
    assert still.status_code == 422
    assert "validation_failed" in still.json()["reason_codes"]
    assert quarantine_id in quarantined_ids(client)
    assert client.post(f"/api/v1/quarantine/{quarantine_id}/discard", json={"reason": ""}).status_code == 422
    assert (
        client.post(f"/api/v1/quarantine/{quarantine_id}/discard", json={"reason": "test"}).status_code == 200
    )
    assert quarantined_ids(client) == []
    assert client.post(f"/api/v1/quarantine/{quarantine_id}/replay").status_code == 409
    assert {"referral.quarantined", "quarantine.replay_failed", "quarantine.discarded"} <= event_types(
        db, quarantine_id
    )


def test_a_token_without_the_replay_scope_cannot_replay(client: TestClient, db: Database) -> None:
    token, _ = create_token(db, "reader", ["quarantine:read"], actor="test")
    client.post("/api/v1/referrals", content=b"not json")
    [quarantine_id] = quarantined_ids(client)
    answer = client.post(
        f"/api/v1/quarantine/{quarantine_id}/replay", headers={"Authorization": f"Bearer {token}"}
    )
    assert answer.status_code == 403


def test_the_cli_lists_shows_replays_and_discards(
    client: TestClient, db: Database, database_url: str
) -> None:
    client.post("/api/v1/hl7", content=order("Q-3", "MRN-Q3"), headers=south_only(client, db))
    client.post("/api/v1/referrals", content=b"not json")
    channels = {item["channel"]: item["id"] for item in client.get("/api/v1/quarantine").json()["items"]}
    hl7_id, json_id = channels["hl7"], channels["api"]
    listed = careops(database_url, "quarantine", "list")
    assert listed.returncode == 0 and hl7_id in listed.stdout and json_id in listed.stdout
    shown = careops(database_url, "quarantine", "show", hl7_id)
    assert shown.returncode == 0
    assert shown.stdout.startswith("MSH|")
    replayed = careops(database_url, "quarantine", "replay", hl7_id)
    assert replayed.returncode == 0, replayed.stderr
    assert '"outcome": "case_created"' in replayed.stdout
    assert cases(db) == 1
    failed = careops(database_url, "quarantine", "replay", json_id)
    assert failed.returncode == 1
    assert "still rejected" in failed.stderr
    discarded = careops(database_url, "quarantine", "discard", json_id, "--reason", "garbage")
    assert discarded.returncode == 0
    assert careops(database_url, "quarantine", "list").stdout.count("\n") < listed.stdout.count("\n")
