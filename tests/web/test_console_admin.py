"""The console's administration on SQLite and PostgreSQL: API tokens created (the secret shown
once, then working), rotated and revoked; a user's roles set and a user disabled; connectors
created and their secrets rotated (each secret shown once, then signing); the audit chain's
status and a verify on demand. Each change is an audited event."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from careops.api.app import create_app
from careops.db import Database
from careops.domain.models import BusinessEvent, User
from careops.governance.audit import seal_all
from careops.governance.signing import create_connector, signed_headers
from careops.governance.users import create_user
from careops.settings import Settings
from tests.conftest import referral
from tests.governance.test_console_login import PASSWORD, _csrf, login


@pytest.fixture
def console(settings: Settings, db: Database) -> Iterator[TestClient]:
    for name, roles in (
        ("ada", ["administrator"]),
        ("carl", ["compliance_officer"]),
        ("cora", ["intake_coordinator"]),
    ):
        create_user(db, settings, name, PASSWORD, roles, actor="test")
    at_once = settings.model_copy(update={"token_cache_seconds": 0})  # a revoked token fails at once
    with TestClient(create_app(at_once, db), raise_server_exceptions=False) as browser:
        assert login(browser, "ada") == 303
        yield browser


def _secret(page: str) -> str:
    found = re.search(r'<code id="secret">([^<]+)</code>', page)
    assert found, "no secret on the page"
    return found.group(1)


def test_a_token_is_created_shown_once_rotated_and_revoked(console: TestClient, db: Database) -> None:
    page = console.get("/console/admin/tokens").text
    token = _csrf(page)
    form = {"csrf_token": token, "name": "lab-engine", "scope-cases:read": "on", "location-north": "on"}
    created = console.post("/console/admin/tokens", data={**form, "expires_days": "30"})
    assert created.status_code == 201
    secret = _secret(created.text)
    assert secret not in console.get("/console/admin/tokens").text  # shown once
    api = {"Authorization": f"Bearer {secret}"}
    assert console.get("/api/v1/cases", headers=api).status_code == 200
    assert console.get("/api/v1/exceptions", headers=api).status_code == 403  # only its scope
    no_scope = console.post("/console/admin/tokens", data={"csrf_token": token, "name": "x"})
    assert no_scope.status_code == 422 and "at least one scope" in no_scope.text
    bad_days = console.post("/console/admin/tokens", data={**form, "expires_days": "soon"})
    assert bad_days.status_code == 422
    with db.sessions() as session:
        token_id = session.scalars(
            select(BusinessEvent.subject_id).where(BusinessEvent.type == "token.created")
        ).first()
    rotated = console.post(f"/console/admin/tokens/{token_id}/rotate", data={"csrf_token": token})
    assert rotated.status_code == 201 and _secret(rotated.text) != secret
    new = {"Authorization": f"Bearer {_secret(rotated.text)}"}
    assert console.get("/api/v1/cases", headers=new).status_code == 200
    revoked = console.post("/console/admin/tokens/lab-engine/revoke", data={"csrf_token": token})
    assert revoked.status_code == 200  # followed to the list
    assert console.get("/api/v1/cases", headers=new).status_code == 401
    with db.sessions() as session:
        kinds = session.scalars(select(BusinessEvent.type).where(BusinessEvent.subject_type == "token")).all()
    assert {"token.created", "token.rotated", "token.revoked"} <= set(kinds)


def test_roles_are_set_and_a_user_disabled_but_not_oneself(console: TestClient, db: Database) -> None:
    token = _csrf(console.get("/console/admin/users").text)
    console.post("/console/admin/users/cora/roles", data={"csrf_token": token, "role-scheduler": "on"})
    with db.sessions() as session:
        cora = session.scalars(select(User).where(User.username == "cora")).one()
        assert cora.roles == ["scheduler"]
    own = console.post("/console/admin/users/ada/roles", data={"csrf_token": token, "role-scheduler": "on"})
    assert own.status_code in (403, 422) and 'role="alert"' in own.text  # nobody changes their own
    assert console.post("/console/admin/users/ada/disable", data={"csrf_token": token}).status_code == 409
    console.post("/console/admin/users/cora/disable", data={"csrf_token": token})
    console.cookies.clear()
    assert login(console, "cora") != 303


def test_connectors_and_the_audit_chain_are_shown_and_verified(
    console: TestClient, db: Database, settings: Settings
) -> None:
    create_connector(db, "lab-partner", "inbound", None, actor="test")
    assert "lab-partner" in console.get("/console/admin/connectors").text
    seal_all(db, settings.secret_key)
    page = console.get("/console/admin/audit").text
    head = re.search(r'<dd id="head">(\d+)', page)
    assert head is not None and int(head.group(1)) > 0
    verified = console.post("/console/admin/audit/verify", data={"csrf_token": _csrf(page)})
    assert verified.status_code == 200 and "The chain is intact" in verified.text
    console.cookies.clear()
    assert login(console, "carl") == 303  # a compliance officer reads the audit page, not the tokens
    assert console.get("/console/admin/audit").status_code == 200
    assert console.get("/console/admin/tokens").status_code == 403


def test_a_connector_is_created_and_rotated_with_its_secret_shown_once_then_signing(
    console: TestClient, db: Database
) -> None:
    page = console.get("/console/admin/connectors").text
    form = {
        "csrf_token": _csrf(page),
        "name": "lab-partner",
        "direction": "inbound",
        "url": "",
        "sees_as": "",
    }
    created = console.post("/console/admin/connectors", data=form)
    assert created.status_code == 201
    secret = _secret(created.text)
    assert secret.startswith("whsec_") and "lab-partner" in created.text
    assert secret not in console.get("/console/admin/connectors").text  # shown once
    body = json.dumps(referral()).encode()
    signed = console.post(
        "/api/v1/webhooks/lab-partner/referrals",
        content=body,
        headers={"Content-Type": "application/json", **signed_headers([secret], body)},
    )
    assert signed.status_code == 201, signed.text
    rotated = console.post(
        "/console/admin/connectors/lab-partner/rotate", data={"csrf_token": form["csrf_token"]}
    )
    assert rotated.status_code == 201 and _secret(rotated.text) != secret
    again = console.post("/console/admin/connectors", data=form)
    assert again.status_code == 409 and "exists" in again.text
    bad = console.post("/console/admin/connectors", data={**form, "name": "no spaces/please"})
    assert bad.status_code == 422 and "letters, digits" in bad.text
    outbound = console.post(
        "/console/admin/connectors", data={**form, "name": "odoo", "direction": "outbound"}
    )
    assert outbound.status_code == 422 and "URL" in outbound.text
    with db.sessions() as session:
        kinds = session.scalars(
            select(BusinessEvent.type).where(BusinessEvent.subject_id == "lab-partner")
        ).all()
    assert sorted(kinds) == ["connector.created", "connector.secret_rotated"]


def test_a_user_is_created_with_a_first_password_shown_once(console: TestClient, db: Database) -> None:
    token = _csrf(console.get("/console/admin/users").text)
    form = {"csrf_token": token, "username": "Nia", "display_name": "Nia Okafor", "role-scheduler": "on"}
    created = console.post("/console/admin/users", data={**form, "location-north": "on"})
    assert created.status_code == 201
    password = _secret(created.text)
    assert password not in console.get("/console/admin/users").text  # shown once
    taken = console.post("/console/admin/users", data=form)
    assert taken.status_code == 409 and "taken" in taken.text
    no_role = console.post("/console/admin/users", data={**form, "username": "x", "role-nope": "on"})
    assert no_role.status_code == 422
    console.cookies.clear()
    assert login(console, "nia", password) == 303
    with db.sessions() as session:
        nia = session.scalars(select(User).where(User.username == "nia")).one()
        assert nia.roles == ["scheduler"] and nia.locations is not None and len(nia.locations) == 1
