"""/api/v1/reference on SQLite and PostgreSQL: list and search a kind, read one, add or change one
(the body's key must be the path's), retire it (intake then no longer resolves it), save a mapping;
each answer and refusal as documented, each change an audited event."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.conftest import referral


def test_a_kind_is_listed_read_changed_and_retired(client: TestClient) -> None:
    listed = client.get("/api/v1/reference/services", params={"q": "chest"}).json()["items"]
    assert [s["code"] for s in listed] == ["XRAY-CHEST"]
    one = client.get("/api/v1/reference/payers/NHS").json()
    assert one["name"] == "NHS England" and one["retired_at"] is None
    body = {
        "code": "VITALITY",
        "name": "Vitality Health",
        "category": "private",
        "requires_authorisation": True,
    }
    added = client.put("/api/v1/reference/payers/VITALITY", json=body, params={"reason": "new contract"})
    assert added.status_code == 200 and added.json()["changed"] == ["add      payers VITALITY"]
    same = client.put("/api/v1/reference/payers/VITALITY", json=body)
    assert same.json()["changed"] == []  # nothing to change
    other = client.put("/api/v1/reference/payers/OTHER", json=body)
    assert other.status_code == 409 and "not the one in the path" in other.json()["detail"]
    invalid = client.put("/api/v1/reference/payers/VITALITY", json={**body, "category": "\u0000"})
    assert invalid.status_code == 422
    retired = client.post("/api/v1/reference/payers/NHS/retire", params={"reason": "contract ended"})
    assert retired.status_code == 200 and retired.json()["changed"] == ["retire   payers NHS"]
    assert client.post("/api/v1/reference/payers/NHS/retire").status_code == 404  # already retired
    waiting = client.post("/api/v1/referrals", json=referral(payer_code="NHS")).json()
    assert "unknown_payer_code" in waiting["reason_codes"]
    assert client.get("/api/v1/reference/payers/NHS").json()["retired_at"] is not None
    assert "NHS" not in [p["code"] for p in client.get("/api/v1/reference/payers").json()["items"]]
    events = client.get("/api/v1/reference/payers", params={"retired": "true"}).json()["items"]
    assert "NHS" in [p["code"] for p in events]


def test_a_mapping_saved_through_the_api_releases_the_waiting_referral(client: TestClient) -> None:
    waiting = client.post("/api/v1/referrals", json=referral(service_code="LOCAL-XR"))
    assert waiting.status_code == 202
    suggestions = client.get(f"/api/v1/exceptions/{waiting.json()['exception_id']}/suggestions").json()
    assert suggestions["codes"][0]["kind"] == "service" and suggestions["codes"][0]["code"] == "LOCAL-XR"
    saved = client.post(
        "/api/v1/reference/mappings",
        json={"sender": "*", "kind": "service", "code": "LOCAL-XR", "target": "XRAY-CHEST"},
    )
    assert saved.status_code == 200 and len(saved.json()["released_cases"]) == 1
    nowhere = client.post(
        "/api/v1/reference/mappings", json={"sender": "*", "kind": "service", "code": "X", "target": "NOPE"}
    )
    assert nowhere.status_code == 409 and "no live service 'NOPE'" in nowhere.json()["detail"]
    listed = client.get("/api/v1/reference/mappings").json()["items"]
    assert [(m["code"], m["target"]) for m in listed] == [("LOCAL-XR", "XRAY-CHEST")]
    wrong_method = client.delete("/api/v1/reference/mappings")
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "GET, POST"
