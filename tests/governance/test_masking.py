"""PHI masking through the API: one policy for lists, details, exports, quarantine and documents;
reveal with a reason; reads in clear audited."""

from __future__ import annotations

import csv
import io

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from careops.db import Database
from careops.domain.models import BusinessEvent, Document, IntakeItem
from careops.domain.phi import PhiCategory
from careops.governance.masking import CLEAR, MaskingPolicy
from careops.governance.permissions import DEFAULT_MASKING, Visibility
from careops.governance.tokens import create_token
from tests.conftest import referral


def _headers(db: Database, scopes: list[str], **kwargs: object) -> dict[str, str]:
    secret, _ = create_token(db, f"t-{'-'.join(scopes)}", scopes, actor="test", **kwargs)  # type: ignore[arg-type]
    return {"Authorization": f"Bearer {secret}"}


def _events(db: Database, kind: str) -> list[BusinessEvent]:
    with db.sessions() as session:
        return list(session.scalars(select(BusinessEvent).where(BusinessEvent.type == kind)))


@pytest.mark.parametrize(
    ("category", "value", "shown"),
    [
        (PhiCategory.NAME, "Alexandra", "A****"),
        (PhiCategory.NAME, "Mary Ann Smith", "M. A. S****"),
        (PhiCategory.BIRTH_DATE, "1980-04-12", "1980"),
        (PhiCategory.PHONE, "020 7946 0958", "***-***-0958"),
        (PhiCategory.EMAIL, "alex@example.org", "a****@example.org"),
        (PhiCategory.IDENTIFIER, "943 476 5919", "***-**-5919"),
        (PhiCategory.CLINICAL_NOTE, "chest pain for 3 days", "[21 characters masked]"),
    ],
)
def test_partial_forms(category: PhiCategory, value: str, shown: str) -> None:
    policy = MaskingPolicy({**DEFAULT_MASKING, category: Visibility.PARTIAL})
    assert policy.value(category, value) == shown
    assert CLEAR.value(category, value) == value
    assert MaskingPolicy({category: Visibility.HIDDEN}).value(category, value) is None


def test_lists_details_and_exports_are_masked_and_a_reveal_is_audited(
    client: TestClient, db: Database
) -> None:
    case_id = client.post("/api/v1/referrals", json=referral()).json()["case_id"]
    masked = _headers(db, ["cases:read", "phi:reveal"])
    listed = client.get("/api/v1/cases", headers=masked).json()["items"][0]
    detail = client.get(f"/api/v1/cases/{case_id}", headers=masked).json()
    for view in (listed, detail):
        assert view["patient"]["given_name"] == "A****" and view["patient"]["birth_date"] == "1980"
        assert view["member_id"] == "***-**-5919" and "patient.given_name" not in view.get("masked", [])
        assert set(view["patient"]["masked"]) >= {"given_name", "family_name", "birth_date", "mrn", "phone"}
    exported = client.get("/api/v1/cases/export", headers=masked)
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    (row,) = list(csv.DictReader(io.StringIO(exported.text)))
    assert (
        row["patient.given_name"] == "A****"
        and row["patient.birth_date"] == "1980"
        and "Alex" not in exported.text
    )
    assert _events(db, "cases.exported")[0].payload["rows"] == 1
    assert _events(db, "phi.read") == []  # nothing was shown in clear so far
    no_reason = client.post(f"/api/v1/cases/{case_id}/reveal", json={"reason": "x"}, headers=masked)
    assert no_reason.status_code == 422 and "Alex" not in no_reason.text
    shown = client.post(
        f"/api/v1/cases/{case_id}/reveal", json={"reason": "patient called, ref 77"}, headers=masked
    )
    assert shown.status_code == 200 and shown.json()["patient"]["given_name"] == "Alex"
    assert "patient.given_name" in shown.json()["revealed"]
    (revealed,) = _events(db, "phi.revealed")
    assert revealed.payload["reason"] == "patient called, ref 77" and revealed.case_id == case_id
    cannot = client.post(f"/api/v1/cases/{case_id}/reveal", json={"reason": "curious about it"},
                         headers=_headers(db, ["cases:read"]))  # fmt: skip
    assert cannot.status_code == 403


def test_token_use_is_audited_once_per_cache_period(client: TestClient, db: Database) -> None:
    headers = _headers(db, ["cases:read"])
    for _ in range(3):
        assert client.get("/api/v1/cases", headers=headers).status_code == 200
    used = [e for e in _events(db, "token.used") if e.payload["name"] == "t-cases:read"]
    assert len(used) == 1 and used[0].actor == used[0].subject_id


def test_reads_in_clear_are_audited(client: TestClient, db: Database) -> None:
    case_id = client.post("/api/v1/referrals", json=referral()).json()["case_id"]
    clear = _headers(db, ["cases:read", "phi:read"])
    assert client.get(f"/api/v1/cases/{case_id}", headers=clear).json()["patient"]["given_name"] == "Alex"
    client.get("/api/v1/cases", headers=clear)
    reads = _events(db, "phi.read")
    assert len(reads) == 2 and all(case_id in e.payload["ids"] for e in reads)
    assert "name" in reads[0].payload["categories"]


def test_quarantined_bodies_and_documents_follow_the_policy(client: TestClient, db: Database) -> None:
    kept = client.post(
        "/api/v1/referrals",
        content=b'{"patient": {"given_name": "Zed"',
        headers={"Content-Type": "application/json"},
    )
    quarantine_id = kept.json()["quarantine_id"]
    masked = _headers(db, ["quarantine:read", "exceptions:read"])
    body = client.get(f"/api/v1/quarantine/{quarantine_id}", headers=masked).json()
    assert body["raw_payload"] is None and body["masked"] == ["raw_payload"]
    assert (
        "Zed" in client.get(f"/api/v1/quarantine/{quarantine_id}").json()["raw_payload"]
    )  # admin + phi:read
    with db.transaction() as session:
        item = session.get(IntakeItem, quarantine_id)
        assert item is not None
        document = Document(intake_item_id=item.id, filename="Zed_letter.pdf", content_type="application/pdf")
        document.size_bytes, document.sha256, document.content, document.text = 5, "0" * 64, b"%PDF-", "Zed"
        session.add(document)
        session.flush()
        document_id = document.id
    listed = client.get(f"/api/v1/intake/{quarantine_id}/documents", headers=masked).json()["items"][0]
    assert listed["filename"] is None and "filename" in listed["masked"]
    assert client.get(f"/api/v1/documents/{document_id}/content", headers=masked).status_code == 403
    assert client.get(f"/api/v1/documents/{document_id}/content").content == b"%PDF-"
