"""Cases: lists with filters and cursors, timelines, transitions, scopes."""

from __future__ import annotations

import datetime as dt

from fastapi.testclient import TestClient

from careops.db import Database
from careops.governance.tokens import create_token
from tests.conftest import referral


def make_cases(client: TestClient, count: int, **overrides: object) -> list[str]:
    ids = []
    for _ in range(count):
        response = client.post("/api/v1/referrals", json=referral(**overrides))
        assert response.status_code == 201, response.text
        ids.append(response.json()["case_id"])
    return ids


def test_cursor_pagination_visits_every_case_once_newest_first(client: TestClient) -> None:
    created = make_cases(client, 7)
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = client.get("/api/v1/cases", params=params).json()
        seen += [c["id"] for c in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(created))


def test_filters_by_status_location_service_and_time(client: TestClient) -> None:
    north = make_cases(client, 2)
    south = make_cases(client, 1, location="south", service_code="MRI-KNEE", payer_code="AXA")

    def ids(**params: str) -> set[str]:
        return {c["id"] for c in client.get("/api/v1/cases", params=params).json()["items"]}

    assert ids(location="north") == set(north)
    assert ids(service="MRI-KNEE") == set(south)
    assert ids(status="awaiting_authorisation") == set(south)
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    assert ids(created_from=future) == set()
    assert ids(created_to=future) == set(north + south)


def test_transition_writes_an_event_and_a_forbidden_one_lists_the_allowed(client: TestClient) -> None:
    case_id = make_cases(client, 1)[0]
    moved = client.post(f"/api/v1/cases/{case_id}/transitions", json={"action": "hold"})
    assert moved.status_code == 200 and moved.json()["status"] == "on_hold"
    refused = client.post(f"/api/v1/cases/{case_id}/transitions", json={"action": "close"})
    assert refused.status_code == 409
    assert refused.json()["allowed"] == ["resume", "cancel"]
    timeline = client.get(f"/api/v1/cases/{case_id}").json()["timeline"]
    assert timeline[-1]["type"] == "case.transitioned"
    assert timeline[-1]["payload"] == {"from": "ready_to_schedule", "to": "on_hold", "action": "hold"}
    client.post(f"/api/v1/cases/{case_id}/transitions", json={"action": "resume"})
    by_hand = client.post(f"/api/v1/cases/{case_id}/transitions", json={"action": "schedule"})
    assert by_hand.status_code == 409 and "appointment" in by_hand.json()["detail"]
    assert "schedule" not in client.get(f"/api/v1/cases/{case_id}").json()["allowed_actions"]


def test_unknown_case_is_404_problem(client: TestClient) -> None:
    response = client.get("/api/v1/cases/" + "0" * 32)
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_a_token_without_the_scope_gets_403(client: TestClient, db: Database) -> None:
    reader, _ = create_token(db, "reader", ["cases:read"], actor="test")
    headers = {"Authorization": f"Bearer {reader}"}
    assert client.get("/api/v1/cases", headers=headers).status_code == 200
    refused = client.post("/api/v1/referrals", json=referral(), headers=headers)
    assert refused.status_code == 403 and refused.json()["required_scope"] == "intake:write"


def test_an_overlong_idempotency_key_is_422_naming_the_header(client: TestClient) -> None:
    response = client.post("/api/v1/referrals", json=referral(), headers={"Idempotency-Key": "k" * 256})
    assert response.status_code == 422
    assert response.json()["errors"] == [
        {"field": "header.idempotency-key", "message": "at most 255 characters"}
    ]
    kept = client.get(f"/api/v1/quarantine/{response.json()['quarantine_id']}").json()
    assert kept["reasons"] == ["validation_failed", "invalid_field:header.idempotency-key"]


def test_openapi_example_is_accepted_as_it_stands(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    example = schema["paths"]["/api/v1/referrals"]["post"]["requestBody"]["content"]["application/json"][
        "example"
    ]
    response = client.post("/api/v1/referrals", json=example)
    assert response.status_code == 201, response.text
