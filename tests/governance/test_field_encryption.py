"""Field encryption at rest: ciphertext in the database, clear through the services, blind index
lookups, key rotation in batches, legacy clear values encrypted, the wrong key refused."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from careops.db import Database
from careops.domain.encryption import KeysUnavailable
from careops.errors import ConfigurationError
from careops.governance.keys import encrypted_columns, key_rows, load_field_keys, rotate
from careops.governance.masking import CLEAR
from careops.governance.permissions import ADMIN, PHI_READ
from careops.governance.principal import Principal
from careops.orchestration.cases import get_case
from careops.settings import Settings
from tests.conftest import referral

ENCRYPTED = {
    "patient.mrn",
    "service_case.member_id",
    "intake_item.raw_payload",
    "intake_item.raw_bytes",
    "intake_item.normalised",
    "document.content",
    "document.text",
    "connector_secret.secret",
}


def _raw(db: Database, sql: str) -> list[str]:
    with db.engine.connect() as connection:
        return [
            row[0] if isinstance(row[0], str) else bytes(row[0]).decode()
            for row in connection.execute(text(sql))
        ]


def test_sensitive_columns_hold_only_ciphertext_and_read_back_in_clear(
    client: TestClient, db: Database
) -> None:
    assert {c.name for c in encrypted_columns()} == ENCRYPTED
    body = referral()
    case_id = client.post("/api/v1/referrals", json=body).json()["case_id"]
    incomplete = referral(patient={"mrn": "MRN-SECRET-1", "given_name": "Ann", "family_name": "Lee"})
    client.post("/api/v1/referrals", json=incomplete)
    stored = (
        _raw(db, "SELECT mrn FROM patient")
        + _raw(db, "SELECT member_id FROM service_case")
        + _raw(db, "SELECT raw_payload FROM intake_item")
        + _raw(db, "SELECT normalised FROM intake_item WHERE normalised IS NOT NULL")
    )
    assert len(stored) >= 6 and all(value.startswith("enc1:") for value in stored)
    mrn = body["patient"]["mrn"]  # type: ignore[index]
    assert not any(
        mrn.upper() in value.upper() or "MRN-SECRET-1" in value or "943 476" in value for value in stored
    )
    shown = client.get(f"/api/v1/cases/{case_id}").json()
    assert shown["patient"]["mrn"] == mrn.upper() and shown["member_id"] == "943 476 5919"


def test_the_blind_index_finds_the_patient_again(client: TestClient, db: Database) -> None:
    first = referral()
    client.post("/api/v1/referrals", json=first)
    again = referral(
        service_code="CT-HEAD", patient={**first["patient"], "mrn": f" {first['patient']['mrn'].lower()} "}
    )  # type: ignore[index]
    client.post("/api/v1/referrals", json=again)
    assert len(_raw(db, "SELECT id FROM patient")) == 1
    (index,) = _raw(db, "SELECT mrn_index FROM patient")
    assert len(index) == 64 and first["patient"]["mrn"] not in index  # type: ignore[index]


def test_a_value_moved_to_another_column_does_not_decrypt(client: TestClient, db: Database) -> None:
    case_id = client.post("/api/v1/referrals", json=referral()).json()["case_id"]
    with db.engine.begin() as connection:
        connection.execute(text("UPDATE service_case SET member_id = (SELECT mrn FROM patient LIMIT 1)"))
    reader = Principal("t", "t", frozenset({ADMIN, PHI_READ}), masking=CLEAR)
    with pytest.raises(KeysUnavailable, match="integrity check"):
        get_case(db, case_id, reader)


def test_the_wrong_master_key_is_refused_with_a_clear_error(db: Database, settings: Settings) -> None:
    with pytest.raises(ConfigurationError, match="does not open the stored data keys"):
        load_field_keys(
            Database(settings.database_url), settings.model_copy(update={"secret_key": "another" * 8})
        )


def test_rotation_re_encrypts_everything_and_keeps_lookups_working(
    client: TestClient, db: Database, settings: Settings
) -> None:
    bodies = [referral() for _ in range(7)]
    case_ids = [client.post("/api/v1/referrals", json=b).json()["case_id"] for b in bodies]
    with db.engine.begin() as connection:  # a row written before encryption was switched on
        connection.execute(
            text("UPDATE service_case SET member_id = 'LEGACY-123' WHERE id = :id"), {"id": case_ids[0]}
        )
    before = {row.id for row in key_rows(db) if row.purpose == "data"}
    seen: list[tuple[str, int, int]] = []
    new_key, count = rotate(db, settings, lambda column, done, total: seen.append((column, done, total)))
    assert count >= 7 * 4 and new_key not in before
    assert {column for column, _, _ in seen} >= {"patient.mrn", "intake_item.raw_payload"}
    assert all(done <= total for _, done, total in seen)
    for column in ("mrn FROM patient", "member_id FROM service_case", "raw_payload FROM intake_item"):
        assert all(v.startswith(f"enc1:{new_key}:") for v in _raw(db, f"SELECT {column}"))
    rows = key_rows(db)
    assert all(r.retired_at is not None for r in rows if r.purpose == "data" and r.id in before)
    assert client.get(f"/api/v1/cases/{case_ids[0]}").json()["member_id"] == "LEGACY-123"
    duplicate = client.post("/api/v1/referrals", json=bodies[3])
    assert duplicate.status_code == 200 and duplicate.json()["case_id"] == case_ids[3]


def test_keys_rotate_from_the_command_line_shows_progress(
    db: Database, settings: Settings, client: TestClient
) -> None:
    client.post("/api/v1/referrals", json=referral())
    env = {**os.environ, "CAREOPS_DATABASE_URL": settings.database_url}
    careops = str(Path(sys.executable).parent / "careops")
    rotated = subprocess.run(
        [careops, "keys", "rotate"], env=env, capture_output=True, text=True, timeout=120
    )
    assert rotated.returncode == 0, rotated.stderr
    assert "is active" in rotated.stderr and "re-encrypted" in rotated.stderr
    status = subprocess.run([careops, "keys", "status"], env=env, capture_output=True, text=True, timeout=120)
    assert status.stdout.count("retired") == 1 and status.stdout.count("live") == 2  # new data key + index


def test_a_new_master_key_takes_over_after_a_rewrap(
    client: TestClient, db: Database, settings: Settings, tmp_path: Path
) -> None:
    case_id = client.post("/api/v1/referrals", json=referral()).json()["case_id"]
    key_file = tmp_path / "master.key"
    env = {**os.environ, "CAREOPS_DATABASE_URL": settings.database_url}
    careops = str(Path(sys.executable).parent / "careops")
    assert subprocess.run([careops, "keys", "generate", str(key_file)], env=env, timeout=60).returncode == 0
    assert oct(key_file.stat().st_mode)[-3:] == "600"
    moved = {**env, "CAREOPS_ENCRYPTION_KEY_FILE": str(key_file), "OLD_SECRET": settings.secret_key}
    refused = subprocess.run(
        [careops, "keys", "status"], env=moved, capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 1 and "does not open the stored data keys" in refused.stderr
    rewrapped = subprocess.run([careops, "keys", "rewrap", "--old-secret-env", "OLD_SECRET"], env=moved,
                               capture_output=True, text=True, timeout=60)  # fmt: skip
    assert rewrapped.returncode == 0, rewrapped.stderr
    new_settings = settings.model_copy(update={"encryption_key_file": str(key_file)})
    fresh = Database(settings.database_url)
    load_field_keys(fresh, new_settings)
    reader = Principal("t", "t", frozenset({ADMIN, PHI_READ}), masking=CLEAR)
    assert get_case(fresh, case_id, reader)["member_id"] == "943 476 5919"
    with pytest.raises(ConfigurationError):
        load_field_keys(Database(settings.database_url), settings)  # the old master key no longer opens them
