"""Master data as files, on SQLite and PostgreSQL: a valid file applies exactly; an invalid one
changes nothing and names every error by file, line and field; a re-import changes nothing; export
then import is the identity (YAML and CSV); a record left out is retired, not deleted, and intake
no longer resolves it; a field owned by another system is held in the master_data queue."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from careops.db import Database
from careops.domain.models import BusinessEvent, ExceptionItem, Location, Referrer, Service
from careops.errors import ValidationFailed
from careops.orchestration.reference_files import (
    apply_file,
    diff,
    export_records,
    read_reference_file,
    to_csv,
    to_yaml,
)
from tests.conftest import referral

ORGANISATION = "organisation: {slug: demo, name: Northfield Diagnostics & Home Care}\n"


def _file(tmp_path: Path, text: str, name: str = "reference.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _apply(db: Database, path: Path, **options: str) -> list[str]:
    read = read_reference_file(path, options.pop("kind", None))
    applied = apply_file(db, read, actor="test", reason="test import", **options)
    return [change.describe() for change in applied.changes]


def _events(db: Database, kind: str) -> int:
    with db.sessions() as session:
        return session.scalar(select(func.count()).where(BusinessEvent.type == kind)) or 0


def test_a_valid_file_applies_exactly_and_a_second_time_changes_nothing(db: Database, tmp_path: Path) -> None:
    path = _file(
        tmp_path,
        ORGANISATION
        + """services:
- code: MRI-KNEE
  name: MRI knee (3T)
  aliases: ['73721', MRI KNEE]
  required_fields: [patient.birth_date, referrer.code, payer_code, member_id]
  requires_authorisation: true
  duration_minutes: 45
  resources: [mri-scanner, radiographer]
  prices: {NHS: 190, AXA: 420, BUPA: 400, SELF: 450}
  procedure_code: '73721'
  preparation_minutes: 10
  requires_result: true
  billing_checklist: [signed_report, procedure_code, diagnosis_code]
- code: DEXA
  name: Bone density scan
  duration_minutes: 15
  prices: {SELF: 120}
""",
    )
    added_before = _events(db, "reference.added")
    changes = _apply(db, path)
    assert "add      services DEXA" in changes
    assert "change   services MRI-KNEE (name, duration_minutes, prices)" in changes
    retired = sorted(c for c in changes if c.startswith("retire"))
    assert retired == [
        f"retire   services {code}"
        for code in ("BLOOD-PANEL", "CT-HEAD", "HOME-WOUND", "US-ABDO", "XRAY-CHEST")
    ]
    with db.sessions() as session:
        mri = session.scalars(select(Service).where(Service.code == "MRI-KNEE")).one()
        assert (mri.name, mri.duration_minutes, mri.prices["NHS"]) == ("MRI knee (3T)", 45, 190)
        retired_row = session.scalars(select(Service).where(Service.code == "XRAY-CHEST")).one()
        assert retired_row.retired_at is not None  # retired, still there for the cases that name it
    assert _events(db, "reference.added") == added_before + 1
    assert _events(db, "reference.retired") == 5
    assert diff(db, read_reference_file(path)) == []
    assert _apply(db, path) == []


def test_an_invalid_file_changes_nothing_and_names_every_error(db: Database, tmp_path: Path) -> None:
    path = _file(
        tmp_path,
        ORGANISATION
        + """locations:
- slug: North Site
  name: North
- slug: east
  name: East
  timezone: Mars/Olympus
services:
- code: DEXA
  name: Bone density scan
  duration_minutes: -5
  required_fields: [patient.shoe_size]
  colour: blue
- code: DEXA
  name: Twice
- code: DEXA
  name: Thrice
""",
    )
    read = read_reference_file(path)
    problems = "\n".join(read.problems)
    # each error on the line its entry starts on, with the field's path
    assert f"{path}:3: locations[0].slug: String should match pattern" in problems
    assert f"{path}:5: locations[1].timezone: Value error, unknown time zone 'Mars/Olympus'" in problems
    assert f"{path}:9: services[0].duration_minutes: Input should be greater than or equal to 1" in problems
    assert f"{path}:9: services[0].required_fields.0: Input should be" in problems
    assert f"{path}:9: services[0].colour: Extra inputs are not permitted" in problems
    assert f"{path}:16: services DEXA is also on line 14" in problems  # the valid ones, twice
    assert len(read.problems) == 6
    before = export_records(db, ["locations", "services"])
    with pytest.raises(ValidationFailed):
        apply_file(db, read, actor="test", reason="should fail")
    assert export_records(db, ["locations", "services"]) == before


def test_unreadable_yaml_and_unknown_kinds_are_named(db: Database, tmp_path: Path) -> None:
    broken = read_reference_file(_file(tmp_path, "services:\n  - code: [unclosed\n"))
    assert broken.problems and "not valid YAML" in broken.problems[0] and ":3" in broken.problems[0]
    unknown = read_reference_file(_file(tmp_path, "widgets: []\n", "w.yaml"))
    assert "unknown kind 'widgets'" in unknown.problems[0]
    wrong = read_reference_file(_file(tmp_path, "code,name\n", "list.txt"))
    assert ".yaml, .yml or .csv" in wrong.problems[0]


def test_export_then_import_is_the_identity_in_yaml_and_csv(db: Database, tmp_path: Path) -> None:
    document = export_records(
        db, ["locations", "services", "payers", "referrers", "resources", "mappings", "field_owners"]
    )
    path = _file(tmp_path, to_yaml(document), "export.yaml")
    assert read_reference_file(path).problems == []
    assert diff(db, read_reference_file(path)) == []
    for kind in ("locations", "services", "payers", "referrers", "resources"):
        csv_path = _file(tmp_path, to_csv(kind, document[kind]), f"{kind}.csv")
        read = read_reference_file(csv_path)
        assert read.problems == [] and len(read.entries) == len(document[kind])
        assert diff(db, read) == [], kind


def test_a_csv_directory_of_referrers_is_validated_by_line(db: Database, tmp_path: Path) -> None:
    rows = "code,name,organisation\nGP-001,Dr Referrer 1,Northfield Medical Practice\nGP-900,,Nowhere\n"
    read = read_reference_file(_file(tmp_path, rows, "referrers.csv"))
    assert read.problems == [f"{tmp_path / 'referrers.csv'}:3: referrers[1].name: Field required"]
    fixed = _file(tmp_path, rows.replace(",,Nowhere", ",Dr New,Nowhere"), "referrers.csv")
    changes = _apply(db, fixed)
    assert "add      referrers GP-900" in changes and len([c for c in changes if c.startswith("retire")]) == 9


def test_a_retired_location_is_no_longer_resolved_and_can_be_restored(
    db: Database, client: TestClient, tmp_path: Path
) -> None:
    keep = """locations:
- {slug: central, name: Central Diagnostics, timezone: Europe/London, groups: [diagnostics],
   closures: [{first: '2026-12-25', last: '2026-12-26'}, {first: '2027-01-01'}]}
- {slug: south, name: South Home Care, timezone: Europe/London, groups: [home-care]}
"""
    assert _apply(db, _file(tmp_path, ORGANISATION + keep)) == ["retire   locations north"]
    answer = client.post("/api/v1/referrals", json=referral())
    assert answer.status_code == 202 and "unknown_location" in answer.json()["reason_codes"]
    with db.sessions() as session:
        assert session.scalars(select(Location).where(Location.slug == "north")).one().retired_at is not None
    north = (
        "- {slug: north, name: North Imaging Centre, timezone: Europe/London, groups: [diagnostics, imaging]}"
    )
    north += "\n"
    assert _apply(db, _file(tmp_path, ORGANISATION + keep + north)) == ["restore  locations north"]
    assert client.post("/api/v1/referrals", json=referral()).status_code == 201


def test_a_field_owned_elsewhere_is_held_for_its_owner(db: Database, tmp_path: Path) -> None:
    owners = ORGANISATION + "field_owners:\n- {kind: referrer, field: name, owner: ehr}\n"
    assert _apply(db, _file(tmp_path, owners, "owners.yaml")) == ["add      field_owners referrer/name"]
    rows = "code,name,organisation\n" + "".join(
        f"GP-{n:03d},{'Dr Renamed' if n == 1 else f'Dr Referrer {n}'},{org}\n"
        for n, org in enumerate(
            [
                "",
                "Northfield Medical Practice",
                "Northfield Medical Practice",
                "Riverside Surgery",
                "Riverside Surgery",
                "Hillcrest Health Centre",
                "Hillcrest Health Centre",
                "Parkside Clinic",
                "Parkside Clinic",
                "Meadow Lane Practice",
                "Meadow Lane Practice",
            ]
        )
        if n
    )
    read = read_reference_file(_file(tmp_path, rows, "referrers.csv"))
    applied = apply_file(db, read, actor="test", reason="from the EHR export", source="erp")
    assert applied.changes == [] and applied.held == ["referrers GP-001: name is owned by ehr"]
    with db.sessions() as session:
        assert (
            session.scalars(select(Referrer.name).where(Referrer.code == "GP-001")).one() == "Dr Referrer 1"
        )
        held = session.scalars(select(ExceptionItem).where(ExceptionItem.queue == "master_data")).one()
        assert held.reason_codes == ["field_owned_elsewhere:referrers.name:GP-001", "owner:ehr"]
    as_owner = apply_file(db, read, actor="test", reason="from the EHR", source="ehr")
    assert [c.describe() for c in as_owner.changes] == ["change   referrers GP-001 (name)"]
