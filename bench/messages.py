"""Realistic, distinct HL7 v2 orders and FHIR Bundles for the demo catalogue, for the channel benchmark.

Each channel carries the referrals the JSON intake is measured with (``MIX``: 90% valid, 7%
incomplete, 3% duplicates of a recent one), so that a channel's ratio to the JSON intake is the
channel's own cost, not a difference between two sets of referrals."""

from __future__ import annotations

import datetime as dt
import json
import uuid

from careops.demo.traffic import Mix, ReferralFactory

MIX = Mix(incomplete=0.07, duplicate=0.03)
_PRIORITY = {"routine": "R", "urgent": "A", "stat": "S"}


def order(referral: dict[str, object]) -> bytes:
    """The referral as an ORM^O01 message (location in MSH-6, as a hospital engine would route it)."""
    patient = referral["patient"]
    referrer = referral["referrer"]
    assert isinstance(patient, dict) and isinstance(referrer, dict)
    now = dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S")
    birth = str(patient.get("birth_date", "")).replace("-", "")
    insurance = ["IN1", "1", "PLAN", str(referral["payer_code"]), *[""] * 32, str(referral["member_id"])]
    segments = [
        f"MSH|^~\\&|BENCH|CLINIC|CAREOPS|{referral['location']}|{now}||ORM^O01^ORM_O01|{uuid.uuid4().hex}|P|2.5.1",
        f"PID|1||{patient['mrn']}^^^^MR||{patient.get('family_name', '')}^{patient.get('given_name', '')}"
        f"||{birth}|{str(patient.get('sex', 'U'))[:1].upper()}|||||{patient.get('phone', '')}",
        "PV1|1|O",
        f"ORC|NW|{referral['external_id']}|||||^^^^^{_PRIORITY[str(referral['priority'])]}||{now}|||"
        f"{referrer['code']}^Referrer^Dr",
        f"OBR|1|{referral['external_id']}||{referral['service_code']}",
        "|".join(insurance),
    ]
    return ("\r".join(segments) + "\r").encode()


def orders(count: int, seed: int) -> list[bytes]:
    factory = ReferralFactory(seed=seed)
    return [order(factory.referral(MIX)[1]) for _ in range(count)]


def fhir_bundle(referral: dict[str, object]) -> bytes:
    """The referral as a FHIR transaction Bundle of 10 resources, linked by fullUrl."""
    patient = referral["patient"]
    referrer = referral["referrer"]
    assert isinstance(patient, dict) and isinstance(referrer, dict)
    ids = {
        name: f"urn:uuid:{uuid.uuid4()}"
        for name in ("p", "d", "r", "o", "pay", "c", "l", "s", "doc1", "doc2")
    }

    def entry(key: str, resource: dict[str, object]) -> dict[str, object]:
        kind = str(resource["resourceType"])
        return {"fullUrl": ids[key], "resource": resource, "request": {"method": "POST", "url": kind}}

    name = {
        "family": patient["family_name"],
        **({"given": [patient["given_name"]]} if "given_name" in patient else {}),
    }
    document: dict[str, object] = {
        "resourceType": "DocumentReference",
        "status": "current",
        "subject": {"reference": ids["p"]},
        "context": {"related": [{"reference": ids["s"]}]},
        "content": [{"attachment": {"contentType": "text/plain", "data": "UmVmZXJyYWwgbGV0dGVy"}}],
    }
    entries = [
        entry(
            "p",
            {
                "resourceType": "Patient",
                "identifier": [{"type": {"coding": [{"code": "MR"}]}, "value": patient["mrn"]}],
                "name": [name],
                **({"birthDate": patient["birth_date"]} if "birth_date" in patient else {}),
                "telecom": [{"system": "phone", "value": patient.get("phone")}],
                "managingOrganization": {"reference": ids["o"]},
            },
        ),
        entry("d", {"resourceType": "Practitioner", "identifier": [{"value": referrer["code"]}]}),
        entry("r", {"resourceType": "PractitionerRole", "practitioner": {"reference": ids["d"]}}),
        entry("o", {"resourceType": "Organization", "name": str(referral["location"])}),
        entry("pay", {"resourceType": "Organization", "identifier": [{"value": referral["payer_code"]}]}),
        entry(
            "c",
            {
                "resourceType": "Coverage",
                "status": "active",
                "beneficiary": {"reference": ids["p"]},
                "payor": [{"reference": ids["pay"]}],
                "subscriberId": referral["member_id"],
            },
        ),
        entry("l", {"resourceType": "Location", "name": str(referral["location"])}),
        entry(
            "s",
            {
                "resourceType": "ServiceRequest",
                "status": "active",
                "intent": "order",
                "priority": referral["priority"],
                "identifier": [{"value": referral["external_id"]}],
                "code": {"coding": [{"code": referral["service_code"]}]},
                "subject": {"reference": ids["p"]},
                "requester": {"reference": ids["r"]},
                "insurance": [{"reference": ids["c"]}],
                "locationReference": [{"reference": ids["l"]}],
            },
        ),
        entry("doc1", document),
        entry("doc2", {**document, "description": "second page"}),
    ]
    return json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries}).encode()


def fhir_bundles(count: int, seed: int) -> list[bytes]:
    factory = ReferralFactory(seed=seed)
    return [fhir_bundle(factory.referral(MIX)[1]) for _ in range(count)]
