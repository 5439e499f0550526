"""One pipeline: the same referral by HL7, email, FHIR and the JSON API becomes one case."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from careops.db import Database
from careops.domain.models import ServiceCase
from careops.integrations.inbound.email_channel import EmailChannel
from careops.orchestration.intake import CatalogueCache
from careops.settings import Settings
from tests.conftest import referral

HL7 = (
    "MSH|^~\\&|EHR|GHH|CAREOPS|north|20261201||ORM^O01|X-1|P|2.5.1\r"
    "PID|1||MRN-X1^^^^MR||Doe^Jane||19800412|F\r"
    "ORC|NW|PO-1|||||||20261201|||GP-001^Referrer^Dr\r"
    "OBR|1|PO-1||XRAY-CHEST\r"
)
EMAIL = (
    b"From: gp@clinic.example\r\nTo: north@referrals.example\r\nSubject: referral\r\n"
    b"Message-ID: <x-1@clinic.example>\r\n\r\n"
    b"Patient: Jane Doe\r\nDOB: 12/04/1980\r\nMRN: MRN-X1\r\nService: XRAY-CHEST\r\nReferrer: GP-001\r\n"
)
FHIR = {
    "resourceType": "ServiceRequest",
    "status": "active",
    "intent": "order",
    "code": {"coding": [{"code": "XRAY-CHEST"}]},
    "subject": {"reference": "#p"},
    "requester": {"reference": "#d"},
    "locationReference": [{"display": "north"}],
    "contained": [
        {
            "resourceType": "Patient",
            "id": "p",
            "identifier": [{"value": "MRN-X1"}],
            "name": [{"family": "Doe", "given": ["Jane"]}],
            "birthDate": "1980-04-12",
        },
        {"resourceType": "Practitioner", "id": "d", "identifier": [{"value": "GP-001"}]},
    ],
}


def test_the_same_referral_by_four_channels_is_one_case_with_four_sources(
    client: TestClient, db: Database, settings: Settings
) -> None:
    assert (
        "MSA|AA|"
        in client.post("/api/v1/hl7", content=HL7.encode(), headers={"Content-Type": "text/plain"}).text
    )
    email = EmailChannel(db, settings, CatalogueCache(0)).receive(EMAIL)
    assert email.body["outcome"] == "duplicate"
    assert (
        client.post(
            "/fhir/r4/ServiceRequest", json=FHIR, headers={"Content-Type": "application/fhir+json"}
        ).status_code
        == 201
    )
    body = referral(
        patient={"mrn": "MRN-X1", "given_name": "Jane", "family_name": "Doe", "birth_date": "1980-04-12"}
    )
    api = client.post("/api/v1/referrals", json=body)
    assert api.status_code == 200 and api.json()["outcome"] == "duplicate"
    with db.sessions() as session:
        assert session.scalar(select(func.count()).select_from(ServiceCase)) == 1
        case_id = session.scalars(select(ServiceCase.id)).one()
    timeline = client.get(f"/api/v1/cases/{case_id}").json()["timeline"]
    sources = [
        e["payload"].get("channel")
        for e in timeline
        if e["type"] in ("case.created", "referral.duplicate_detected")
    ]
    assert sources == ["hl7", "email", "fhir", "api"]
