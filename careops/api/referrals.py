"""POST /api/v1/referrals: the JSON intake channel."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from careops.api.contract import answers
from careops.api.deps import HEADER_VALUE, OversizedBody, authorise, check_address, optional_header, read_body
from careops.api.problems import problem
from careops.db import Database, in_thread
from careops.domain.referrals import ReferralIn
from careops.errors import CareopsError, ValidationFailed
from careops.governance.principal import Principal
from careops.governance.signing import SIGNATURE_HEADER, SIGNED, TIMESTAMP_HEADER, verify_inbound
from careops.orchestration.intake import IntakeRequest, accept_referral
from careops.orchestration.quarantine import quarantine, rejection_reasons
from careops.settings import Settings

router = APIRouter(prefix="/api/v1", tags=["intake"])
INTAKE_SCOPE = "intake:write"

_REFERRAL_SCHEMA = ReferralIn.model_json_schema(ref_template="#/components/schemas/{model}")
_DEFS = _REFERRAL_SCHEMA.pop("$defs", {})
_OPENAPI_BODY: dict[str, Any] = {
    "x-required-scope": INTAKE_SCOPE,
    "parameters": [
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": HEADER_VALUE},
            "description": "Retrying with the same key and body replays the first answer.",
        },
        {
            "name": "X-Correlation-Id",
            "in": "header",
            "required": False,
            "schema": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": HEADER_VALUE},
            "description": "Carried into the business events of this referral.",
        },
    ],
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": _REFERRAL_SCHEMA,
                "example": _REFERRAL_SCHEMA["examples"][0],
            }
        },
    },
    "responses": {
        "201": {"description": "Complete referral: a case was created."},
        "200": {"description": "Duplicate of a recent referral: linked to the existing case."},
        "202": {"description": "Incomplete referral: an exception item with reason codes was opened."},
        **answers(
            409,
            413,
            422,
            s409="Idempotency-Key reused with a different body, or a clash with concurrent writes "
            "(send it again); kept in quarantine.",
            s422="Malformed JSON, wrong types or an unusable header; kept in quarantine.",
        ),
    },
}
REFERRAL_SCHEMA_DEFS = {"ReferralIn": _REFERRAL_SCHEMA, **_DEFS}


@router.post("/referrals", openapi_extra=_OPENAPI_BODY, summary="Submit a referral")
async def submit_referral(request: Request) -> JSONResponse:
    # The hottest route reads its caller and headers itself: FastAPI's dependency solving cost a
    # tenth of a request here (bench/RESULTS.md). _OPENAPI_BODY declares the scope and headers.
    principal = authorise(request, INTAKE_SCOPE)
    settings: Settings = request.app.state.settings
    try:
        raw = await read_body(request, settings)
    except OversizedBody as exc:
        return await _reject(request, exc.raw, principal, "api", exc)
    return await _take(request, raw, principal, "api")


@router.post(
    "/webhooks/{connector}/referrals",
    openapi_extra={**_OPENAPI_BODY, "x-required-scope": SIGNED},
    summary="A referral from a connector, signed (X-Careops-Timestamp, X-Careops-Signature)",
)
async def signed_referral(request: Request, connector: str) -> JSONResponse:
    """No bearer token: the HMAC signature of a registered inbound connector (see docs/security.md)."""
    check_address(request)
    principal = Principal(f"connector:{connector}"[:100], connector, frozenset({INTAKE_SCOPE}))
    oversized: OversizedBody | None = None
    try:
        raw = await read_body(request, request.app.state.settings)
    except OversizedBody as exc:
        raw, oversized = exc.raw, exc
    await in_thread(_verify, request, connector, raw)  # before anything is kept
    if oversized is not None:
        return await _reject(request, raw, principal, "webhook", oversized)
    return await _take(request, raw, principal, "webhook")


def _verify(request: Request, connector: str, raw: bytes) -> None:
    settings: Settings = request.app.state.settings
    verify_inbound(
        request.app.state.db,
        connector,
        request.headers.get(TIMESTAMP_HEADER),
        request.headers.get(SIGNATURE_HEADER),
        raw,
        settings.webhook_tolerance_seconds,
    )


async def _take(request: Request, raw: bytes, principal: Principal, channel: str) -> JSONResponse:
    """Validate and take one referral body; whatever cannot be taken is kept in quarantine."""
    db: Database = request.app.state.db
    settings: Settings = request.app.state.settings
    content_type = request.headers.get("content-type", "application/json")
    try:
        idempotency_key = optional_header(request, "idempotency-key", 255)
        correlation_id = optional_header(request, "x-correlation-id", 64)
        referral = ReferralIn.model_validate_json(raw)
    except ValidationFailed as exc:
        return await _reject(request, raw, principal, channel, exc)
    except ValidationError as exc:
        return await _reject(request, raw, principal, channel, ValidationFailed.from_errors(exc.errors()))
    intake = IntakeRequest(
        raw, content_type, channel, principal.id, idempotency_key, correlation_id, scope=principal.scope
    )
    catalogue = request.app.state.catalogue
    try:
        answer = await in_thread(accept_referral, db, intake, referral, settings, catalogue)
    except CareopsError as exc:  # another location's referral, a key reused with another body
        return await _reject(request, raw, principal, channel, exc)
    return JSONResponse(answer.body, status_code=answer.status_code)


async def _reject(
    request: Request, raw: bytes, principal: Principal, channel: str, error: CareopsError
) -> JSONResponse:
    """Keep the rejected body whole in quarantine, then answer the problem with the quarantine id."""
    db: Database = request.app.state.db
    content_type = request.headers.get("content-type", "application/json")
    reasons = rejection_reasons(error)
    quarantine_id = await in_thread(
        lambda: quarantine(
            db, raw=raw, content_type=content_type, channel=channel, reasons=reasons, actor=principal.id
        )
    )
    return problem(
        error.status,
        error.code,
        error.title,
        error.detail,
        request,
        {**error.extra, "quarantine_id": quarantine_id},
    )
