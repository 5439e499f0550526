"""The console's pages after intake on SQLite and PostgreSQL: the appointment board, availability
search, authorisations expiring, results waiting for a case (matched from the page), and cases
held back from billing, checked and invoiced from the case page; each as the roles allow."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from careops.api.app import create_app
from careops.db import Database
from careops.governance.users import create_user
from careops.settings import Settings
from tests.conftest import referral
from tests.governance.test_console_login import PASSWORD, _csrf, login
from tests.orchestration.test_results_and_billing import ack, booked_case, result_message
from tests.orchestration.test_scheduling import next_monday
from tests.orchestration.test_staffing import _plan


@pytest.fixture
def console(settings: Settings, db: Database) -> Iterator[TestClient]:
    for name, roles in (("sam", ["scheduler"]), ("fin", ["finance"])):
        create_user(db, settings, name, PASSWORD, roles, actor="test")
    with TestClient(create_app(settings, db), raise_server_exceptions=False) as browser:
        yield browser


def _as(console: TestClient, name: str) -> TestClient:
    console.cookies.clear()
    assert login(console, name) == 303
    return console


def test_the_board_and_availability_show_a_location_s_day(client: TestClient, console: TestClient) -> None:
    case_id, _, _ = booked_case(client, diagnosis_codes=["M25.561"])
    day = client.get(f"/api/v1/cases/{case_id}").json()["appointments"][0]["starts_at"][:10]
    board = _as(console, "sam").get("/console/board", params={"location": "north", "day": day})
    assert board.status_code == 200
    assert "NORTH-MRI-1" in board.text and f'href="/console/cases/{case_id}"' in board.text
    assert console.get("/console/board", params={"location": "nowhere"}).status_code == 404
    monday = next_monday(0).date().isoformat()
    found = console.get(
        "/console/availability", params={"service": "XRAY-CHEST", "location": "north", "day": monday}
    )
    assert found.status_code == 200 and "NORTH-XR-1, NORTH-RAD-1" in found.text
    lacking = console.get("/console/availability", params={"service": "XRAY-CHEST", "location": "south"})
    assert "south has no x-ray-room, radiographer" in lacking.text
    assert console.get("/console/billing").status_code == 403  # a scheduler does not bill


def test_an_unmatched_result_is_matched_and_the_case_billed_from_the_console(
    client: TestClient, console: TestClient
) -> None:
    case_id, _, _ = booked_case(client, diagnosis_codes=["M25.561"])
    assert ack(client, result_message("NO-SUCH-ORDER", "MRN-NOBODY"))[0] == "AA"
    page = _as(console, "sam").get("/console/results")
    assert page.status_code == 200 and "NO-SUCH" not in page.text  # ids and codes only
    result_id = client.get("/api/v1/results", params={"unmatched": "true"}).json()["items"][0]["id"]
    matched = console.post(
        f"/console/results/{result_id}/match",
        data={"csrf_token": _csrf(page.text), "case_id": case_id},
        follow_redirects=False,
    )
    assert matched.status_code == 303 and matched.headers["location"] == f"/console/cases/{case_id}"
    assert "Every result is on its case." in console.get("/console/results").text
    case_page = _as(console, "fin").get(f"/console/cases/{case_id}")
    assert "Request the invoice" in case_page.text and "M25.561" in case_page.text
    token = _csrf(case_page.text)
    requested = console.post(
        f"/console/cases/{case_id}/invoices", data={"csrf_token": token}, follow_redirects=False
    )
    assert requested.status_code == 303
    invoice_id = client.get(f"/api/v1/cases/{case_id}").json()["invoices"][0]["id"]
    for step, data in (("approve", {}), ("send", {"external_reference": "INV-9"})):
        moved = console.post(f"/console/invoices/{invoice_id}/{step}", data={"csrf_token": token, **data})
        assert moved.status_code == 200
    after = client.get(f"/api/v1/cases/{case_id}").json()
    assert after["status"] == "invoiced" and after["invoices"][0]["external_reference"] == "INV-9"
    refused = console.post(f"/console/invoices/{invoice_id}/approve", data={"csrf_token": token})
    assert refused.status_code == 409


def test_billing_lists_held_back_cases_and_authorisations_those_ending(
    client: TestClient, console: TestClient
) -> None:
    case_id, order, mrn = booked_case(client)  # no diagnosis code: held back
    assert ack(client, result_message(order, mrn))[0] == "AA"
    billing = _as(console, "fin").get("/console/billing")
    assert billing.status_code == 200
    assert f"/console/cases/{case_id}" in billing.text and "missing_diagnosis_code" in billing.text
    checked = console.post(
        f"/console/cases/{case_id}/billing-readiness",
        data={"csrf_token": _csrf(billing.text)},
        follow_redirects=False,
    )
    assert checked.status_code == 303
    waiting = client.post(
        "/api/v1/referrals", json=referral(service_code="MRI-KNEE", payer_code="AXA")
    ).json()["case_id"]
    requested = client.post(f"/api/v1/cases/{waiting}/authorisations", json={"units": 1}).json()
    start = (dt.date.today() - dt.timedelta(days=80)).isoformat()
    approval = {"number": "AXA-1", "valid_from": start, "valid_days": 90}
    assert client.post(f"/api/v1/authorisations/{requested['id']}/approve", json=approval).status_code == 200
    page = _as(console, "sam").get("/console/authorisations", params={"within": 30})
    assert page.status_code == 200 and "AXA-1" in page.text and f"/console/cases/{waiting}" in page.text


def test_stock_and_a_replenishment_from_the_console(
    settings: Settings, db: Database, console: TestClient
) -> None:
    create_user(db, settings, "proc", PASSWORD, ["procurement"], actor="test")
    create_user(db, settings, "proc2", PASSWORD, ["procurement"], actor="test")
    page = _as(console, "proc").get("/console/stock", params={"location": "south"})
    assert page.status_code == 200
    first_row = page.text.split("<tbody>")[1].split("</tr>")[0]
    assert "SALINE-100ML" in first_row and "yes" in first_row  # under its minimum, listed first
    token = _csrf(page.text)
    drafted = console.post("/console/replenishments", data={"csrf_token": token, "location": "south"})
    assert drafted.status_code == 200 and "32 x SALINE-100ML" in drafted.text
    request_id = drafted.text.split('action="/console/replenishments/')[1].split("/")[0]
    assert (
        console.post(f"/console/replenishments/{request_id}/submit", data={"csrf_token": token}).status_code
        == 200
    )
    mine = console.post(f"/console/replenishments/{request_id}/approve", data={"csrf_token": token})
    assert mine.status_code == 403 and "separation of duties" in mine.text
    other = _as(console, "proc2")
    token = _csrf(other.get("/console/stock").text)
    assert (
        other.post(f"/console/replenishments/{request_id}/approve", data={"csrf_token": token}).status_code
        == 200
    )
    assert _as(console, "sam").get("/console/stock").status_code == 403  # a scheduler keeps no stock


def test_a_supervisor_reports_a_conflict_and_reassigns_from_the_console(
    settings: Settings, db: Database, client: TestClient, console: TestClient
) -> None:
    plan = _plan(client, ["tue"], staff="SOUTH-NURSE-1", time="11:00")
    day = dt.datetime.fromisoformat(plan["visits"][0]["starts_at"]).date().isoformat()
    create_user(db, settings, "sue", PASSWORD, ["field_supervisor"], actor="test")
    page = _as(console, "sue").get("/console/staffing")
    assert page.status_code == 200 and "No open conflict." in page.text
    token = _csrf(page.text)
    reported = console.post(
        "/console/staffing/conflicts",
        data={"csrf_token": token, "staff": "SOUTH-NURSE-1", "kind": "sickness", "day": day, "note": "flu"},
    )
    assert reported.status_code == 200 and "Reassign to SOUTH-NURSE-2" in reported.text, reported.text
    assert "Reassign to SOUTH-NURSE-3" in reported.text
    conflict_id = reported.url.path.rsplit("/", 1)[1]
    listed = console.get("/console/staffing")
    assert f"/console/staffing/conflicts/{conflict_id}" in listed.text
    done = console.post(
        f"/console/staffing/conflicts/{conflict_id}/reassign",
        data={"csrf_token": token, "staff": "SOUTH-NURSE-2"},
    )
    assert done.status_code == 200 and "reassigned to SOUTH-NURSE-2" in done.text
    again = console.post(
        f"/console/staffing/conflicts/{conflict_id}/reassign",
        data={"csrf_token": token, "staff": "SOUTH-NURSE-3"},
    )
    assert again.status_code == 409 and "resolved" in again.text
    bad = console.post(
        "/console/staffing/conflicts", data={"csrf_token": token, "staff": "X", "kind": "x", "day": day}
    )
    assert bad.status_code == 422 and "the kind" in bad.text
    assert _as(console, "sam").get("/console/staffing").status_code == 403  # a scheduler reassigns nobody
