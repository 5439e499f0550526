"""The partner referral form over HTTP: CSRF, inline validation, uploads, rate limit, a case."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from careops.db import Database
from careops.domain.models import Document, IntakeItem, ServiceCase
from careops.settings import Settings
from tests.integrations.test_email import pdf_with_text

GOOD = {
    "patient.given_name": "Jane",
    "patient.family_name": "Doe",
    "patient.birth_date": "12/04/1980",
    "patient.phone": "020 7946 0958",
    "service_code": "XRAY-CHEST",
    "priority": "urgent",
}


def token(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, "no CSRF token in the page"
    return match.group(1)


def anonymous(client: TestClient) -> TestClient:
    client.headers.pop("Authorization", None)
    return client


def test_the_form_is_public_accessible_and_lists_the_catalogue(client: TestClient) -> None:
    page = anonymous(client).get("/refer/north")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "form-action 'self'" in page.headers["content-security-policy"]
    html = page.text
    for name in ("patient-given_name", "patient-family_name", "patient-birth_date", "service_code", "upload"):
        assert f'<label for="{name}">' in html and f'id="{name}"' in html
    assert '<option value="XRAY-CHEST"' in html
    assert client.get("/refer/nowhere").status_code == 404
    assert client.get("/refer/form.css").headers["content-type"].startswith("text/css")


def test_a_complete_form_creates_a_case_and_gives_a_reference(client: TestClient, db: Database) -> None:
    client = anonymous(client)
    csrf = token(client.get("/refer/north").text)
    letter = pdf_with_text("Referral letter")
    sent = client.post(
        "/refer/north",
        data={**GOOD, "csrf_token": csrf},
        files={"upload": ("letter.pdf", letter, "application/pdf")},
    )
    assert sent.status_code == 201, sent.text
    reference = re.search(r'id="reference">([0-9a-f]+)<', sent.text)
    assert reference
    again = client.post("/refer/north", data={**GOOD, "csrf_token": csrf})  # a double click
    assert reference.group(1) in again.text
    with db.sessions() as session:
        item = session.get(IntakeItem, reference.group(1))
        assert item is not None and item.channel == "form" and item.case_id
        assert session.scalar(select(func.count()).select_from(ServiceCase)) == 1
        document = session.scalars(select(Document)).one()
    assert document.filename == "letter.pdf" and "Referral letter" in (document.text or "")


def test_missing_and_wrong_fields_are_shown_inline_and_nothing_is_written(
    client: TestClient, db: Database
) -> None:
    client = anonymous(client)
    csrf = token(client.get("/refer/north").text)
    values = {**GOOD, "patient.given_name": "", "patient.birth_date": "31/31/1980", "csrf_token": csrf}
    sent = client.post(
        "/refer/north", data=values, files={"upload": ("x.pdf", b"MZ not a pdf", "application/pdf")}
    )
    assert sent.status_code == 422
    html = sent.text
    assert 'id="patient-given_name-error"' in html and 'aria-invalid="true"' in html
    assert 'id="patient-birth_date-error"' in html
    assert "Attach a PDF, JPEG or PNG file." in html
    assert 'value="Doe"' in html  # what was typed is kept
    with db.sessions() as session:
        assert session.scalar(select(func.count()).select_from(IntakeItem)) == 0


def test_a_field_holding_a_nul_is_asked_again_not_a_500(client: TestClient, db: Database) -> None:
    client = anonymous(client)
    csrf = token(client.get("/refer/north").text)
    sent = client.post("/refer/north", data={**GOOD, "patient.family_name": "Do\x00e", "csrf_token": csrf})
    assert sent.status_code == 422 and 'id="patient-family_name-error"' in sent.text
    assert "please retype it" in sent.text
    with db.sessions() as session:
        assert session.scalar(select(func.count()).select_from(IntakeItem)) == 0


def test_a_post_without_the_page_token_is_refused(client: TestClient, db: Database) -> None:
    client = anonymous(client)
    client.get("/refer/north")
    forged = client.post("/refer/north", data={**GOOD, "csrf_token": "abc.123.def"})
    assert forged.status_code == 403
    other = TestClient(client.app)  # a page token, but no cookie: another site posting it
    csrf = token(client.get("/refer/north").text)
    assert other.post("/refer/north", data={**GOOD, "csrf_token": csrf}).status_code == 403
    with db.sessions() as session:
        assert session.scalar(select(func.count()).select_from(IntakeItem)) == 0


def test_too_many_submissions_from_one_address_get_429(settings: Settings, db: Database) -> None:
    from careops.api.app import create_app

    strict = TestClient(create_app(settings.model_copy(update={"form_submissions_per_minute": 2}), db))
    answers = []
    for _ in range(3):
        csrf = token(strict.get("/refer/north").text)
        answers.append(strict.post("/refer/north", data={**GOOD, "csrf_token": csrf}).status_code)
    assert answers == [201, 201, 429]
