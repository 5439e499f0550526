"""API abuse limits: per token and per client address, 429 with Retry-After, per process."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

from careops.api.app import create_app
from careops.db import Database
from careops.governance.abuse import RateLimiter
from careops.governance.tokens import create_token
from careops.settings import Settings


def _clear_of_a_window_edge(window: float = 60.0, needed: float = 20.0) -> None:
    """Wait, if need be, so that the next ``needed`` seconds fall in one window of the limiter: at
    a window's edge the sliding estimate lets about one request more through (by design)."""
    into = time.monotonic() % window
    if into > window - needed:
        time.sleep(window - into + 0.05)


def test_each_token_has_its_own_budget(settings: Settings, db: Database) -> None:
    _clear_of_a_window_edge()
    limited = settings.model_copy(update={"api_requests_per_minute_per_token": 5})
    first, _ = create_token(db, "first", ["cases:read"], actor="test")
    second, _ = create_token(db, "second", ["cases:read"], actor="test")
    with TestClient(create_app(limited, db), raise_server_exceptions=False) as client:
        answers = [
            client.get("/api/v1/cases", headers={"Authorization": f"Bearer {first}"}) for _ in range(6)
        ]
        assert [a.status_code for a in answers] == [200] * 5 + [429]
        refused = answers[-1]
        assert refused.headers["content-type"] == "application/problem+json"
        assert 1 <= int(refused.headers["retry-after"]) <= 60 and "token" in refused.json()["detail"]
        assert client.get("/api/v1/cases", headers={"Authorization": f"Bearer {second}"}).status_code == 200


def test_guessing_tokens_from_one_address_is_slowed_down(settings: Settings, db: Database) -> None:
    limited = settings.model_copy(update={"api_requests_per_minute_per_address": 4})
    _clear_of_a_window_edge()
    with TestClient(create_app(limited, db), raise_server_exceptions=False) as client:
        statuses = [
            client.get("/api/v1/cases", headers={"Authorization": f"Bearer cop_guess{i}"}).status_code
            for i in range(6)
        ]
        assert statuses == [401] * 4 + [429] * 2
        assert client.get("/healthz").status_code == 200  # health checks are not counted


def test_the_limiter_slides_and_forgets() -> None:
    limiter = RateLimiter(3, window=0.2)
    assert [limiter.allow("a") for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("b")
    time.sleep(0.45)  # two windows later nothing is remembered
    assert limiter.allow("a")
