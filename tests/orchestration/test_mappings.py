"""Code mappings over real HL7 and FHIR samples, on SQLite and PostgreSQL: messages from a sender
whose facility, service and ordering-provider codes careops does not know wait in the queue;
saving the mappings once releases every waiting item into a case, and later messages from that
sender go straight to cases. Suggestions rank the right target first for the samples' codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from careops.db import Database
from careops.domain.master_data import MappingRecord
from careops.domain.models import BusinessEvent, ExceptionItem
from careops.errors import Conflict
from careops.integrations.inbound.fhir_channel import FhirChannel
from careops.integrations.inbound.hl7_channel import Hl7Channel
from careops.orchestration.intake import CatalogueCache
from careops.orchestration.mappings import save_mapping, suggest, waiting_codes
from careops.settings import Settings

SAMPLES = Path(__file__).parents[1] / "data"


def _orm(control_id: str) -> bytes:
    """ORM-O01-01 from the samples (GHH's CT head order) under a control id of our own."""
    text = (SAMPLES / "hl7" / "ORM-O01-01.hl7").read_bytes().decode("utf-8-sig")
    return text.replace("|MSG00018|", f"|{control_id}|").encode()


def _open_items(db: Database) -> list[ExceptionItem]:
    with db.sessions() as session:
        return list(
            session.scalars(
                select(ExceptionItem).where(ExceptionItem.status == "open", ExceptionItem.queue == "intake")
            )
        )


def test_saving_mappings_releases_waiting_hl7_items_and_later_messages_go_straight_to_cases(
    db: Database, settings: Settings
) -> None:
    catalogue = CatalogueCache(0)
    channel = Hl7Channel(db, settings, catalogue)
    first = [channel.handle(_orm(f"MAP-{n}"), "http") for n in range(3)]
    assert {r.outcome for r in first} == {"exception"}
    items = _open_items(db)
    assert len(items) == 3
    assert {"unknown_location", "unknown_service_code", "unknown_referrer_code"} <= set(items[0].reason_codes)
    waiting = {code["kind"]: code for code in waiting_codes(db, items[0].id)}
    assert waiting["location"]["code"] == "GHH" and waiting["location"]["sender"] == "GHHSFacility"
    assert waiting["service"]["code"] == "24725-4" and waiting["service"]["text"] == "CT Head"
    assert waiting["service"]["suggestions"][0].target == "CT-HEAD"  # from the text "CT Head"

    def save(kind: str, code: str, target: str) -> list[str]:
        record = MappingRecord(sender="GHHSFacility", kind=kind, code=code, target=target)
        return save_mapping(db, settings, catalogue, record, actor="coordinator", suggested="CT-HEAD").cases

    assert save("location", "GHH", "north") == []  # the service and the provider are still unknown
    assert {"unknown_location"} & set(_open_items(db)[0].reason_codes) == set()
    assert save("service", "24725-4", "CT-HEAD") == []
    released = save("referrer", "3850", "GP-001")
    assert len(released) == 3 and _open_items(db) == []  # every waiting item is now a case
    assert len(set(released)) == 1  # the same order three times: one case, two duplicates linked to it
    later = channel.handle(_orm("MAP-LATER"), "http")
    assert later.code == "AA" and later.outcome == "duplicate" and later.body["case_id"] == released[0]
    with db.sessions() as session:
        saved = session.scalars(
            select(BusinessEvent.payload).where(BusinessEvent.subject_type == "mapping")
        ).all()
    assert [p["suggestion"] for p in saved] == ["overridden", "accepted", "overridden"]


def _service_request(coding: dict[str, str], n: int) -> bytes:
    """A ServiceRequest for north with its patient contained, asking for ``coding``."""
    patient = {"resourceType": "Patient", "id": "p", "identifier": [{"value": f"MRN-FHIR-{n}"}],
               "name": [{"family": "Example", "given": ["Alex"]}], "birthDate": "1980-04-12"}  # fmt: skip
    request = {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "contained": [patient],
        "code": {"coding": [coding]},
        "subject": {"reference": "#p"},
        "locationReference": [{"display": "north"}],
        "identifier": [{"value": f"SR-{n}"}],
    }
    return json.dumps(request).encode()


def test_a_fhir_system_and_code_pair_maps_for_every_sender(db: Database, settings: Settings) -> None:
    catalogue = CatalogueCache(0)
    channel = FhirChannel(db, settings, catalogue)
    sample = json.loads((SAMPLES / "fhir" / "servicerequest-example.json").read_text())
    coding = sample["code"]["coding"][0]  # SNOMED 303653007, "Computed tomography of head"
    pair = f"{coding['system']}|{coding['code']}"
    before = channel.create(_service_request(coding, 1), None, "fhir-client")
    assert before.status == 201, before.body
    assert [item.reason_codes for item in _open_items(db)] == [["unknown_service_code"]]
    waiting = waiting_codes(db, _open_items(db)[0].id)
    assert waiting[0]["code"] == pair and waiting[0]["text"] == "Computed tomography of head"
    assert waiting[0]["suggestions"][0].target == "CT-HEAD"
    record = MappingRecord(sender="*", kind="service", code=pair, target="CT-HEAD")
    released = save_mapping(db, settings, catalogue, record, actor="coordinator", suggested="CT-HEAD")
    # CT-HEAD needs the referrer, which this request does not name: the item waits on that alone now
    assert released.cases == [] and released.still_waiting == 1
    assert _open_items(db)[0].reason_codes == ["missing_field:referrer.code"]
    after = channel.create(_service_request(coding, 2), None, "fhir-client")
    assert after.status == 201
    assert [item.reason_codes for item in _open_items(db)] == [["missing_field:referrer.code"]] * 2


def test_a_mapping_onto_nothing_live_is_refused(db: Database, settings: Settings) -> None:
    record = MappingRecord(sender="GHH", kind="service", code="X1", target="NO-SUCH")
    with pytest.raises(Conflict, match="no live service 'NO-SUCH'"):
        save_mapping(db, settings, CatalogueCache(0), record, actor="coordinator")


@pytest.mark.parametrize(
    ("kind", "code", "text", "expected"),
    [
        ("service", "24725-4", "CT Head", "CT-HEAD"),
        ("service", "71045", "Xray exam chest 1 view", "XRAY-CHEST"),
        ("service", "X", "MRI of the knee", "MRI-KNEE"),
        ("service", "US1", "Ultrasound abdomen", "US-ABDO"),
        ("location", "North Imaging", None, "north"),
        ("payer", "NHS ENGLAND", None, "NHS"),
    ],
)
def test_suggestions_rank_the_likely_target_first(
    db: Database, kind: str, code: str, text: str | None, expected: str
) -> None:
    found = suggest(db, kind, code, text)
    assert found and found[0].target == expected, found
    assert 0 < found[0].confidence <= 1
