"""The authorisation matrix, generated from the permission catalogue and the route table.

Every shipped role (as a token carrying the role's permissions), a token with each single
permission, and no token at all, call every API operation: each is allowed or refused exactly as
the catalogue says. Console pages are checked the same way with logged-in users of each role.
A route that declares no permission fails here. Then every list and detail route is probed across
locations: a token bound to one location never sees, and cannot fetch, another location's records.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import select

from careops.api.app import API_MODULES, OPEN_ROUTES, PAGE_MODULES, create_app
from careops.approvals.store import activate_directory as activate_policies
from careops.approvals.store import shipped_directory as policies_directory
from careops.db import Database
from careops.domain.deliveries import Delivery
from careops.domain.models import BusinessEvent, Document, ExceptionItem, ServiceCase
from careops.governance.permissions import PERMISSIONS, SHIPPED_ROLES, grants
from careops.governance.signing import SIGNED
from careops.governance.tokens import create_token
from careops.governance.users import create_user
from careops.settings import Settings
from tests.conftest import referral
from tests.integrations.test_fhir import FHIR, referral_bundle
from tests.orchestration.test_scheduling import LONDON, next_monday

ANY_TOKEN = "(any valid token)"
DUMMY = "0" * 32
# Page routes: who may use them. ``public`` pages need no login; ``session`` ones need a console
# session and check the permission named after it.
PAGE_ROUTES = {
    ("GET", "/refer/form.css"): "public",
    ("GET", "/refer/{location}"): "public",
    ("POST", "/refer/{location}"): "public",
    ("GET", "/console/console.css"): "public",
    ("GET", "/console/static/{name}"): "public",
    ("GET", "/console"): "public",
    ("GET", "/console/login"): "public",
    ("POST", "/console/login"): "public",
    ("GET", "/console/oidc/login"): "public",
    ("GET", "/console/oidc/callback"): "public",
    ("POST", "/console/logout"): "session",
    ("GET", "/console/cases"): "session cases:read",
    ("GET", "/console/cases/{case_id}"): "session cases:read",
    ("POST", "/console/cases/{case_id}/reveal"): "session phi:reveal",
    ("POST", "/console/cases/{case_id}/transitions"): "session cases:transition",
    ("GET", "/console/work"): "session",
    ("GET", "/console/dashboard"): "session metrics:read",
    ("GET", "/console/dashboard.csv"): "session metrics:read",
    ("GET", "/console/flow"): "session metrics:read",
    ("GET", "/console/patients"): "session cases:read",
    ("POST", "/console/patients"): "session cases:read",
    ("GET", "/console/exceptions"): "session exceptions:read",
    ("GET", "/console/exceptions/{exception_id}"): "session exceptions:read",
    ("POST", "/console/exceptions/{exception_id}/resolve"): "session exceptions:resolve",
    ("POST", "/console/exceptions/{exception_id}/claim"): "session exceptions:resolve",
    ("POST", "/console/exceptions/assign"): "session exceptions:resolve",
    ("GET", "/console/quarantine"): "session quarantine:read",
    ("GET", "/console/quarantine/{item_id}"): "session quarantine:read",
    ("POST", "/console/quarantine/{item_id}/replay"): "session quarantine:replay",
    ("POST", "/console/quarantine/{item_id}/discard"): "session quarantine:replay",
    ("GET", "/console/admin/tokens"): "session admin",
    ("POST", "/console/admin/tokens"): "session admin",
    ("POST", "/console/admin/tokens/{token_id}/revoke"): "session admin",
    ("POST", "/console/admin/tokens/{token_id}/rotate"): "session admin",
    ("GET", "/console/admin/users"): "session admin",
    ("POST", "/console/admin/users"): "session admin",
    ("POST", "/console/admin/users/{username}/roles"): "session admin",
    ("POST", "/console/admin/users/{username}/disable"): "session admin",
    ("GET", "/console/admin/connectors"): "session integrations:manage",
    ("POST", "/console/admin/connectors"): "session integrations:manage",
    ("POST", "/console/admin/connectors/{name}/rotate"): "session integrations:manage",
    ("GET", "/console/admin/reference"): "session reference:read",
    ("GET", "/console/admin/reference/{kind}/edit"): "session reference:write",
    ("POST", "/console/admin/reference/{kind}/edit"): "session reference:write",
    ("POST", "/console/admin/reference/{kind}/retire"): "session reference:write",
    ("POST", "/console/exceptions/{exception_id}/map"): "session mappings:write",
    ("POST", "/console/cases/{case_id}/book"): "session cases:transition",
    ("POST", "/console/cases/{case_id}/authorisations"): "session cases:transition",
    ("POST", "/console/authorisations/{authorisation_id}/{decision}"): "session approvals:decide",
    ("POST", "/console/appointments/{appointment_id}/{ending}"): "session cases:transition",
    ("GET", "/console/board"): "session cases:read",
    ("GET", "/console/availability"): "session cases:read",
    ("GET", "/console/authorisations"): "session cases:read",
    ("GET", "/console/results"): "session cases:read",
    ("POST", "/console/results/{result_id}/match"): "session cases:transition",
    ("GET", "/console/billing"): "session billing:approve",
    ("POST", "/console/cases/{case_id}/billing-readiness"): "session billing:approve",
    ("POST", "/console/cases/{case_id}/invoices"): "session billing:approve",
    ("POST", "/console/invoices/{invoice_id}/{step}"): "session billing:approve",
    ("GET", "/console/stock"): "session inventory:adjust",
    ("POST", "/console/replenishments"): "session inventory:adjust",
    ("POST", "/console/replenishments/{replenishment_id}/{step}"): "session inventory:adjust",
    ("GET", "/console/staffing"): "session staff:reassign",
    ("POST", "/console/staffing/conflicts"): "session staff:reassign",
    ("GET", "/console/staffing/conflicts/{conflict_id}"): "session staff:reassign",
    ("POST", "/console/staffing/conflicts/{conflict_id}/{action}"): "session staff:reassign",
    ("GET", "/console/approvals"): "session approvals:read",
    ("GET", "/console/approvals/{approval_id}"): "session approvals:read",
    ("POST", "/console/approvals/{approval_id}/decision"): "session approvals:decide",
    ("GET", "/console/approvals/link/{token}"): "session approvals:decide",
    ("POST", "/console/approvals/link/{token}"): "session approvals:decide",
    ("GET", "/console/deliveries"): "session integrations:manage",
    ("POST", "/console/deliveries/{delivery_id}/replay"): "session integrations:manage",
    ("GET", "/console/automation"): "session workflows:read",
    ("GET", "/console/automation/{name}"): "session workflows:read",
    ("GET", "/console/admin/audit"): "session audit:read",
    ("POST", "/console/admin/audit/verify"): "session audit:read",
}


# Master data and workflow templates are the organisation's, not a location's: every reader sees
# all of them.
ORGANISATION_WIDE = ("/api/v1/reference/", "/api/v1/workflows", "/api/v1/approval-policies")


def _operations(schema: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    return [
        (method.upper(), path, operation.get("x-required-scope"))
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
    ]


@pytest.fixture
def app_client(settings: Settings, db: Database) -> TestClient:
    return TestClient(create_app(settings, db), raise_server_exceptions=False)


def test_every_api_operation_declares_a_known_permission(app_client: TestClient) -> None:
    operations = _operations(app_client.app.openapi())  # type: ignore[attr-defined]
    undeclared = [(m, p) for m, p, scope in operations if scope is None and p not in OPEN_ROUTES]
    assert undeclared == []
    unknown = {scope for _, _, scope in operations if scope and scope not in (ANY_TOKEN, SIGNED)} - set(
        PERMISSIONS
    )
    assert unknown == set()
    routed = {
        (method, route.path)
        for module in API_MODULES
        for route in module.router.routes
        if isinstance(route, APIRoute)
        for method in route.methods
    }
    assert routed == {(m, p) for m, p, _ in operations}, "an API route is missing from the OpenAPI document"


def test_every_page_route_is_declared() -> None:
    routed = {
        (method, route.path)
        for module in PAGE_MODULES
        for route in module.router.routes
        if isinstance(route, APIRoute)
        for method in route.methods
    }
    assert routed == set(PAGE_ROUTES)


def _callers() -> dict[str, frozenset[str]]:
    callers = {f"role:{name}": spec.permissions for name, spec in SHIPPED_ROLES.items()}
    callers |= {f"scope:{permission}": frozenset({permission}) for permission in PERMISSIONS}
    return callers


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_every_caller_on_every_operation_is_allowed_or_refused_as_the_catalogue_says(
    app_client: TestClient, db: Database
) -> None:
    operations = [op for op in _operations(app_client.app.openapi()) if op[1] not in OPEN_ROUTES]  # type: ignore[attr-defined]
    wrong: list[str] = []
    with app_client:
        for caller, permissions in _callers().items():
            secret, _ = create_token(db, caller, sorted(permissions), actor="test")
            headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
            for method, path, scope in operations:
                url = re.sub(r"\{[^}]+\}", DUMMY, path)
                status = app_client.request(method, url, headers=headers, content=b"{}").status_code
                if scope == SIGNED:  # a token is no signature
                    if status != 401:
                        wrong.append(f"{caller} {method} {path}: {status}, expected 401 (unsigned)")
                    continue
                allowed = scope == ANY_TOKEN or grants(permissions, str(scope))
                if (status == 403) == allowed or status == 401:
                    wrong.append(
                        f"{caller} {method} {path}: {status}, expected {'allowed' if allowed else 403}"
                    )
        for method, path, _ in operations:
            url = re.sub(r"\{[^}]+\}", DUMMY, path)
            status = app_client.request(method, url, content=b"{}").status_code
            if status != 401:
                wrong.append(f"no token {method} {path}: {status}, expected 401")
    assert wrong == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_console_pages_follow_the_roles_of_the_user(
    app_client: TestClient, db: Database, settings: Settings
) -> None:
    from tests.governance.test_console_login import PASSWORD, _csrf, login

    wrong: list[str] = []
    with app_client:
        for (method, path), rule in PAGE_ROUTES.items():
            if rule.startswith("session") and method == "GET":
                url = re.sub(r"\{[^}]+\}", DUMMY, path)
                answer = app_client.request(method, url, follow_redirects=False)
                if answer.status_code != 303 or answer.headers["location"] != "/console/login":
                    wrong.append(f"anonymous {method} {path}: {answer.status_code}")
        for name, spec in SHIPPED_ROLES.items():
            create_user(db, settings, f"user-{name}", PASSWORD, [name], actor="test")
            app_client.cookies.clear()
            assert login(app_client, f"user-{name}") == 303
            for (method, path), rule in PAGE_ROUTES.items():
                permission = rule.partition(" ")[2]
                if not permission:
                    continue
                url = re.sub(r"\{[^}]+\}", DUMMY, path)
                if method == "GET":
                    status = app_client.get(url).status_code
                else:
                    token = _csrf(app_client.get("/console/cases").text) if spec.permissions else ""
                    data = {"csrf_token": token, "reason": "matrix test of the console"}
                    status = app_client.post(url, data=data).status_code
                allowed = grants(spec.permissions, permission)
                if (status == 403) == allowed:
                    wrong.append(
                        f"{name} {method} {path}: {status}, expected {'allowed' if allowed else 403}"
                    )
    assert wrong == []


def _records_of_central(client: TestClient, db: Database) -> dict[str, str]:
    case_id = client.post("/api/v1/referrals", json=referral(location="central")).json()["case_id"]
    incomplete = referral(location="central")
    incomplete["patient"] = {"given_name": "Only", "family_name": "Name"}
    exception_id = client.post("/api/v1/referrals", json=incomplete).json()["exception_id"]
    with db.transaction() as session:
        item = session.get(ExceptionItem, exception_id)
        assert item is not None and item.intake_item_id is not None
        intake_id = item.intake_item_id
        document = Document(intake_item_id=intake_id, filename="x.txt", content_type="text/plain")
        document.size_bytes, document.sha256, document.content, document.text = 1, "0" * 64, b"x", "x"
        session.add(document)
        session.flush()
        document_id = document.id
    quarantined = client.post(
        "/api/v1/referrals",
        content=b'{"location": "central", "broken',
        headers={"Content-Type": "application/json"},
    ).json()["quarantine_id"]
    bundle = referral_bundle()
    bundle["entry"][2]["resource"]["locationReference"] = [{"display": "central"}]
    created = client.post("/fhir/r4", json=bundle, headers=FHIR).json()
    service_request = created["entry"][2]["response"]["location"].split("/")[1]
    home = client.post(
        "/api/v1/referrals", json=referral(location="central", service_code="HOME-WOUND")
    ).json()
    tuesday = next_monday(0).astimezone(LONDON).date() + dt.timedelta(days=1)
    plan = client.post(
        "/api/v1/staffing/plans",
        json={"case_id": home["case_id"], "zone": "C1", "pattern": [{"weekday": "tue", "time": "10:00"}],
              "first_day": tuesday.isoformat(), "last_day": tuesday.isoformat(), "staff": "SOUTH-NURSE-3"},
    ).json()  # fmt: skip
    conflict = client.post(
        "/api/v1/staffing/conflicts",
        json={"staff": "SOUTH-NURSE-3", "kind": "sickness", "appointment_ids": [plan["visits"][0]["id"]]},
    ).json()
    activate_policies(db, policies_directory(), actor="test", reason="the shipped policies")
    approval = client.post(
        "/api/v1/approvals",
        json={"subject_type": "staff_conflict", "subject_id": conflict["id"], "policy": "staffing-exception"},
    )
    assert approval.status_code == 201, approval.text
    with db.transaction() as session:  # a delivery of central's case to a connector
        event_id = session.scalars(select(BusinessEvent.id).where(BusinessEvent.case_id == case_id)).first()
        delivery = Delivery(
            event_id=event_id,
            connector="billing",
            event_type="case.created",
            case_id=case_id,
            location_id=session.get(ServiceCase, case_id).location_id,
        )  # type: ignore[union-attr]
        session.add(delivery)
        session.flush()
        delivery_id = delivery.id
    return {
        "delivery_id": delivery_id,
        "approval_id": approval.json()["id"],
        "plan_id": plan["id"],
        "conflict_id": conflict["id"],
        "case_id": case_id,
        "service_request_id": service_request,
        "exception_id": exception_id,
        "document_id": document_id,
        "intake": intake_id,
        "quarantine": quarantined,
    }


def test_no_list_or_detail_route_shows_another_locations_records(client: TestClient, db: Database) -> None:
    central = _records_of_central(client, db)
    secret, _ = create_token(db, "north-all", ["admin", "phi:read"], actor="test", locations=["north"])
    north = {"Authorization": f"Bearer {secret}"}
    leaks: list[str] = []
    for method, path, _ in _operations(client.app.openapi()):  # type: ignore[attr-defined]
        if method != "GET" or path in OPEN_ROUTES or path.startswith(ORGANISATION_WIDE):
            continue
        names = re.findall(r"\{([^}]+)\}", path)
        if not names:  # a list: none of central's ids may appear
            body = client.get(
                path, headers=north, params={"based-on": f"ServiceRequest/{central['service_request_id']}"}
            ).text
            leaks += [f"{path} lists {kind}" for kind, id_ in central.items() if id_ in body]
            continue
        kind = names[0] if names[0] != "item_id" else ("intake" if "intake" in path else "quarantine")
        url = path.replace("{" + names[0] + "}", central[kind])
        answer = client.get(url, headers=north)
        if answer.status_code != 404:
            leaks.append(f"{url}: {answer.status_code}")
        assert client.get(url).status_code in (200, 204), f"{url} should exist for an unbound caller"
    assert leaks == []
