"""The console's reference data on SQLite and PostgreSQL: an integration engineer searches, edits,
adds and retires records (errors named by field, what typed kept); a coordinator maps an unknown
code from the exception item's page (the suggestion first) and the waiting item becomes a case;
roles without the permissions are refused."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from careops.api.app import create_app
from careops.db import Database
from careops.domain.models import BusinessEvent, Payer, Service
from careops.governance.users import create_user
from careops.settings import Settings
from tests.conftest import referral
from tests.governance.test_console_login import PASSWORD, _csrf
from tests.web.test_console_queues import _as


@pytest.fixture
def console(settings: Settings, db: Database) -> Iterator[TestClient]:
    for name, roles in (
        ("cora", ["intake_coordinator"]),
        ("ian", ["integration_engineer"]),
        ("sam", ["scheduler"]),
    ):
        create_user(db, settings, name, PASSWORD, roles, actor="test")
    with TestClient(create_app(settings, db), raise_server_exceptions=False) as browser:
        yield browser


def test_records_are_searched_edited_added_and_retired(console: TestClient, db: Database) -> None:
    console = _as(console, "ian")
    listed = console.get("/console/admin/reference", params={"kind": "services", "q": "mri"}).text
    assert "MRI-KNEE" in listed and "XRAY-CHEST" not in listed
    page = console.get("/console/admin/reference/services/edit", params={"key": "MRI-KNEE"}).text
    assert 'value="AXA=420;BUPA=400;NHS=180;SELF=450"' in page
    form = {
        "csrf_token": _csrf(page),
        "original_key": "MRI-KNEE",
        "code": "MRI-KNEE",
        "name": "MRI knee (3T)",
        "aliases": "73721;MRI KNEE",
        "required_fields": "patient.birth_date;referrer.code;payer_code;member_id",
        "requires_authorisation": "true",
        "duration_minutes": "45",
        "resources": "mri-scanner;radiographer",
        "authorisation": "",
        "prices": "NHS=190;AXA=420;BUPA=400;SELF=450",
        "materials": "",
        "procedure_code": "73721",
        "requires_result": "true",
        "billing_checklist": "signed_report;procedure_code;diagnosis_code",
        "preparation_minutes": "10",
        "home_visit": "false",
        "reason": "3T scanner",
    }
    saved = console.post("/console/admin/reference/services/edit", data=form)
    assert (
        saved.status_code == 200
        and "change   services MRI-KNEE (name, duration_minutes, prices)" in saved.text
    )
    wrong = console.post("/console/admin/reference/services/edit", data={**form, "duration_minutes": "-3"})
    assert (
        wrong.status_code == 422
        and "duration_minutes: Input should be greater than or equal to 1" in wrong.text
    )
    assert 'value="-3"' in wrong.text  # what was typed stays
    new = console.get("/console/admin/reference/payers/edit").text
    added = console.post(
        "/console/admin/reference/payers/edit",
        data={
            "csrf_token": _csrf(new),
            "original_key": "",
            "code": "VITALITY",
            "name": "Vitality Health",
            "category": "private",
            "requires_authorisation": "true",
        },
    )
    assert added.status_code == 200 and "add      payers VITALITY" in added.text
    retired = console.post(
        "/console/admin/reference/payers/retire",
        data={"csrf_token": _csrf(new), "key": "SELF", "reason": "no longer"},
        follow_redirects=False,
    )
    assert retired.status_code == 303
    with db.sessions() as session:
        mri = session.scalars(select(Service).where(Service.code == "MRI-KNEE")).one()
        assert (mri.name, mri.duration_minutes) == ("MRI knee (3T)", 45)
        payers = {p.code: p for p in session.scalars(select(Payer))}
        assert payers["VITALITY"].requires_authorisation and payers["SELF"].retired_at is not None
        reasons = session.scalars(
            select(BusinessEvent.payload).where(
                BusinessEvent.type.like("reference.%"), BusinessEvent.actor != "seed:demo"
            )
        ).all()
    assert {p["reason"] for p in reasons} == {"3T scanner", "changed in the console", "no longer"}
    assert "SELF" not in console.get("/console/admin/reference", params={"kind": "payers"}).text
    assert (
        "SELF" in console.get("/console/admin/reference", params={"kind": "payers", "retired": "true"}).text
    )


def test_a_coordinator_maps_an_unknown_code_from_the_item_and_it_becomes_a_case(
    client: TestClient, console: TestClient
) -> None:
    waiting = client.post("/api/v1/referrals", json=referral(service_code="CXR", location="north"))
    assert waiting.status_code == 201  # CXR is an alias of XRAY-CHEST: known
    unknown = client.post(
        "/api/v1/referrals",
        json={**referral(service_code="71045-X"), "service_text": "Xray exam chest 1 view"},
    )
    exception_id = unknown.json()["exception_id"]
    console = _as(console, "cora")
    page = console.get(f"/console/exceptions/{exception_id}").text
    assert "Codes careops does not know" in page and "<code>71045-X</code>" in page
    assert 'name="target" maxlength="64" required list="targets-1" value="XRAY-CHEST"' in page
    mapped = console.post(
        f"/console/exceptions/{exception_id}/map",
        data={
            "csrf_token": _csrf(page),
            "kind": "service",
            "code": "71045-X",
            "target": "XRAY-CHEST",
            "sender": "*",
            "suggested": "XRAY-CHEST",
        },
        follow_redirects=False,
    )
    assert mapped.status_code == 303 and mapped.headers["location"].startswith("/console/cases/")
    later = client.post("/api/v1/referrals", json=referral(service_code="71045-x"))
    assert later.status_code == 201


def test_roles_without_the_permissions_are_refused(console: TestClient) -> None:
    scheduler = _as(console, "sam")
    assert scheduler.get("/console/admin/reference").status_code == 403
    coordinator = _as(console, "cora")
    assert coordinator.get("/console/admin/reference").status_code == 200  # reads
    page = coordinator.get("/console/admin/reference").text
    assert "Add one" not in page
    assert coordinator.get("/console/admin/reference/payers/edit").status_code == 403  # does not write
