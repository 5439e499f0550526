"""The FHIR R4 channel over HTTP, every sample file, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from careops.db import Database
from careops.domain.models import IntakeItem, Patient, ServiceCase
from careops.integrations.inbound.fhir_r4 import Entry
from tests.integrations.test_email import pdf_with_text
from tests.integrations.test_fhir_precheck import mutants

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "fhir"
FHIR = {"Content-Type": "application/fhir+json"}
# Converted HL7 batches: each ServiceRequest is taken; unsupported entries get 422, not the Bundle.
BATCHES = [
    "ADT-A04-01-converted-bundle.json",
    "OMG-O19-01-converted-bundle.json",
    "OML-O21-01-converted-bundle.json",
    "ORM-O01-01-converted-bundle.json",
    "REF-I12-01-converted-bundle.json",
    "SIU-S12-01-converted-bundle.json",
]
# (status, OperationOutcome issue code, expression) for what careops refuses.
REFUSED = {
    "Bundle-Transaction.json": (422, "not-supported", "Bundle.entry[0].resource"),
    "Bundle-TransactionWithValidBundleEntry.json": (422, "not-supported", "Bundle.entry[0].resource"),
    "Bundle-TransactionWithConditionalCreateAndReference.json": (
        400,
        "invalid",
        "Bundle.entry[1].resource.series[0]",
    ),
    "invalid/Bundle-TransactionWithInvalidResourceType.json": (
        400,
        "invalid",
        "Bundle.entry[0].resource.subject",
    ),
    "invalid/Bundle-TypeMissing.json": (400, "invalid", "Bundle.type"),
    "invalid/ObservationWithInvalidStatus.json": (400, "invalid", "Observation.status"),
    "Organization.json": (404, "not-supported", "Organization"),
    "Patient-f001.json": (404, "not-supported", "Patient"),
    "coverage-example.json": (404, "not-supported", "Coverage"),
    "documentreference-example.json": (404, "not-supported", "DocumentReference"),
    "practitioner-example.json": (404, "not-supported", "Practitioner"),
    "task-example1.json": (404, "not-supported", "Task"),
}


def load(name: str) -> dict[str, Any]:
    return dict(json.loads((SAMPLES / name).read_bytes().decode("utf-8-sig")))


def endpoint(document: dict[str, Any]) -> str:
    kind = document["resourceType"]
    return "/fhir/r4" if kind == "Bundle" else f"/fhir/r4/{kind}"


def fhir_items(db: Database, status: str | None = None) -> int:
    query = select(func.count()).select_from(IntakeItem).where(IntakeItem.channel == "fhir")
    if status:
        query = query.where(IntakeItem.status == status)
    with db.sessions() as session:
        return session.scalar(query) or 0


def test_every_sample_is_classified() -> None:
    names = {str(p.relative_to(SAMPLES)) for p in SAMPLES.rglob("*.json")}
    assert names == {*BATCHES, *REFUSED, "servicerequest-example.json"}


@pytest.mark.parametrize("name", BATCHES)
def test_converted_batches_create_one_intake_item_per_service_request(
    client: TestClient, db: Database, name: str
) -> None:
    document = load(name)
    answer = client.post("/fhir/r4", content=(SAMPLES / name).read_bytes(), headers=FHIR)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/fhir+json")
    body = answer.json()
    assert body["type"] == "batch-response"
    assert len(body["entry"]) == len(document["entry"])
    requests = [e for e in document["entry"] if e["resource"]["resourceType"] == "ServiceRequest"]
    created = [e for e in body["entry"] if e["response"]["status"] == "201 Created"]
    assert len(created) == len(requests) == fhir_items(db)
    refused = [e for e in body["entry"] if e["response"]["status"] == "422"]
    assert all(e["response"]["outcome"]["issue"][0]["code"] == "not-supported" for e in refused)
    again = client.post("/fhir/r4", content=(SAMPLES / name).read_bytes(), headers=FHIR).json()
    assert [e["response"]["status"] for e in again["entry"] if e["response"].get("location")] == [
        "200 OK"
    ] * len(requests)
    assert fhir_items(db) == len(requests)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_samples_get_a_precise_operation_outcome_and_are_kept(
    client: TestClient, db: Database, name: str
) -> None:
    status, code, expression = REFUSED[name]
    answer = client.post(endpoint(load(name)), content=(SAMPLES / name).read_bytes(), headers=FHIR)
    assert answer.status_code == status
    issues = answer.json()["issue"]
    assert (issues[0]["severity"], issues[0]["code"]) == ("error", code)
    assert any(issue["expression"][0].startswith(expression) for issue in issues)
    assert "quarantine" in issues[0]["diagnostics"]
    assert fhir_items(db, "quarantined") == 1
    assert fhir_items(db) == 1


def test_the_example_service_request_is_created_and_read_back(client: TestClient) -> None:
    created = client.post(
        "/fhir/r4/ServiceRequest",
        content=(SAMPLES / "servicerequest-example.json").read_bytes(),
        headers=FHIR,
    )
    assert created.status_code == 201
    location = created.headers["location"]
    read = client.get(f"/fhir/r4/{location}")
    assert read.status_code == 200
    assert read.json()["code"]["coding"][0]["code"] == "303653007"
    task = client.get("/fhir/r4/Task", params={"based-on": location}).json()
    assert task["total"] == 1
    assert task["entry"][0]["resource"]["status"] == "requested"
    assert "missing_field:patient" in task["entry"][0]["resource"]["businessStatus"]["text"]


def referral_bundle(kind: str = "transaction") -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": kind,
        "entry": [
            {
                "fullUrl": "urn:uuid:p1",
                "resource": {
                    "resourceType": "Patient",
                    "identifier": [{"type": {"coding": [{"code": "MR"}]}, "value": "MRN-F1"}],
                    "name": [{"use": "official", "family": "Doe", "given": ["Jane"]}],
                    "birthDate": "1980-04-12",
                    "gender": "female",
                },
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "fullUrl": "urn:uuid:d1",
                "resource": {
                    "resourceType": "Practitioner",
                    "identifier": [{"value": "GP-001"}],
                    "name": [{"family": "Jones"}],
                },
                "request": {"method": "POST", "url": "Practitioner"},
            },
            {
                "fullUrl": "urn:uuid:s1",
                "resource": {
                    "resourceType": "ServiceRequest",
                    "status": "active",
                    "intent": "order",
                    "identifier": [{"system": "https://clinic.example", "value": "R-1"}],
                    "code": {
                        "coding": [{"system": "http://loinc.org", "code": "unknown"}, {"code": "71046"}]
                    },
                    "subject": {"reference": "urn:uuid:p1"},
                    "requester": {"reference": "urn:uuid:d1"},
                    "locationReference": [{"display": "north"}],
                    "priority": "urgent",
                },
                "request": {
                    "method": "POST",
                    "url": "ServiceRequest",
                    "ifNoneExist": "identifier=https://clinic.example|R-1",
                },
            },
            {
                "fullUrl": "urn:uuid:doc1",
                "resource": {
                    "resourceType": "DocumentReference",
                    "status": "current",
                    "subject": {"reference": "urn:uuid:p1"},
                    "context": {"related": [{"reference": "urn:uuid:s1"}]},
                    "content": [{"attachment": {"contentType": "application/pdf", "data": "JVBERi0xLjQK"}}],
                },
                "request": {"method": "POST", "url": "DocumentReference"},
            },
        ],
    }


def test_a_transaction_creates_the_case_with_its_patient_and_referrer(
    client: TestClient, db: Database
) -> None:
    answer = client.post("/fhir/r4", json=referral_bundle(), headers=FHIR)
    assert answer.status_code == 200
    statuses = [e["response"]["status"] for e in answer.json()["entry"]]
    assert statuses == ["200 OK", "200 OK", "201 Created", "200 OK"]
    location = answer.json()["entry"][2]["response"]["location"]
    with db.sessions() as session:
        case = session.scalars(select(ServiceCase)).one()
        patient = session.get(Patient, case.patient_id)
        item = session.get(IntakeItem, location.split("/")[1])
    assert patient is not None and (patient.mrn, patient.family_name) == ("MRN-F1", "Doe")
    assert case.priority == "urgent"
    assert item is not None and item.case_id == case.id
    kept = [e["resource"] for e in json.loads(item.raw_payload)["entry"]]
    assert [r["resourceType"] for r in kept] == [
        "ServiceRequest",
        "Patient",
        "Practitioner",
        "DocumentReference",
    ]
    # Kept as received: each resource's elements in the order they were sent (not re-sorted).
    sent = referral_bundle()["entry"][2]["resource"]
    assert list(kept[0]) == list(sent) and kept[0] == sent
    task = client.get("/fhir/r4/Task", params={"based-on": location}).json()["entry"][0]["resource"]
    assert task["status"] == "accepted"
    assert case.id in task["businessStatus"]["text"]


def test_a_document_reference_s_pdf_becomes_a_document_of_the_referral(client: TestClient) -> None:
    bundle = referral_bundle()
    letter = pdf_with_text("Referral letter: knee pain for six weeks")
    attachment = bundle["entry"][3]["resource"]["content"][0]["attachment"]
    encoded = base64.b64encode(letter).decode()
    attachment["data"] = "\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))  # MIME lines
    attachment["title"] = "letter.pdf"
    bundle["entry"][3]["resource"]["content"].append({"attachment": {"url": "https://ehr.example/doc/2"}})
    answer = client.post("/fhir/r4", json=bundle, headers=FHIR)
    item_id = answer.json()["entry"][2]["response"]["location"].split("/")[1]
    documents = client.get(f"/api/v1/intake/{item_id}/documents").json()["items"]
    assert [(d["filename"], d["content_type"], d["size_bytes"]) for d in documents] == [
        ("letter.pdf", "application/pdf", len(letter))
    ]
    assert client.get(f"/api/v1/documents/{documents[0]['id']}/content").content == letter
    text = client.get(f"/api/v1/documents/{documents[0]['id']}/text").text
    assert "knee pain for six weeks" in text


def test_if_none_exist_makes_the_create_conditional(client: TestClient, db: Database) -> None:
    request = referral_bundle()["entry"][2]["resource"]
    request["contained"] = [
        {
            "resourceType": "Patient",
            "id": "p",
            "identifier": [{"value": "MRN-C"}],
            "name": [{"family": "Roe", "given": ["Ann"]}],
            "birthDate": "1975-01-02",
        }
    ]
    request["subject"] = {"reference": "#p"}
    request.pop("requester")
    headers = {**FHIR, "If-None-Exist": "identifier=https://clinic.example|R-1"}
    first = client.post("/fhir/r4/ServiceRequest", json=request, headers=headers)
    request["note"] = [{"text": "sent again, a little different"}]
    second = client.post("/fhir/r4/ServiceRequest", json=request, headers=headers)
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.headers["location"] == second.headers["location"]
    encoded = {**FHIR, "If-None-Exist": "identifier=https%3A%2F%2Fclinic.example%7CR-1"}
    assert client.post("/fhir/r4/ServiceRequest", json=request, headers=encoded).status_code == 200
    assert fhir_items(db) == 1
    # The same value under another system is another hospital's referral, not this one.
    request["identifier"] = [{"system": "https://other.example", "value": "R-1"}]
    other = {**FHIR, "If-None-Exist": "identifier=https://other.example|R-1"}
    assert client.post("/fhir/r4/ServiceRequest", json=request, headers=other).status_code == 201
    assert fhir_items(db) == 2
    for criteria in ("_id=5", "identifier=R-1&_tag=x", "identifier=https://clinic.example|", "", " "):
        unsupported = client.post(
            "/fhir/r4/ServiceRequest", json=request, headers={**FHIR, "If-None-Exist": criteria}
        )
        assert unsupported.status_code == 400
        assert unsupported.json()["issue"][0]["code"] == "not-supported"


def test_a_transaction_with_one_bad_entry_writes_nothing_but_a_batch_keeps_the_rest(
    client: TestClient, db: Database
) -> None:
    bundle = referral_bundle()
    bundle["entry"].append(
        {
            "resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"}},
            "request": {"method": "POST", "url": "Observation"},
        }
    )
    refused = client.post("/fhir/r4", json=bundle, headers=FHIR)
    assert refused.status_code == 422
    assert refused.json()["issue"][0]["expression"] == ["Bundle.entry[4].resource"]
    assert fhir_items(db) == 1 and fhir_items(db, "quarantined") == 1
    bundle["type"] = "batch"
    answer = client.post("/fhir/r4", json=bundle, headers=FHIR)
    assert [e["response"]["status"] for e in answer.json()["entry"]][2:] == ["201 Created", "200 OK", "422"]


def test_references_that_point_nowhere_and_entries_without_a_request_are_refused(
    client: TestClient, db: Database
) -> None:
    dangling = referral_bundle()
    dangling["entry"][2]["resource"]["subject"] = {"reference": "urn:uuid:not-in-the-bundle"}
    answer = client.post("/fhir/r4", json=dangling, headers=FHIR)
    assert answer.status_code == 400
    issue = answer.json()["issue"][0]
    assert issue["expression"] == ["Bundle.entry[2].resource.subject.reference"]
    assert "not-in-the-bundle" not in issue["diagnostics"]
    dangling["type"] = "batch"  # in a batch only that entry fails, and the batch is kept for it
    entries = client.post("/fhir/r4", json=dangling, headers=FHIR).json()["entry"]
    assert [e["response"]["status"] for e in entries] == ["422", "200 OK", "400", "200 OK"]  # Patient: unused
    assert "(quarantine " in entries[2]["response"]["outcome"]["issue"][0]["diagnostics"]
    no_request = referral_bundle()
    del no_request["entry"][2]["request"]
    refused = client.post("/fhir/r4", json=no_request, headers=FHIR).json()["issue"][0]
    assert (refused["code"], refused["expression"]) == ("required", ["Bundle.entry[2].request"])
    alone = referral_bundle()["entry"][2]["resource"]
    alone["subject"] = {"reference": "#missing"}
    contained = client.post("/fhir/r4/ServiceRequest", json=alone, headers=FHIR)
    assert contained.status_code == 400
    assert contained.json()["issue"][0]["expression"] == ["ServiceRequest.subject.reference"]
    assert fhir_items(db, "quarantined") == 4 and fhir_items(db) == 4


def test_transport_errors_are_operation_outcomes(client: TestClient) -> None:
    broken = client.post("/fhir/r4/ServiceRequest", content=b'{"resourceType": ', headers=FHIR)
    assert broken.status_code == 400 and broken.json()["issue"][0]["code"] == "structure"
    # NaN and Infinity: Python's parser takes them, JSON (and FHIR) does not.
    for constant in (b"NaN", b"Infinity", b"-Infinity"):
        sent = (
            b'{"resourceType": "ServiceRequest", "status": "active", "intent": "order", "x": %s}' % constant
        )
        refused = client.post("/fhir/r4/ServiceRequest", content=sent, headers=FHIR)
        assert refused.status_code == 400 and refused.json()["issue"][0]["code"] == "structure"
    # Not Unicode (a lone surrogate), or nested past any resource's depth: refused, not a crash.
    for sent in (
        b'{"resourceType": "ServiceRequest", "note": [{"text": "\\ud800"}]}',
        b'{"resourceType": "ServiceRequest", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    ):
        refused = client.post("/fhir/r4/ServiceRequest", content=sent, headers=FHIR)
        assert refused.status_code == 400 and refused.json()["issue"][0]["code"] == "structure"
        assert "line 1 column" in refused.json()["issue"][0]["diagnostics"]
    with_bom = client.post("/fhir/r4/ServiceRequest", content=b"\xef\xbb\xbf{}", headers=FHIR)
    assert "no resourceType" in with_bom.json()["issue"][0]["diagnostics"]  # past the BOM
    as_xml = client.post("/fhir/r4", content=b"<Bundle/>", headers={"Content-Type": "text/xml"})
    assert as_xml.status_code == 415 and "quarantine" in as_xml.json()["issue"][0]["diagnostics"]
    anonymous = client.get("/fhir/r4/metadata", headers={"Authorization": ""})
    assert anonymous.status_code == 401 and anonymous.json()["resourceType"] == "OperationOutcome"
    assert client.get("/fhir/r4/ServiceRequest/nope").status_code == 404
    assert client.get("/fhir/r4/Task").status_code == 400
    capability = client.get("/fhir/r4/metadata").json()
    assert capability["fhirVersion"] == "4.0.1"
    assert {r["type"] for r in capability["rest"][0]["resource"]} >= {"ServiceRequest", "Task"}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.fixed_dictionaries(
        {"resourceType": st.sampled_from(["Bundle", "ServiceRequest", "Patient"])},
        optional={
            "type": st.sampled_from(["transaction", "batch", "x"]),
            "entry": json_values,
            "subject": json_values,
            "status": json_values,
            "_status": json_values,
            "intent": json_values,
        },
    )
)
def test_fuzzed_resources_never_get_a_500(client: TestClient, body: dict[str, Any]) -> None:
    path = "/fhir/r4" if body["resourceType"] == "Bundle" else "/fhir/r4/ServiceRequest"
    answer = client.post(path, content=json.dumps(body).encode(), headers=FHIR)
    assert answer.status_code < 500, answer.text


def test_an_element_fhir_resources_trips_over_is_a_400_and_kept(client: TestClient, db: Database) -> None:
    # fhir.resources raises AttributeError for a primitive's _element given as a string of a
    # number (it parses the string as JSON); that was a 500.
    bundle = referral_bundle()
    bundle["entry"][0]["resource"]["_gender"] = "1.5"
    answer = client.post("/fhir/r4", content=json.dumps(bundle).encode(), headers=FHIR)
    assert answer.status_code == 400, answer.text
    issue = answer.json()["issue"][0]
    assert (issue["code"], issue["expression"]) == ("invalid", ["Bundle.entry[0].resource"])
    assert fhir_items(db, "quarantined") == 1


@pytest.mark.parametrize("status", [["active"], {"code": "active"}])
def test_a_coded_element_that_is_not_a_string_is_a_400(client: TestClient, status: object) -> None:
    # It was looked up among its codes as it was (a list is unhashable): a 500.
    resource = {**load("servicerequest-example.json"), "status": status}
    answer = client.post("/fhir/r4/ServiceRequest", content=json.dumps(resource).encode(), headers=FHIR)
    assert answer.status_code == 400, answer.text
    assert answer.json()["issue"][0]["expression"] == ["ServiceRequest.status"]


def test_a_date_written_as_a_number_is_a_400_naming_it(client: TestClient, db: Database) -> None:
    # fhir.resources took ``birthDate: 0``; the mapping then could not (a 500 the fuzz test found).
    bundle = referral_bundle()
    bundle["entry"][0]["resource"]["birthDate"] = 0
    answer = client.post("/fhir/r4", content=json.dumps(bundle).encode(), headers=FHIR)
    assert answer.status_code == 400, answer.text
    assert answer.json()["issue"][0]["expression"] == ["Bundle.entry[0].resource.birthDate"]
    assert fhir_items(db, "quarantined") == 1


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_mutated_referral_bundles_never_get_a_500(client: TestClient, data: st.DataObject) -> None:
    bundle = data.draw(mutants([referral_bundle(), referral_bundle("batch")]))
    body = json.dumps(bundle).encode()
    answer = client.post("/fhir/r4", content=body, headers=FHIR)
    assert answer.status_code < 500, answer.text
    resource = data.draw(mutants([load("servicerequest-example.json")]))
    answer = client.post("/fhir/r4/ServiceRequest", content=json.dumps(resource).encode(), headers=FHIR)
    assert answer.status_code < 500, answer.text


def test_a_null_element_is_refused_naming_it(client: TestClient, db: Database) -> None:
    # FHIR JSON leaves out an element without a value; fhir.resources lets a null through, and
    # the mapping then failed on it (a 500).
    bundle = referral_bundle()
    bundle["entry"][2]["resource"]["locationReference"] = None
    answer = client.post("/fhir/r4", content=json.dumps(bundle).encode(), headers=FHIR)
    assert answer.status_code == 400, answer.text
    assert answer.json()["issue"][0]["expression"] == ["Bundle.entry[2].resource.locationReference"]
    assert fhir_items(db, "quarantined") == 1


def test_a_null_among_given_names_is_a_placeholder_not_a_name(client: TestClient, db: Database) -> None:
    bundle = referral_bundle()
    name = bundle["entry"][0]["resource"]["name"][0]
    name["given"] = [None, "Ann"]
    name["_given"] = [{"extension": [{"url": "http://x", "valueCode": "u"}]}, None]
    answer = client.post("/fhir/r4", content=json.dumps(bundle).encode(), headers=FHIR)
    assert [e["response"]["status"] for e in answer.json()["entry"]][2] == "201 Created", answer.text
    with db.sessions() as session:
        patient = session.scalars(select(Patient)).one()
    assert patient.given_name == "Ann"


def test_in_a_batch_a_request_drawing_on_an_invalid_resource_is_refused_with_it(
    client: TestClient, db: Database
) -> None:
    bundle = referral_bundle("batch")
    bundle["entry"][1]["resource"]["name"] = [None]  # the requester
    answer = client.post("/fhir/r4", content=json.dumps(bundle).encode(), headers=FHIR)
    assert answer.status_code == 200, answer.text
    responses = [e["response"] for e in answer.json()["entry"]]
    assert [r["status"] for r in responses][1:3] == ["400", "400"]
    assert responses[2]["outcome"]["issue"][0]["expression"] == ["Bundle.entry[1].resource"]
    assert fhir_items(db, "quarantined") == 1
    with db.sessions() as session:
        assert session.scalars(select(ServiceCase)).first() is None


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/fhir/r4", {"resourceType": "Bundle", "entry": {"\x00": None}}),
        ("/fhir/r4/Patient", {"resourceType": "Patient", "\x00": 1}),
    ],
)
def test_an_element_named_with_a_control_character_is_a_400_and_kept(
    client: TestClient, db: Database, path: str, body: dict[str, Any]
) -> None:
    # The expression names the client's key; with a NUL in it PostgreSQL refused the quarantine
    # record: a 500 (hypothesis found it).
    answer = client.post(path, content=json.dumps(body).encode(), headers=FHIR)
    assert answer.status_code == 400, answer.text
    assert "\x00" not in answer.json()["issue"][0]["expression"][0]
    assert fhir_items(db, "quarantined") == 1


_json_leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8))
_json_trees = st.recursive(
    st.dictionaries(st.sampled_from(["reference", "contained", "display", "a", "b"]), _json_leaves),
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(
            st.sampled_from(["reference", "contained", "subject", "x", "y"]), children, max_size=4
        ),
    ),
    max_leaves=25,
)


@settings(max_examples=200)
@given(_json_trees.filter(lambda tree: isinstance(tree, dict)))
def test_each_reference_found_is_located_where_it_is(tree: dict[str, Any]) -> None:
    def by_hand(node: Any, path: str) -> list[tuple[str, str]]:  # the obvious, slow walk
        found = []
        if isinstance(node, dict):
            if isinstance(node.get("reference"), str):
                found.append((node["reference"], f"{path}.reference"))
            for key, value in node.items():
                if key != "contained" and isinstance(value, dict):
                    found += by_hand(value, f"{path}.{key}")
                elif key != "contained" and isinstance(value, list):
                    for i, item in enumerate(value):
                        found += by_hand(item, f"{path}.{key}[{i}]") if isinstance(item, dict) else []
        return found

    entry = Entry(0, None, tree, "POST", "Patient", None)
    expected = by_hand(tree, entry.resource_path)
    assert entry.references == [target for target, _ in expected]
    for target in set(entry.references):  # an error names the first place it is referenced
        assert entry.where(target) == next(where for found, where in expected if found == target)
