"""The console's work queues on SQLite and PostgreSQL: my work, an intake exception resolved into a
case, a quarantined payload replayed and another discarded, a case moved through its actions and
its prior authorisation requested and approved; each as the roles allow, each form with its CSRF
token."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from careops.api.app import create_app
from careops.db import Database
from careops.domain.models import BusinessEvent, IntakeItem, ServiceCase, User
from careops.governance.users import create_user
from careops.orchestration.exception_queue import fields_to_complete
from careops.settings import Settings
from tests.conftest import referral
from tests.governance.test_console_login import PASSWORD, _csrf, login


@pytest.fixture
def api(client: TestClient) -> TestClient:
    return client


@pytest.fixture
def console(settings: Settings, db: Database) -> Iterator[TestClient]:
    for name, roles in (("cora", ["intake_coordinator"]), ("ian", ["integration_engineer"])):
        create_user(db, settings, name, PASSWORD, roles, actor="test")
    with TestClient(create_app(settings, db), raise_server_exceptions=False) as browser:
        yield browser


def _as(console: TestClient, name: str) -> TestClient:
    console.cookies.clear()
    assert login(console, name) == 303
    return console


def test_my_work_counts_each_queue_and_what_is_past_its_service_level(
    api: TestClient, console: TestClient
) -> None:
    for _ in range(2):
        api.post("/api/v1/referrals", json=referral(service_code="NO-SUCH-SCAN"))
    api.post("/api/v1/referrals", content=b'{"broken', headers={"Content-Type": "application/json"})
    page = _as(console, "cora").get("/console/work")
    assert page.status_code == 200
    row = re.search(r'<a href="/console/exceptions\?queue=intake">intake</a></td><td>(\d+)</td>', page.text)
    assert row is not None and row.group(1) == "2"
    assert "1 refused payload waiting" in page.text
    nav = re.findall(r'<nav aria-label="Main">(.*?)</nav>', page.text)[0]
    assert "Exceptions" in nav and "Quarantine" in nav and "Cases" in nav
    engineer_nav = re.findall(
        r'<nav aria-label="Main">(.*?)</nav>', _as(console, "ian").get("/console/work").text
    )[0]
    assert "Cases" not in engineer_nav  # no cases:read for this role


def test_an_intake_exception_is_resolved_into_one_case(
    api: TestClient, console: TestClient, db: Database
) -> None:
    body = referral()
    body["patient"] = {**body["patient"], "birth_date": None}  # type: ignore[dict-item]
    answer = api.post("/api/v1/referrals", json={**body, "service_code": "NO-SUCH-SCAN"}).json()
    exception_id = answer["exception_id"]
    console = _as(console, "cora")
    listed = console.get("/console/exceptions", params={"reason": "unknown_service_code"}).text
    assert exception_id[-8:] in listed
    assert (
        exception_id[-8:] not in console.get("/console/exceptions", params={"reason": "unknown_payer"}).text
    )
    page = console.get(f"/console/exceptions/{exception_id}").text
    assert 'name="service_code"' in page
    token = _csrf(page)
    still = console.post(
        f"/console/exceptions/{exception_id}/resolve", data={"csrf_token": token, "service_code": "NOPE"}
    )
    assert still.status_code == 422 and 'value="NOPE"' in still.text  # what was typed stays
    fields = {name: "1980-04-12" if "birth" in name else "XRAY-CHEST" for name in fields_to_complete(
        ["unknown_service_code", "missing_field:patient.birth_date"])}  # fmt: skip
    done = console.post(
        f"/console/exceptions/{exception_id}/resolve",
        data={"csrf_token": token, **fields},
        follow_redirects=False,
    )
    assert done.status_code == 303 and done.headers["location"].startswith("/console/cases/")
    again = console.post(f"/console/exceptions/{exception_id}/resolve", data={"csrf_token": token, **fields})
    assert again.status_code == 409  # resolved once
    with db.sessions() as session:
        assert session.scalar(select(func.count()).select_from(ServiceCase)) == 1


def test_a_quarantined_payload_is_shown_masked_replayed_or_discarded(
    api: TestClient, console: TestClient, db: Database
) -> None:
    broken = api.post("/api/v1/referrals", json={**referral(), "priority": "whenever"}).json()[
        "quarantine_id"
    ]
    kept = api.post("/api/v1/referrals", content=b'{"x', headers={"Content-Type": "application/json"}).json()
    console = _as(console, "cora")  # may read quarantine, not replay it
    shown = console.get(f"/console/quarantine/{broken}").text
    assert "Replay" not in shown and "whenever" in shown
    assert (
        console.post(f"/console/quarantine/{broken}/replay", data={"csrf_token": _csrf(shown)}).status_code
        == 403
    )
    console = _as(console, "ian")
    shown = console.get(f"/console/quarantine/{broken}").text
    assert "hidden for your role" in shown and "whenever" not in shown  # raw payload masked for this role
    token = _csrf(shown)
    still = console.post(f"/console/quarantine/{broken}/replay", data={"csrf_token": token})
    assert still.status_code == 422 and "still rejected" in still.text
    no_reason = console.post(
        f"/console/quarantine/{kept['quarantine_id']}/discard", data={"csrf_token": token}
    )
    assert no_reason.status_code == 422
    gone = console.post(
        f"/console/quarantine/{kept['quarantine_id']}/discard",
        data={"csrf_token": token, "reason": "test message from the partner"},
        follow_redirects=False,
    )
    assert gone.status_code == 303
    with db.sessions() as session:
        item = session.get(IntakeItem, kept["quarantine_id"])
        assert item is not None and item.status == "discarded"
    assert kept["quarantine_id"][-8:] not in console.get("/console/quarantine").text
    forged = console.post(
        f"/console/quarantine/{broken}/discard", data={"csrf_token": "x", "reason": "whatever it is"}
    )
    assert forged.status_code == 403


def test_a_case_moves_through_its_actions_from_its_buttons(
    api: TestClient, console: TestClient, db: Database
) -> None:
    case_id = api.post("/api/v1/referrals", json=referral()).json()["case_id"]
    console = _as(console, "cora")
    page = console.get(f"/console/cases/{case_id}").text
    assert (
        "Book the first free slot" in page
        and 'value="schedule"' not in page
        and 'value="invoice"' not in page
    )
    token = _csrf(page)
    moved = console.post(f"/console/cases/{case_id}/book", data={"csrf_token": token})
    assert moved.status_code == 200 and "scheduled" in moved.text and "NORTH-XR-1" in moved.text
    refused = console.post(
        f"/console/cases/{case_id}/transitions", data={"csrf_token": token, "action": "invoice"}
    )
    assert refused.status_code == 409 and 'role="alert"' in refused.text
    with db.sessions() as session:
        case = session.get(ServiceCase, case_id)
        assert case is not None and case.status == "scheduled"
        cora = session.scalars(select(User.id).where(User.username == "cora")).one()
        moved_by = session.scalars(
            select(BusinessEvent.actor).where(
                BusinessEvent.case_id == case_id, BusinessEvent.type == "case.transitioned"
            )
        ).all()
        assert moved_by == [cora]  # the refused action wrote nothing


def test_items_are_claimed_assigned_in_bulk_and_given_back(
    api: TestClient, console: TestClient, db: Database
) -> None:
    ids = [
        api.post("/api/v1/referrals", json=referral(service_code="NO-SUCH-SCAN")).json()["exception_id"]
        for _ in range(3)
    ]
    console = _as(console, "cora")
    page = console.get(f"/console/exceptions/{ids[0]}").text
    assert f'href="/console/exceptions/{ids[1]}" accesskey="n" id="next"' in page  # the next one waiting
    assert 'id="next"' not in console.get(f"/console/exceptions/{ids[2]}").text  # the last one
    token = _csrf(page)
    assert console.post(f"/console/exceptions/{ids[0]}/claim", data={"csrf_token": token}).status_code == 200
    assert 'id="assignee">cora<' in console.get(f"/console/exceptions/{ids[0]}").text
    mine = console.get("/console/exceptions", params={"assigned": "me"}).text
    assert ids[0][-8:] in mine and ids[1][-8:] not in mine
    bulk = {"csrf_token": token, "assignee": "ian", **{f"item-{i}": "on" for i in ids[1:]}}
    assert console.post("/console/exceptions/assign", data=bulk, follow_redirects=False).status_code == 303
    unknown = console.post("/console/exceptions/assign", data={**bulk, "assignee": "nobody-here"})
    assert unknown.status_code == 422
    back = {"csrf_token": token, "assignee": "-", f"item-{ids[0]}": "on"}
    console.post("/console/exceptions/assign", data=back)
    nobody = console.get("/console/exceptions", params={"assigned": "nobody"}).text
    assert ids[0][-8:] in nobody and ids[1][-8:] not in nobody
    with db.sessions() as session:
        assigned = session.scalars(
            select(BusinessEvent.payload)
            .where(BusinessEvent.type == "exception.assigned")
            .order_by(BusinessEvent.id)
        ).all()
    assert [p["assignee"] for p in assigned] == ["cora", "ian", "ian", None]


def test_patients_are_found_by_mrn_name_or_birth_date_masked_per_role(
    api: TestClient, console: TestClient, db: Database, settings: Settings
) -> None:
    body = referral()
    body["patient"] = {
        **body["patient"],
        "mrn": "MRN-FIND-77",
        "given_name": "Zoe",
        "family_name": "Quill_son",
    }  # type: ignore[dict-item]
    case_id = api.post("/api/v1/referrals", json=body).json()["case_id"]
    api.post("/api/v1/referrals", json=referral())  # another patient
    console = _as(console, "cora")
    token = _csrf(console.get("/console/patients").text)

    def search(**fields: str) -> Any:
        return console.post("/console/patients", data={"csrf_token": token, **fields})

    by_mrn = search(mrn="mrn-find-77").text  # case and spaces aside
    assert "Zoe Quill_son" in by_mrn and case_id[-8:] in by_mrn and "1 patient " in by_mrn
    assert "Zoe" in search(family_name="qUILL_").text
    assert "No patient matches" in search(family_name="Quill%").text
    assert "Zoe" in search(birth_date="1980-04-12", given_name="zo").text
    bad = search(birth_date="12/04/1980")
    assert bad.status_code == 422 and "YYYY-MM-DD" in bad.text
    assert search().status_code == 422  # nothing to search by
    create_user(db, settings, "sam", PASSWORD, ["scheduler"], actor="test")
    console = _as(console, "sam")
    token = _csrf(console.get("/console/patients").text)
    masked = search(family_name="Quill").text
    assert "<td>1980</td>" in masked and "1980-04-12" not in masked  # the scheduler sees the year only
    assert "MRN-FIND-77" not in masked


def test_queue_ages_are_measured_at_their_median_and_90th_percentile(api: TestClient, db: Database) -> None:
    import datetime as dt

    from careops.domain.models import ExceptionItem, utcnow
    from careops.governance.scoping import EVERYWHERE
    from careops.orchestration.exception_queue import queue_summary

    ids = [
        api.post("/api/v1/referrals", json=referral(service_code="NO-SUCH-SCAN")).json()["exception_id"]
        for _ in range(10)
    ]
    now = utcnow()
    with db.transaction() as session:  # waits of 0.5, 1.5, … 9.5 hours
        for hours, exception_id in enumerate(ids, start=1):
            item = session.get(ExceptionItem, exception_id)
            assert item is not None
            item.created_at = now - dt.timedelta(hours=hours - 0.5)
    [intake] = [q for q in queue_summary(db, EVERYWHERE) if q["queue"] == "intake"]
    hour = 3600
    assert intake["open"] == 10 and intake["past_sla"] == 6  # over 4 h: 4.5 h … 9.5 h
    assert 4.5 * hour <= intake["p50_age_seconds"] < 4.5 * hour + 60  # the 5th youngest of 10
    assert 8.5 * hour <= intake["p90_age_seconds"] < 8.5 * hour + 60  # the 9th
    assert 9.5 * hour <= intake["oldest_age_seconds"] < 9.5 * hour + 60


def test_a_url_or_form_holding_a_nul_is_refused_not_a_500(api: TestClient, console: TestClient) -> None:
    console = _as(console, "cora")
    for url in (
        "/console/cases/%00",
        "/console/exceptions/%00",
        "/console/quarantine/%00",
        "/console/cases/nope",
    ):
        assert console.get(url).status_code == 404, url  # names no record
    for url in (
        "/console/exceptions?queue=%00",
        "/console/exceptions?reason=a%00b",
        "/console/dashboard?location=%00",
    ):
        assert console.get(url).status_code in (403, 422), url
    token = _csrf(console.get("/console/patients").text)
    searched = console.post("/console/patients", data={"csrf_token": token, "family_name": "Ex\x00"})
    assert searched.status_code == 422 and "NUL" in searched.text


def test_a_coordinator_requests_and_a_reviewer_approves(
    client: TestClient, console: TestClient, db: Database, settings: Settings
) -> None:
    create_user(db, settings, "rita", PASSWORD, ["authorisation_reviewer"], actor="test")
    case_id = client.post(
        "/api/v1/referrals", json=referral(service_code="MRI-KNEE", payer_code="AXA")
    ).json()["case_id"]
    coordinator = _as(console, "cora")
    page = coordinator.get(f"/console/cases/{case_id}").text
    assert "Request the authorisation" in page and "Book the first free slot" not in page
    requested = coordinator.post(
        f"/console/cases/{case_id}/authorisations", data={"csrf_token": _csrf(page), "units": "1"}
    )
    assert requested.status_code == 200 and "requested" in requested.text
    authorisation_id = client.get(f"/api/v1/cases/{case_id}").json()["authorisations"][0]["id"]
    approval = {
        "csrf_token": _csrf(requested.text),
        "number": "AXA-9",
        "valid_from": dt.date.today().isoformat(),
        "valid_days": "90",
    }
    assert (
        coordinator.post(f"/console/authorisations/{authorisation_id}/approve", data=approval).status_code
        == 403
    )
    reviewer = _as(console, "rita")
    page = reviewer.get(f"/console/cases/{case_id}").text
    decided = reviewer.post(
        f"/console/authorisations/{authorisation_id}/approve", data={**approval, "csrf_token": _csrf(page)}
    )
    assert decided.status_code == 200 and "ready_to_schedule" in decided.text and "AXA-9" in decided.text
