"""Tokens bound to locations see only their locations' records: lists leave others out, fetches 404."""

from __future__ import annotations

import datetime as dt

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from careops.db import Database
from careops.domain.models import ApiToken, BusinessEvent
from careops.errors import ValidationFailed
from careops.governance.tokens import create_token, rotate_token
from tests.conftest import referral

NORTH_SCOPES = [
    "cases:read",
    "cases:transition",
    "exceptions:read",
    "exceptions:resolve",
    "quarantine:read",
    "intake:write",
]


@pytest.fixture
def north(db: Database) -> dict[str, str]:
    secret, _ = create_token(db, "north-desk", NORTH_SCOPES, actor="test", locations=["North"])
    return {"Authorization": f"Bearer {secret}"}


def test_cases_of_other_locations_are_left_out_and_answer_404(
    client: TestClient, north: dict[str, str]
) -> None:
    mine = client.post("/api/v1/referrals", json=referral()).json()["case_id"]
    theirs = client.post("/api/v1/referrals", json=referral(location="central")).json()["case_id"]
    listed = client.get("/api/v1/cases", headers=north).json()["items"]
    assert [c["id"] for c in listed] == [mine]
    assert client.get(f"/api/v1/cases/{mine}", headers=north).status_code == 200
    hidden = client.get(f"/api/v1/cases/{theirs}", headers=north)
    missing = client.get(f"/api/v1/cases/{'0' * 32}", headers=north)
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json()["detail"] == missing.json()["detail"]
    for path, body in (
        (f"{theirs}/transitions", {"action": "hold"}),
        (f"{theirs}/triage", {"urgency": "stat"}),
    ):
        assert client.post(f"/api/v1/cases/{path}", json=body, headers=north).status_code == 404
    assert client.get("/api/v1/cases", headers=north, params={"location": "central"}).json()["items"] == []


def test_a_bound_token_cannot_submit_for_another_location(client: TestClient, north: dict[str, str]) -> None:
    refused = client.post("/api/v1/referrals", json=referral(location="central"), headers=north)
    assert refused.status_code == 403
    assert refused.json()["detail"] == "this token may not submit referrals for this location"
    assert client.post("/api/v1/referrals", json=referral(), headers=north).status_code == 201


def test_exceptions_and_quarantine_of_other_locations_are_hidden(
    client: TestClient, north: dict[str, str]
) -> None:
    incomplete = referral(location="central")
    incomplete["patient"] = {"given_name": "Sam", "family_name": "Example"}
    exception_id = client.post("/api/v1/referrals", json=incomplete).json()["exception_id"]
    assert client.get("/api/v1/exceptions", headers=north).json()["items"] == []
    assert client.get(f"/api/v1/exceptions/{exception_id}", headers=north).status_code == 404
    resolve = {"fields": {"patient.birth_date": "1980-04-12"}}
    assert (
        client.post(f"/api/v1/exceptions/{exception_id}/resolve", json=resolve, headers=north).status_code
        == 404
    )
    moved = {"fields": {"patient.birth_date": "1980-04-12", "location": "central"}}
    mine = referral()
    mine["patient"] = {"given_name": "Sam", "family_name": "Example"}
    my_exception = client.post("/api/v1/referrals", json=mine).json()["exception_id"]
    refused = client.post(f"/api/v1/exceptions/{my_exception}/resolve", json=moved, headers=north)
    assert refused.status_code == 403
    quarantined = client.post("/api/v1/referrals", content=b"{not json").json()["quarantine_id"]
    assert client.get("/api/v1/quarantine", headers=north).json()["items"] == []
    assert client.get(f"/api/v1/quarantine/{quarantined}", headers=north).status_code == 404
    assert client.get(f"/api/v1/quarantine/{quarantined}").status_code == 200


def test_unknown_locations_are_refused_with_the_known_ones(db: Database) -> None:
    with pytest.raises(ValidationFailed, match="unknown locations: west; known: central, north, south"):
        create_token(db, "x", ["cases:read"], actor="test", locations=["north", "west"])


def test_a_token_records_when_it_was_last_used(
    client: TestClient, db: Database, north: dict[str, str]
) -> None:
    client.get("/api/v1/cases", headers=north)
    with db.sessions() as session:
        token = session.scalars(select(ApiToken).where(ApiToken.name == "north-desk")).one()
    assert token.last_used_at is not None
    assert dt.datetime.now(dt.UTC) - token.last_used_at < dt.timedelta(minutes=1)


def test_rotation_gives_a_new_secret_and_ends_the_old_one_after_the_overlap(
    client: TestClient, db: Database, north: dict[str, str]
) -> None:
    new_secret, new = rotate_token(db, "north-desk", dt.timedelta(0), actor="test")
    renewed = {"Authorization": f"Bearer {new_secret}"}
    assert client.get("/api/v1/cases", headers=renewed).status_code == 200
    client.app.state.tokens._cache.clear()  # the servers' short trust cache, emptied to test at once
    assert client.get("/api/v1/cases", headers=north).status_code == 401
    assert new.locations is not None and new.scopes == sorted(NORTH_SCOPES)
    with db.sessions() as session:
        rotated = session.scalars(select(BusinessEvent).where(BusinessEvent.type == "token.rotated")).one()
    assert rotated.payload["replaced_by"] == new.id and rotated.actor == "test"
