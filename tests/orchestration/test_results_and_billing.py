"""From a booked case to a paid invoice on SQLite and PostgreSQL: results (HL7 ORU^R01) matched to
their case by order number or left for a person, charges (DFT^P03) as billing input, referral
updates and cancellations (REF^I13, REF^I14), merges (ADT^A40) for a person, the billing checklist
and invoice requests. Messages go through the real HL7 HTTP route and get their ACKs."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import hl7
from fastapi.testclient import TestClient
from sqlalchemy import select

from careops.db import Database
from careops.domain.models import BusinessEvent, CaseCharge, ExceptionItem, Result
from tests.conftest import referral
from tests.orchestration.test_scheduling import next_monday

HL7 = {"Content-Type": "application/hl7-v2"}


def message(kind: str, *segments: str) -> bytes:
    control = uuid.uuid4().hex[:12]
    header = f"MSH|^~\\&|RIS|GHH|CAREOPS|north|20261207120000||{kind}|{control}|P|2.5.1"
    return "\r".join([header, *segments]).encode()


def ack(client: TestClient, body: bytes) -> tuple[str, str]:
    answer = client.post("/api/v1/hl7", content=body, headers=HL7)
    assert answer.status_code == 200
    msa = hl7.parse(answer.text.replace("\n", "\r")).segment("MSA")
    return str(msa(1)), str(msa(3))


def pid(mrn: str) -> str:
    return f"PID|1||{mrn}^^^GHH^MR||EXAMPLE^ALEX||19800412|F"


def result_message(order: str, mrn: str, status: str = "F") -> bytes:
    return message(
        "ORU^R01",
        pid(mrn),
        f"ORC|RE|{order}",
        f"OBR|1|{order}||73721^MRI knee|||20261207100000" + "|" * 18 + status,
        "OBX|1|TX|IMPRESSION^Impression||Small joint effusion, no tear.||||||F",
    )


def booked_case(client: TestClient, **overrides: object) -> tuple[str, str, str]:
    """An MRI knee case (NHS: no authorisation needed) booked and its appointment completed."""
    order, mrn = f"ORD-{uuid.uuid4().hex[:8]}", f"MRN-{uuid.uuid4().hex[:8]}"
    body = referral(
        service_code="MRI-KNEE",
        external_id=order,
        patient={**referral()["patient"], "mrn": mrn},  # type: ignore[dict-item]
        **overrides,
    )
    created = client.post("/api/v1/referrals", json=body)
    assert created.status_code == 201, created.text
    case_id = created.json()["case_id"]
    start = next_monday(10) + dt.timedelta(days=7 * (uuid.uuid4().int % 20))
    booked = client.post("/api/v1/appointments", json={"case_id": case_id, "starts_at": start.isoformat()})
    assert booked.status_code == 201, booked.text
    done = client.post(f"/api/v1/appointments/{booked.json()['id']}/complete")
    assert done.status_code == 200
    return case_id, order, mrn


def case(client: TestClient, case_id: str) -> dict[str, Any]:
    found = client.get(f"/api/v1/cases/{case_id}")
    assert found.status_code == 200
    return dict(found.json())


def event_types(db: Database, case_id: str) -> list[str]:
    with db.sessions() as session:
        return list(
            session.scalars(
                select(BusinessEvent.type)
                .where(BusinessEvent.case_id == case_id, BusinessEvent.type != "phi.read")
                .order_by(BusinessEvent.id)
            )
        )


def test_a_case_goes_from_result_to_billing_ready_to_a_paid_invoice(client: TestClient, db: Database) -> None:
    case_id, order, mrn = booked_case(client, diagnosis_codes=["m25.561"])
    # The MRI needs its report: the appointment is done, the case waits for it.
    assert case(client, case_id)["status"] == "scheduled"
    refused = client.post(f"/api/v1/cases/{case_id}/transitions", json={"action": "mark_billing_ready"})
    assert refused.status_code == 409
    code, text = ack(client, result_message(order, mrn))
    assert code == "AA" and case_id in text
    after = case(client, case_id)
    assert after["status"] == "billing_ready"
    [result] = after["results"]
    assert (result["status"], result["matched_by"]) == ("final", "order_number")
    assert after["diagnosis_codes"] == ["M25.561"]
    invoice = client.post(f"/api/v1/cases/{case_id}/invoices")
    assert invoice.status_code == 201, invoice.text
    assert invoice.json()["lines"] == [{"code": "73721", "quantity": 1, "unit_price": 180.0, "amount": 180.0}]
    assert client.post(f"/api/v1/cases/{case_id}/invoices").status_code == 409  # one open at a time
    invoice_id = invoice.json()["id"]
    assert client.post(f"/api/v1/invoices/{invoice_id}/send", json={}).status_code == 409  # not approved
    assert client.post(f"/api/v1/invoices/{invoice_id}/approve", json={}).status_code == 200
    sent = client.post(f"/api/v1/invoices/{invoice_id}/send", json={"external_reference": "INV-2026-77"})
    assert sent.status_code == 200 and sent.json()["external_reference"] == "INV-2026-77"
    assert case(client, case_id)["status"] == "invoiced"
    assert client.post(f"/api/v1/invoices/{invoice_id}/pay", json={}).status_code == 200
    assert case(client, case_id)["status"] == "closed"
    kinds = event_types(db, case_id)
    # The billing lag reads from the events: completed (with its result) then invoice.sent.
    assert kinds.index("result.received") < kinds.index("invoice.requested") < kinds.index("invoice.sent")
    assert kinds[-2:] == ["case.transitioned", "invoice.paid"]


def test_discrepancies_wait_in_finance_until_charges_bring_what_was_missing(
    client: TestClient, db: Database
) -> None:
    case_id, order, mrn = booked_case(client)  # no diagnosis code on the referral
    assert ack(client, result_message(order, mrn))[0] == "AA"
    assert case(client, case_id)["status"] == "completed"
    finance = client.get("/api/v1/exceptions", params={"queue": "finance"}).json()["items"]
    [item] = [i for i in finance if i["case_id"] == case_id]
    assert item["reason_codes"] == ["missing_diagnosis_code"]
    on_demand = client.post(f"/api/v1/cases/{case_id}/billing-readiness").json()
    assert on_demand == {
        "case_id": case_id,
        "case_status": "completed",
        "ready": False,
        "discrepancies": ["missing_diagnosis_code"],
    }
    charges = message(
        "DFT^P03",
        pid(mrn),
        "FT1|1|||20261207|20261207|CG|73721^MRI knee^C4|||1|180&GBP||||||||M25.561^Knee pain^I10",
    )
    # No ORC: the charges find the case by patient. A well-formed code clears the discrepancy.
    assert ack(client, charges)[0] == "AA"
    assert case(client, case_id)["status"] == "billing_ready"
    item_after = client.get(f"/api/v1/exceptions/{item['id']}").json()
    assert item_after["status"] == "resolved" and item_after["resolution"] == {"outcome": "checklist_passed"}
    with db.sessions() as session:
        [charge] = session.scalars(select(CaseCharge).where(CaseCharge.case_id == case_id)).all()
    assert (charge.code, charge.quantity, charge.amount, charge.currency) == ("73721", 1, 180.0, "GBP")
    assert "billing.discrepancies_found" in event_types(db, case_id)


def test_a_malformed_diagnosis_code_is_a_named_discrepancy(client: TestClient) -> None:
    case_id, order, mrn = booked_case(client, diagnosis_codes=["KNEE-PAIN"])
    assert ack(client, result_message(order, mrn))[0] == "AA"
    checked = client.post(f"/api/v1/cases/{case_id}/billing-readiness").json()
    assert checked["discrepancies"] == ["invalid_diagnosis_code"]


def test_a_result_for_an_unknown_order_waits_for_a_person_who_matches_it(
    client: TestClient, db: Database
) -> None:
    case_id, _, _ = booked_case(client, diagnosis_codes=["M25.561"])
    code, text = ack(client, result_message("NO-SUCH-ORDER", "MRN-UNKNOWN"))
    assert code == "AA" and "unmatched_result" in text  # accepted and kept, never dropped
    [waiting] = client.get("/api/v1/results", params={"unmatched": "true"}).json()["items"]
    assert waiting["case_id"] is None
    queue = client.get("/api/v1/exceptions", params={"queue": "results"}).json()["items"]
    assert [item["reason_codes"] for item in queue] == [["unmatched_result"]]
    matched = client.post(f"/api/v1/results/{waiting['id']}/match", json={"case_id": case_id})
    assert matched.status_code == 200 and matched.json()["matched_by"] == "person"
    assert case(client, case_id)["status"] == "billing_ready"
    assert client.get("/api/v1/exceptions", params={"queue": "results"}).json()["items"] == []
    again = client.post(f"/api/v1/results/{waiting['id']}/match", json={"case_id": case_id})
    assert again.status_code == 409
    with db.sessions() as session:
        stored = session.scalars(select(Result).where(Result.id == waiting["id"])).one()
    assert stored.document_id is not None  # the report is kept as a document


def test_a_preliminary_result_does_not_complete_the_case(client: TestClient) -> None:
    case_id, order, mrn = booked_case(client, diagnosis_codes=["M25.561"])
    assert ack(client, result_message(order, mrn, status="P"))[0] == "AA"
    assert case(client, case_id)["status"] == "scheduled"
    assert ack(client, result_message(order, mrn, status="F"))[0] == "AA"
    assert case(client, case_id)["status"] == "billing_ready"


def test_referral_updates_and_cancellations_apply_to_the_case_by_its_number(client: TestClient) -> None:
    order, mrn = f"REF-{uuid.uuid4().hex[:8]}", f"MRN-{uuid.uuid4().hex[:8]}"
    created = client.post(
        "/api/v1/referrals",
        json=referral(external_id=order, patient={**referral()["patient"], "mrn": mrn}),  # type: ignore[dict-item]
    ).json()
    case_id = created["case_id"]
    start = next_monday(11)
    booked = client.post("/api/v1/appointments", json={"case_id": case_id, "starts_at": start.isoformat()})
    assert booked.status_code == 201
    modified = message("REF^I13", f"RF1|A|S||||{order}", pid(mrn), "DG1|1||R07.9^Chest pain^I10")
    assert ack(client, modified)[0] == "AA"
    after = case(client, case_id)
    assert after["priority"] == "stat" and after["diagnosis_codes"] == ["R07.9"]
    cancelled = message("REF^I14", f"RF1|C|R||||{order}", pid(mrn))
    assert ack(client, cancelled)[0] == "AA"
    final = case(client, case_id)
    assert final["status"] == "cancelled"
    assert [a["status"] for a in final["appointments"]] == ["cancelled"]
    # The slot it held is free again.
    other = client.post("/api/v1/referrals", json=referral()).json()["case_id"]
    rebooked = client.post("/api/v1/appointments", json={"case_id": other, "starts_at": start.isoformat()})
    assert rebooked.status_code == 201
    unknown = message("REF^I14", "RF1|C|R||||NO-SUCH-REFERRAL", pid("MRN-NOBODY"))
    code, text = ack(client, unknown)
    assert code == "AA" and "unmatched_referral_cancellation" in text
    queue = client.get("/api/v1/exceptions", params={"queue": "referral_updates"}).json()["items"]
    assert [item["reason_codes"] for item in queue] == [["unmatched_referral_cancellation"]]


def test_a_merge_is_never_automatic_a_person_confirms_it(client: TestClient, db: Database) -> None:
    merge = message("ADT^A40", "EVN|A40|20261207", pid("MRN-KEEP"), "MRG|MRN-OLD^^^GHH^MR")
    code, text = ack(client, merge)
    assert code == "AA" and "patient_merge_requested" in text
    [item] = client.get("/api/v1/exceptions", params={"queue": "patients"}).json()["items"]
    closed = client.post(f"/api/v1/exceptions/{item['id']}/close", json={"outcome": "merged"})
    assert closed.status_code == 200 and closed.json()["resolution"] == {"outcome": "merged"}
    assert (
        client.post(f"/api/v1/exceptions/{item['id']}/close", json={"outcome": "merged"}).status_code == 409
    )
    without_mrg = message("ADT^A40", pid("MRN-KEEP"))
    assert ack(client, without_mrg)[0] == "AE"
    with db.sessions() as session:
        kinds = session.scalars(select(BusinessEvent.type).order_by(BusinessEvent.id)).all()
    assert "patient.merge_requested" in kinds


def test_external_appointments_are_rescheduled_and_missed_on_their_records(client: TestClient) -> None:
    mrn = f"MRN-{uuid.uuid4().hex[:8]}"
    case_id = client.post(
        "/api/v1/referrals",
        json=referral(patient={**referral()["patient"], "mrn": mrn}),  # type: ignore[dict-item]
    ).json()["case_id"]

    def siu(kind: str, start: str) -> bytes:
        return message(
            kind, "SCH|P-1|F-1", pid(mrn), "RGS|1", f"AIS|1||XRAY-CHEST^Chest X-ray|{start}|||15|min"
        )

    assert ack(client, siu("SIU^S12", "20261214090000+0000"))[0] == "AA"
    assert ack(client, siu("SIU^S13", "20261215100000+0000"))[0] == "AA"
    [appointment] = case(client, case_id)["appointments"]
    assert (appointment["starts_at"], appointment["ends_at"]) == (
        "2026-12-15T10:00:00+00:00",
        "2026-12-15T10:15:00+00:00",
    )
    assert case(client, case_id)["status"] == "scheduled"
    assert ack(client, siu("SIU^S26", "20261215100000+0000"))[0] == "AA"
    after = case(client, case_id)
    assert after["status"] == "ready_to_schedule"
    assert [a["status"] for a in after["appointments"]] == ["no_show"]
    assert ack(client, message("SIU^S12", "SCH|P-2|F-2", pid(mrn), "RGS|1", "AIS|1||XRAY-CHEST"))[0] == "AE"


def diagnostic_report(order: str, mrn: str, status: str = "final") -> dict[str, Any]:
    return {
        "resourceType": "DiagnosticReport",
        "status": status,
        "contained": [
            {
                "resourceType": "Patient",
                "id": "p",
                "identifier": [{"type": {"coding": [{"code": "MR"}]}, "value": mrn}],
            }
        ],
        "basedOn": [{"identifier": {"value": order}}],
        "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "73721"}]},
        "subject": {"reference": "#p"},
        "effectiveDateTime": "2026-12-07T10:00:00Z",
        "conclusion": "Small joint effusion, no tear.",
    }


def test_a_fhir_diagnostic_report_is_a_result_like_an_oru(client: TestClient) -> None:
    case_id, order, mrn = booked_case(client, diagnosis_codes=["M25.561"])
    fhir = {"Content-Type": "application/fhir+json"}
    created = client.post("/fhir/r4/DiagnosticReport", json=diagnostic_report(order, mrn), headers=fhir)
    assert created.status_code == 201, created.text
    assert case_id in created.json()["issue"][0]["diagnostics"]
    assert case(client, case_id)["status"] == "billing_ready"
    again = client.post("/fhir/r4/DiagnosticReport", json=diagnostic_report(order, mrn), headers=fhir)
    assert again.status_code == 200  # the same report again changes nothing
    assert len(case(client, case_id)["results"]) == 1
    lost = client.post("/fhir/r4/DiagnosticReport", json=diagnostic_report("NO-ORDER", "MRN-X"), headers=fhir)
    assert lost.status_code == 201 and "no case matches" in lost.json()["issue"][0]["diagnostics"]
    invalid = {k: v for k, v in diagnostic_report(order, mrn).items() if k != "code"}  # code is required
    refused = client.post("/fhir/r4/DiagnosticReport", json=invalid, headers=fhir)
    assert refused.status_code in (400, 422) and "quarantine" in refused.text


def test_a_payer_s_checklist_adds_to_the_service_s_and_other_open_work_holds_billing(
    client: TestClient, db: Database
) -> None:
    created = client.post(
        "/api/v1/referrals", json=referral(payer_code="BUPA", diagnosis_codes=["R07.9"])
    ).json()  # a chest X-ray: Bupa wants the referral letter too
    case_id = created["case_id"]
    start = next_monday(15)
    booked = client.post("/api/v1/appointments", json={"case_id": case_id, "starts_at": start.isoformat()})
    with db.transaction() as session:
        session.add(ExceptionItem(queue="scheduling", reason_codes=["check"], case_id=case_id))
    assert client.post(f"/api/v1/appointments/{booked.json()['id']}/complete").status_code == 200
    checked = client.post(f"/api/v1/cases/{case_id}/billing-readiness").json()
    assert checked["discrepancies"] == ["missing_referral_letter", "open_exception:scheduling"]
    assert checked["case_status"] == "completed"
