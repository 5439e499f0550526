"""Prior authorisations on SQLite and PostgreSQL: a case that needs one is not authorised by hand;
requested once at a time; an approval (with its number and validity) makes the case ready to
schedule, a denial leaves it waiting; booking past the validity opens an exception item."""

from __future__ import annotations

import datetime as dt

from fastapi.testclient import TestClient
from sqlalchemy import select

from careops.db import Database
from careops.domain.models import BusinessEvent, ExceptionItem
from careops.orchestration.authorisations import expire_authorisations
from tests.conftest import referral
from tests.orchestration.test_scheduling import next_monday


def _waiting_case(client: TestClient) -> str:
    answer = client.post("/api/v1/referrals", json=referral(service_code="MRI-KNEE", payer_code="AXA"))
    assert answer.status_code == 201 and answer.json()["status"] == "awaiting_authorisation", answer.text
    return str(answer.json()["case_id"])


def test_an_approval_lets_the_case_be_scheduled_and_a_denial_keeps_it_waiting(
    client: TestClient, db: Database
) -> None:
    case_id = _waiting_case(client)
    by_hand = client.post(f"/api/v1/cases/{case_id}/transitions", json={"action": "authorise"})
    assert by_hand.status_code == 409 and "authorisation" in by_hand.json()["detail"]
    first = client.post(f"/api/v1/cases/{case_id}/authorisations", json={"units": 2})
    assert first.status_code == 201 and first.json()["status"] == "requested"
    again = client.post(f"/api/v1/cases/{case_id}/authorisations", json={"units": 2})
    assert again.status_code == 409
    denied = client.post(f"/api/v1/authorisations/{first.json()['id']}/deny")
    assert denied.status_code == 200 and denied.json()["status"] == "denied"
    assert client.get(f"/api/v1/cases/{case_id}").json()["status"] == "awaiting_authorisation"
    second = client.post(f"/api/v1/cases/{case_id}/authorisations", json={"units": 1}).json()
    today = dt.date.today()
    approval = {"number": "AXA-778", "valid_from": today.isoformat(), "valid_days": 30}
    approved = client.post(f"/api/v1/authorisations/{second['id']}/approve", json=approval)
    assert approved.status_code == 200
    assert approved.json()["valid_to"] == (today + dt.timedelta(days=29)).isoformat()
    assert approved.json()["approved_units"] == 1
    assert client.post(f"/api/v1/authorisations/{second['id']}/approve", json=approval).status_code == 409
    view = client.get(f"/api/v1/cases/{case_id}").json()
    assert view["status"] == "ready_to_schedule"
    assert [a["status"] for a in view["authorisations"]] == ["denied", "approved"]
    with db.sessions() as session:
        kinds = session.scalars(
            select(BusinessEvent.type)
            .where(BusinessEvent.subject_type == "authorisation")
            .order_by(BusinessEvent.id)
        ).all()
    assert kinds == ["authorisation.requested", "authorisation.denied", "authorisation.requested",
                     "authorisation.approved"]  # fmt: skip


def test_booking_after_the_validity_opens_an_exception_item(client: TestClient, db: Database) -> None:
    case_id = _waiting_case(client)
    requested = client.post(f"/api/v1/cases/{case_id}/authorisations", json={"units": 1}).json()
    start = next_monday(10)
    valid_from = (start - dt.timedelta(days=30)).date()
    approval = {"number": "AXA-1", "valid_from": valid_from.isoformat(), "valid_days": 7}  # over before
    assert client.post(f"/api/v1/authorisations/{requested['id']}/approve", json=approval).status_code == 200
    booked = client.post("/api/v1/appointments", json={"case_id": case_id, "starts_at": start.isoformat()})
    assert booked.status_code == 201, booked.text
    with db.sessions() as session:
        items = session.scalars(select(ExceptionItem).where(ExceptionItem.case_id == case_id)).all()
    assert [(i.queue, i.reason_codes) for i in items] == [
        ("authorisation", ["authorisation_expires_before_appointment"])
    ]


def test_an_ended_approval_expires_and_asks_a_person_to_renew_it(client: TestClient, db: Database) -> None:
    case_id = _waiting_case(client)
    requested = client.post(f"/api/v1/cases/{case_id}/authorisations", json={"units": 1}).json()
    start = dt.date.today() - dt.timedelta(days=40)
    approval = {"number": "AXA-9", "valid_from": start.isoformat(), "valid_days": 30}
    assert client.post(f"/api/v1/authorisations/{requested['id']}/approve", json=approval).status_code == 200
    assert expire_authorisations(db) == 1
    assert expire_authorisations(db) == 0  # once
    [record] = client.get(f"/api/v1/cases/{case_id}").json()["authorisations"]
    assert record["status"] == "expired"
    queue = client.get("/api/v1/exceptions", params={"queue": "authorisation"}).json()["items"]
    assert [(i["case_id"], i["reason_codes"]) for i in queue] == [(case_id, ["authorisation_expired"])]
    with db.sessions() as session:
        kinds = session.scalars(select(BusinessEvent.type).where(BusinessEvent.case_id == case_id)).all()
    assert "authorisation.expired" in kinds
