"""Console login: argon2id users, session cookies, CSRF, lockout, expiry, revoke, masking by role."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from careops.api.app import create_app
from careops.db import Database
from careops.domain.models import BusinessEvent, User, UserSession, utcnow
from careops.errors import Forbidden, ValidationFailed
from careops.governance.users import create_user, disable_user, set_roles
from careops.settings import Settings
from tests.conftest import referral

PASSWORD = "correct horse battery 42"


@pytest.fixture
def console(settings: Settings, db: Database) -> Iterator[TestClient]:
    settings = settings.model_copy(update={"login_max_failures": 3})
    with TestClient(create_app(settings, db), raise_server_exceptions=False) as browser:
        yield browser


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, "the page carries no CSRF token"
    return found.group(1)


def login(browser: TestClient, username: str, password: str = PASSWORD) -> int:
    token = _csrf(browser.get("/console/login").text)
    answer = browser.post(
        "/console/login",
        data={"username": username, "password": password, "csrf_token": token},
        follow_redirects=False,
    )
    return answer.status_code


def _user(db: Database, settings: Settings, name: str, roles: list[str]) -> None:
    create_user(db, settings, name, PASSWORD, roles, actor="test")


def _events(db: Database, kind: str) -> list[BusinessEvent]:
    with db.sessions() as session:
        return list(session.scalars(select(BusinessEvent).where(BusinessEvent.type == kind)))


def test_passwords_are_argon2id_hashes_and_weak_ones_are_refused(db: Database, settings: Settings) -> None:
    _user(db, settings, "ana", ["scheduler"])
    with db.sessions() as session:
        stored = session.scalars(select(User.password_hash)).one()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    for weak in ("short", "ana2-is-my-name-123", "password123"):
        with pytest.raises(ValidationFailed):
            create_user(db, settings, "ana2", weak, ["scheduler"], actor="test")


def test_login_sets_a_strict_http_only_cookie_and_shows_cases_masked_for_the_role(
    console: TestClient, client: TestClient, db: Database, settings: Settings
) -> None:
    case_id = client.post("/api/v1/referrals", json=referral()).json()["case_id"]
    _user(db, settings, "sam", ["scheduler"])
    assert login(console, "sam") == 303
    cookie = next(c for c in console.cookies.jar if c.name == "careops_session")
    assert cookie.has_nonstandard_attr("HttpOnly") and cookie.path == "/console"
    page = console.get("/console/cases")
    assert page.status_code == 200 and "Alex Example" in page.text  # schedulers see names in clear
    detail = console.get(f"/console/cases/{case_id}").text
    assert "1980" in detail and "1980-04-12" not in detail  # birth year only
    assert re.search(r'id="patient-mrn">—<', detail)  # identifiers hidden from schedulers
    assert page.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


def test_wrong_passwords_lock_the_account_even_for_the_right_one(
    console: TestClient, db: Database, settings: Settings
) -> None:
    _user(db, settings, "lee", ["scheduler"])
    assert [login(console, "lee", "not the password!") for _ in range(3)] == [401, 401, 401]
    assert login(console, "lee") == 401  # locked: the right password no longer works
    assert login(console, "nobody-at-all") == 401  # unknown users get the same answer
    assert len(_events(db, "user.locked")) == 1
    assert len(_events(db, "user.login_failed")) == 4
    with db.transaction() as session:
        session.execute(update(User).values(locked_until=utcnow()))
    assert login(console, "lee") == 303


def test_forms_without_the_csrf_token_are_refused(
    console: TestClient, client: TestClient, db: Database, settings: Settings
) -> None:
    _user(db, settings, "cora", ["compliance_officer"])
    refused = console.post(
        "/console/login", data={"username": "cora", "password": PASSWORD, "csrf_token": "x"}
    )
    assert refused.status_code == 403 and "careops_session" not in console.cookies
    assert login(console, "cora") == 303
    case_id = client.post("/api/v1/referrals", json=referral()).json()["case_id"]
    forged = console.post(f"/console/cases/{case_id}/reveal", data={"reason": "checking a complaint"})
    assert forged.status_code == 403 and "Alex" not in forged.text
    assert _events(db, "phi.revealed") == []


def test_a_reveal_needs_a_reason_shows_the_data_and_is_audited(
    console: TestClient, client: TestClient, db: Database, settings: Settings
) -> None:
    _user(db, settings, "cora", ["compliance_officer"])
    case_id = client.post("/api/v1/referrals", json=referral()).json()["case_id"]
    assert login(console, "cora") == 303
    page = console.get(f"/console/cases/{case_id}").text
    assert "Alex" not in page and "A****" in page
    token = _csrf(page)
    short = console.post(f"/console/cases/{case_id}/reveal", data={"reason": "why", "csrf_token": token})
    assert short.status_code == 422 and "Alex" not in short.text
    shown = console.post(
        f"/console/cases/{case_id}/reveal", data={"reason": "complaint ref 1234 review", "csrf_token": token}
    )
    assert shown.status_code == 200 and "Alex Example" in shown.text and "1980-04-12" in shown.text
    (event,) = _events(db, "phi.revealed")
    assert event.case_id == case_id and event.payload["reason"] == "complaint ref 1234 review"
    assert "patient.given_name" in event.payload["fields"]


def test_logout_expiry_disable_and_role_changes_end_sessions(
    console: TestClient, db: Database, settings: Settings
) -> None:
    _user(db, settings, "max", ["scheduler"])
    assert login(console, "max") == 303
    token = _csrf(console.get("/console/cases").text)
    assert (
        console.post("/console/logout", data={"csrf_token": token}, follow_redirects=False).status_code == 303
    )
    assert console.get("/console/cases", follow_redirects=False).status_code == 303  # back to login

    assert login(console, "max") == 303
    with db.transaction() as session:
        session.execute(update(UserSession).values(expires_at=utcnow()))
    assert console.get("/console/cases", follow_redirects=False).headers["location"] == "/console/login"

    assert login(console, "max") == 303
    set_roles(db, settings, "max", ["finance"], actor="test")
    assert console.get("/console/cases", follow_redirects=False).status_code == 303
    assert login(console, "max") == 303
    disable_user(db, "max", actor="test")
    assert console.get("/console/cases", follow_redirects=False).status_code == 303
    assert login(console, "max") == 401


def test_nobody_changes_their_own_roles(db: Database, settings: Settings) -> None:
    _user(db, settings, "root", ["administrator"])
    with db.sessions() as session:
        me = session.scalars(select(User.id)).one()
    with pytest.raises(Forbidden, match="separation of duties: nobody may change their own roles"):
        set_roles(db, settings, "root", ["administrator", "finance"], actor=me)
    assert set_roles(db, settings, "root", ["finance"], actor="another-admin").roles == ["finance"]


def test_separation_of_duties_is_configured_as_data(
    client: TestClient, db: Database, settings: Settings
) -> None:
    from careops.api.app import create_app
    from careops.governance.duties import DutyRule
    from careops.governance.tokens import create_token

    rule = DutyRule(action="exceptions:resolve", not_by="requester", why="whoever submits does not resolve")
    strict = settings.model_copy(update={"separation_of_duties": [*settings.separation_of_duties, rule]})
    submitter, _ = create_token(db, "desk", ["intake:write", "exceptions:resolve"], actor="test")
    colleague, _ = create_token(db, "colleague", ["exceptions:resolve"], actor="test")
    incomplete = referral(patient={"given_name": "Ann", "family_name": "Lee", "mrn": "MRN-SOD-1"})
    with TestClient(create_app(strict, db), raise_server_exceptions=False) as api:
        opened = api.post(
            "/api/v1/referrals", json=incomplete, headers={"Authorization": f"Bearer {submitter}"}
        )
        path = f"/api/v1/exceptions/{opened.json()['exception_id']}/resolve"
        fields = {"fields": {"patient.birth_date": "1980-04-12"}}
        own = api.post(path, json=fields, headers={"Authorization": f"Bearer {submitter}"})
        assert own.status_code == 403 and "whoever submits does not resolve" in own.json()["detail"]
        assert (
            api.post(path, json=fields, headers={"Authorization": f"Bearer {colleague}"}).status_code == 200
        )


def test_login_attempts_are_rate_limited_per_address(settings: Settings, db: Database) -> None:
    limited = settings.model_copy(update={"login_attempts_per_minute": 2})
    with TestClient(create_app(limited, db), raise_server_exceptions=False) as browser:
        statuses = [login(browser, "ghost", "whatever it is") for _ in range(3)]
    assert statuses == [401, 401, 429]
