"""/refer/{location}: the partner clinics' referral form (server-rendered, no script, accessible).

Thin: render, read the multipart body, check the CSRF token and the upload, hand the fields to
the web form channel, render what it says (inline messages, or the reference number).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException

from careops.db import in_thread
from careops.errors import Forbidden
from careops.integrations.inbound.document_text import extract_text
from careops.integrations.inbound.webform import FIELDS, FormRejected, WebForm, check_upload
from careops.orchestration.intake import Attachment
from careops.web.pages import TEMPLATES, templates

router = APIRouter(prefix="/refer", tags=["partner form"], include_in_schema=False)
COOKIE = "careops_form"
LABELS = {
    "patient.given_name": "Given name",
    "patient.family_name": "Family name",
    "patient.birth_date": "Date of birth",
    "patient.mrn": "Hospital or NHS number",
    "patient.phone": "Phone",
    "patient.email": "Email",
    "service_code": "Service",
    "priority": "Priority",
    "referrer.code": "Referrer code",
    "referrer.name": "Referring clinician",
    "payer_code": "Payer",
    "member_id": "Member or policy number",
    "clinical_notes": "Clinical notes",
    "upload": "Referral letter or image",
    "location": "Location",
}


def _page(status: int, **context: Any) -> Response:
    context.setdefault("title", "Refer a patient")
    context.setdefault("errors", {})
    context.setdefault("values", {})
    html = templates.get_template("refer.html").render(labels=LABELS, **context)
    return Response(html, status_code=status, media_type="text/html; charset=utf-8")


def _form(request: Request, location: str, status: int = 200, **context: Any) -> Response:
    channel: WebForm = request.app.state.inbound.form
    choices = channel.choices(location)
    if choices is None:
        return _page(404, title="No such form", problem="There is no referral form at this address.")
    nonce, token = channel.tokens.issue()
    settings = request.app.state.settings
    response = _page(
        status,
        location=location,
        choices=choices,
        csrf_token=token,
        max_upload_mb=settings.form_max_upload_bytes // (1024 * 1024),
        **context,
    )
    secure = request.url.scheme == "https"
    response.set_cookie(COOKIE, nonce, httponly=True, samesite="strict", secure=secure, path="/refer")
    return response


@router.get("/form.css")
async def stylesheet() -> Response:
    return Response((TEMPLATES / "form.css").read_text(), media_type="text/css")


@router.get("/{location}")
async def show_form(request: Request, location: str) -> Response:
    return await in_thread(_form, request, location)


@router.post("/{location}")
async def submit_form(request: Request, location: str) -> Response:
    channel: WebForm = request.app.state.inbound.form
    limit = request.app.state.settings.form_max_upload_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + 256 * 1024:
        return _page(
            413, location=location, problem=f"The form is too large: files up to {limit // 2**20} MB."
        )
    try:
        form = await request.form(max_files=1, max_fields=len(FIELDS) + 4)
    except MultiPartException as exc:
        return _page(400, location=location, problem=f"The form could not be read: {exc.message}")
    values = {name: str(form.get(name) or "") for name in FIELDS}
    try:
        nonce = channel.tokens.verify(str(form.get("csrf_token") or ""), request.cookies.get(COOKIE))
    except Forbidden as exc:
        errors, status = {"form": exc.detail}, 403
        return await in_thread(lambda: _form(request, location, status, values=values, errors=errors))
    upload, upload_error = await _upload(form.get("upload"), limit)
    refused = {"upload": upload_error} if upload_error else {}
    client = request.client.host if request.client else "unknown"
    try:
        outcome = await in_thread(channel.submit, location, values, upload, nonce, client, refused)
    except FormRejected as exc:
        return _page(exc.status, location=location, problem=exc.detail)
    if outcome.reference is None:
        errors = outcome.errors
        return await in_thread(lambda: _form(request, location, 422, values=values, errors=errors))
    return _page(201, title="Referral received", location=location, reference=outcome.reference)


async def _upload(part: Any, limit: int) -> tuple[Attachment | None, str | None]:
    if not isinstance(part, UploadFile) or not part.filename:
        return None, None
    data = await part.read(limit + 1)
    content_type = (part.content_type or "").split(";")[0].strip().lower()
    problem = check_upload(content_type, data, limit)
    if problem:
        return None, problem
    return Attachment(part.filename[:255], content_type, data, extract_text(content_type, data)), None
