"""The JSON intake channel, on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from careops.db import Database
from careops.domain.models import BusinessEvent, IntakeItem, OutboxMessage, ServiceCase
from careops.errors import WriteConflict
from careops.orchestration.intake import WRITE_ATTEMPTS, IntakeAnswer, IntakeRequest, answer_once
from tests.conftest import referral


def test_complete_referral_creates_a_case_with_its_events_and_follow_up(
    client: TestClient, db: Database
) -> None:
    response = client.post("/api/v1/referrals", json=referral())
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["outcome"] == "case_created" and body["status"] == "ready_to_schedule"
    assert body["links"]["case"] == f"/api/v1/cases/{body['case_id']}"
    with db.sessions() as session:
        types = session.scalars(
            select(BusinessEvent.type)
            .where(BusinessEvent.subject_type != "token", BusinessEvent.actor != "seed:demo")
            .order_by(BusinessEvent.id)
        ).all()
        assert types == ["referral.received", "case.created"]
        assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 1


def test_service_needing_authorisation_waits_for_it(client: TestClient) -> None:
    response = client.post("/api/v1/referrals", json=referral(service_code="mri knee", payer_code="axa"))
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "awaiting_authorisation"
    timeline = client.get(response.json()["links"]["case"]).json()["timeline"]
    assert [e["type"] for e in timeline] == ["case.created", "authorisation.required"]


def test_incomplete_referral_is_work_not_an_error(client: TestClient) -> None:
    body = referral(service_code="UNKNOWN-SCAN")
    del body["patient"]["birth_date"]  # type: ignore[attr-defined]
    response = client.post("/api/v1/referrals", json=body)
    assert response.status_code == 202
    answer = response.json()
    assert answer["reason_codes"] == ["unknown_service_code"]
    queue = client.get("/api/v1/exceptions").json()["items"]
    assert [item["id"] for item in queue] == [answer["exception_id"]]
    assert queue[0]["age_seconds"] >= 0


def test_missing_required_field_of_the_service_is_named(client: TestClient) -> None:
    body = referral(service_code="MRI-KNEE")
    del body["member_id"]
    del body["patient"]["birth_date"]  # type: ignore[attr-defined]
    answer = client.post("/api/v1/referrals", json=body).json()
    assert answer["reason_codes"] == ["missing_field:patient.birth_date", "missing_field:member_id"]


def test_resolving_an_exception_creates_the_case_exactly_once(client: TestClient, db: Database) -> None:
    body = referral()
    del body["patient"]["birth_date"]  # type: ignore[attr-defined]
    exception_id = client.post("/api/v1/referrals", json=body).json()["exception_id"]
    still_missing = client.post(f"/api/v1/exceptions/{exception_id}/resolve", json={"fields": {}})
    assert still_missing.status_code == 422
    assert still_missing.json()["reason_codes"] == ["missing_field:patient.birth_date"]
    resolved = client.post(
        f"/api/v1/exceptions/{exception_id}/resolve", json={"fields": {"patient.birth_date": "12/04/1980"}}
    )
    assert resolved.status_code == 200, resolved.text
    again = client.post(
        f"/api/v1/exceptions/{exception_id}/resolve", json={"fields": {"patient.birth_date": "12/04/1980"}}
    )
    assert again.status_code == 409
    with db.sessions() as session:
        assert session.scalar(select(func.count()).select_from(ServiceCase)) == 1
    assert client.get(f"/api/v1/exceptions/{exception_id}").json()["status"] == "resolved"


def test_same_idempotency_key_and_body_replays_the_first_answer(client: TestClient, db: Database) -> None:
    content = json.dumps(referral()).encode()
    headers = {"Idempotency-Key": "abc-123", "Content-Type": "application/json"}
    first = client.post("/api/v1/referrals", content=content, headers=headers)
    second = client.post("/api/v1/referrals", content=content, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    with db.sessions() as session:
        assert session.scalar(select(func.count()).select_from(ServiceCase)) == 1


def test_same_idempotency_key_with_another_body_is_409(client: TestClient) -> None:
    headers = {"Idempotency-Key": "key-1"}
    assert client.post("/api/v1/referrals", json=referral(), headers=headers).status_code == 201
    response = client.post("/api/v1/referrals", json=referral(priority="urgent"), headers=headers)
    assert response.status_code == 409
    assert response.json()["code"] == "duplicate_request"


def test_key_reused_with_another_body_keeps_that_body_in_quarantine(client: TestClient, db: Database) -> None:
    headers = {"Idempotency-Key": "key-2"}
    assert client.post("/api/v1/referrals", json=referral(), headers=headers).status_code == 201
    other = json.dumps(referral(priority="urgent"))
    response = client.post(
        "/api/v1/referrals", content=other, headers={**headers, "Content-Type": "application/json"}
    )
    assert response.status_code == 409
    with db.sessions() as session:
        item = session.get(IntakeItem, response.json()["quarantine_id"])
        assert item is not None and item.raw_payload == other
        assert item.reasons == ["duplicate_request"]


@pytest.mark.parametrize(
    ("header", "value", "message"),
    [
        ("Idempotency-Key", "", "must not be empty"),
        ("Idempotency-Key", "   ", "must not be empty"),
        ("Idempotency-Key", "k" * 256, "at most 255 characters"),
        ("Idempotency-Key", "caf\u00e9", "printable ASCII characters only"),
        ("X-Correlation-Id", "", "must not be empty"),
        ("X-Correlation-Id", "c" * 65, "at most 64 characters"),
    ],
)
def test_an_unusable_key_or_correlation_header_is_422_naming_it_and_the_body_is_kept(
    client: TestClient, db: Database, header: str, value: str, message: str
) -> None:
    content = json.dumps(referral()).encode()
    headers = {header: value.encode("latin-1"), "Content-Type": "application/json"}
    answers = [client.post("/api/v1/referrals", content=content, headers=headers) for _ in range(2)]
    for response in answers:  # the second is refused as the first was: no 500, nothing taken
        assert response.status_code == 422, response.text
        problem = response.json()
        assert problem["errors"] == [{"field": f"header.{header.lower()}", "message": message}]
        assert value.strip() == "" or value not in response.text  # the bad value is not echoed
    with db.sessions() as session:
        kept = [session.get(IntakeItem, r.json()["quarantine_id"]) for r in answers]
        assert all(item is not None and item.raw_payload == content.decode() for item in kept)
        assert session.scalar(select(func.count()).select_from(ServiceCase)) == 0


def test_a_write_that_clashes_with_a_concurrent_one_is_tried_again_then_409(db: Database) -> None:
    request = IntakeRequest(b"{}", "application/json", "api", "tester", idempotency_key=None)
    attempts: list[int] = []

    def clashing() -> IntakeAnswer:
        attempts.append(1)
        if len(attempts) < WRITE_ATTEMPTS:
            raise IntegrityError("INSERT", {}, Exception("unique constraint"))
        return IntakeAnswer(201, {"outcome": "case_created"})

    assert answer_once(db, request, clashing).status_code == 201
    assert len(attempts) == WRITE_ATTEMPTS

    def always_clashing() -> IntakeAnswer:
        raise IntegrityError("INSERT", {}, Exception("unique constraint"))

    with pytest.raises(WriteConflict):
        answer_once(db, request, always_clashing)


def test_duplicate_referral_links_to_the_existing_case(client: TestClient) -> None:
    body = referral()
    first = client.post("/api/v1/referrals", json=body).json()
    second = client.post("/api/v1/referrals", json={**body, "external_id": "another-ref"})
    assert second.status_code == 200
    assert second.json()["outcome"] == "duplicate" and second.json()["case_id"] == first["case_id"]
    timeline = client.get(f"/api/v1/cases/{first['case_id']}").json()["timeline"]
    assert "referral.duplicate_detected" in [e["type"] for e in timeline]


def test_malformed_json_is_422_problem_and_quarantined(client: TestClient, db: Database) -> None:
    response = client.post(
        "/api/v1/referrals",
        content=b'{"location": "north", "patient": ',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["code"] == "validation_failed" and problem["quarantine_id"]
    with db.sessions() as session:
        item = session.get(IntakeItem, problem["quarantine_id"])
        assert item is not None and item.status == "quarantined"
        assert item.raw_payload == '{"location": "north", "patient": '


def test_wrong_types_name_each_field(client: TestClient) -> None:
    body = referral(priority="whenever", patient={"given_name": 12, "birth_date": ["x"]})
    problem = client.post("/api/v1/referrals", json=body).json()
    fields = {e["field"] for e in problem["errors"]}
    assert fields == {"priority", "patient.given_name", "patient.birth_date"}


def test_body_over_one_mebibyte_is_413_and_kept(client: TestClient, db: Database) -> None:
    body = json.dumps(referral(external_id="x" * 10)).encode() + b" " * (1024 * 1024)
    response = client.post("/api/v1/referrals", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    with db.sessions() as session:
        item = session.get(IntakeItem, response.json()["quarantine_id"])
        assert item is not None and len(item.raw_payload) == len(body)


def test_every_api_route_needs_a_token(client: TestClient) -> None:
    client.headers.pop("Authorization")
    assert client.post("/api/v1/referrals", json=referral()).status_code == 401
    assert client.get("/api/v1/cases").status_code == 401
    assert client.get("/api/v1/cases", headers={"Authorization": "Bearer cop_nope"}).status_code == 401
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").json() == {"status": "ready"}


def test_a_nul_in_any_field_is_422_and_the_body_kept_not_a_500(client: TestClient, db: Database) -> None:
    body = referral()
    body["patient"] = {**body["patient"], "given_name": "Al\u0000ex"}  # type: ignore[dict-item]
    response = client.post("/api/v1/referrals", json=body)
    assert response.status_code == 422  # PostgreSQL cannot store a NUL: it was a 500 there
    assert response.json()["errors"][0]["field"] == "patient.given_name"
    with db.sessions() as session:
        kept = session.get(IntakeItem, response.json()["quarantine_id"])
        assert kept is not None and kept.status == "quarantined"


def test_a_name_longer_than_the_patient_record_holds_is_422_not_a_500(client: TestClient) -> None:
    body = referral()
    body["patient"] = {**body["patient"], "family_name": "é" * 101}  # type: ignore[dict-item]
    response = client.post("/api/v1/referrals", json=body)  # PostgreSQL refused it: a 500 there
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "patient.family_name"
