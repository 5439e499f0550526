"""Every answer carries the security headers; /api answers are not cached; CORS stays closed."""

from __future__ import annotations

from fastapi.testclient import TestClient

from careops.api.security_headers import API_POLICY, DOCS_POLICY
from tests.conftest import referral


def test_api_answers_carry_the_headers_and_no_store(client: TestClient) -> None:
    for response in (
        client.post("/api/v1/referrals", json=referral()),
        client.get("/api/v1/cases"),
        client.get("/api/v1/cases/" + "0" * 32),
        client.get("/api/v1/cases", headers={"Authorization": "Bearer cop_wrong"}),
    ):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert response.headers["content-security-policy"] == API_POLICY
        assert response.headers["cache-control"] == "no-store"
        assert "strict-transport-security" not in response.headers


def test_the_docs_page_may_load_its_scripts_and_tls_gets_hsts(client: TestClient) -> None:
    assert client.get("/docs").headers["content-security-policy"] == DOCS_POLICY
    over_tls = TestClient(client.app, base_url="https://careops.example")
    assert over_tls.get("/healthz").headers["strict-transport-security"].startswith("max-age=")


def test_cross_origin_requests_get_no_cors_permission(client: TestClient) -> None:
    preflight = client.options(
        "/api/v1/cases",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
    )
    simple = client.get("/api/v1/cases", headers={"Origin": "https://evil.example"})
    for response in (preflight, simple):
        assert not any(name.startswith("access-control-allow") for name in response.headers)
