"""/fhir/r4: FHIR R4 referral intake (ServiceRequest, transaction and batch Bundles) and read-back.

Thin: authorise, read the body, call the FHIR channel, answer ``application/fhir+json``. Every
error, authentication included, is an OperationOutcome, as FHIR clients expect.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic_core import to_json

from careops import __version__
from careops.api.contract import answers
from careops.api.deps import OversizedBody, authorise, get_principal, read_body
from careops.db import in_thread
from careops.errors import CareopsError
from careops.governance.principal import Principal
from careops.integrations.inbound.fhir_channel import FhirChannel
from careops.integrations.inbound.fhir_r4 import (
    FHIR_JSON,
    FhirError,
    capability_statement,
    operation_outcome,
    request_schema,
)

router = APIRouter(prefix="/fhir/r4", tags=["fhir"])
_MEDIA = ("application/fhir+json", "application/json")
_ISSUE = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    413: "too-long",
    415: "not-supported",
}


def _answer(status: int, body: dict[str, Any], location: str | None = None) -> Response:
    headers = {"Location": location} if location else None
    # pydantic-core's serialiser: a Bundle's answer in a quarter of json.dumps's time (UTF-8, not \u escapes)
    return Response(to_json(body), status_code=status, media_type=FHIR_JSON, headers=headers)


def _error(status: int, diagnostics: str, expression: str | None = None) -> Response:
    return _answer(
        status, operation_outcome("error", _ISSUE.get(status, "processing"), diagnostics, expression)
    )


def _scope(scope: str, takes: str | None = None) -> dict[str, Any]:
    """The operation's scope and, for a write, the resource it takes."""
    extra: dict[str, Any] = {"x-required-scope": scope}
    if takes is not None:
        schema = {"schema": request_schema(takes)}
        extra["requestBody"] = {"required": True, "content": {media: schema for media in _MEDIA}}
    return extra


def _resource(description: str) -> dict[str, Any]:
    return {"description": description, "content": {FHIR_JSON: {"schema": {"type": "object"}}}}


# Every write may be refused as unreadable or invalid (400), too large (413), of another media
# type (415) or not processable (422); each refusal is kept in quarantine.
_WRITE_ERRORS = answers(400, 413, 415, 422, media=FHIR_JSON)
_CREATED = {
    "200": _resource("Already there (the same request, or If-None-Exist matched)"),
    "201": _resource("Created; Location: ServiceRequest/{id}"),
    **_WRITE_ERRORS,
}


async def _incoming(request: Request) -> tuple[Principal, bytes] | Response:
    """The caller and the body of a write, or the OperationOutcome that refuses it (a body that
    is refused, too large or of another media type, is kept in quarantine)."""
    try:
        principal = authorise(request, "intake:write")
    except CareopsError as exc:
        return _error(exc.status, exc.detail)
    try:
        raw = await read_body(request, request.app.state.settings)
    except OversizedBody as exc:
        return await _refused(request, exc.raw, principal, FhirError(413, "too-long", exc.detail))
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in _MEDIA:
        refusal = FhirError(415, "not-supported", f"send {' or '.join(_MEDIA)}")
        return await _refused(request, raw, principal, refusal)
    return principal, raw


async def _refused(request: Request, raw: bytes, principal: Principal, error: FhirError) -> Response:
    channel: FhirChannel = request.app.state.inbound.fhir
    answer = await in_thread(channel.refuse, raw, error, principal.id)
    return _answer(answer.status, answer.body)


def _reader(request: Request) -> Principal | Response:
    try:
        return authorise(request, "cases:read")
    except CareopsError as exc:
        return _error(exc.status, exc.detail)


@router.post(
    "",
    summary="A transaction or batch Bundle of referrals",
    openapi_extra=_scope("intake:write", "Bundle"),
    response_class=Response,
    responses={"200": _resource("The transaction-response or batch-response Bundle"), **_WRITE_ERRORS},
)
async def post_bundle(request: Request) -> Response:
    incoming = await _incoming(request)
    if isinstance(incoming, Response):
        return incoming
    principal, raw = incoming
    channel: FhirChannel = request.app.state.inbound.fhir
    answer = await in_thread(channel.bundle, raw, principal.id, principal.scope)
    return _answer(answer.status, answer.body, answer.location)


@router.post(
    "/ServiceRequest",
    summary="Create a referral (If-None-Exist honoured)",
    openapi_extra=_scope("intake:write", "ServiceRequest"),
    response_class=Response,
    responses=_CREATED,
)
async def post_service_request(request: Request) -> Response:
    incoming = await _incoming(request)
    if isinstance(incoming, Response):
        return incoming
    principal, raw = incoming
    channel: FhirChannel = request.app.state.inbound.fhir
    if_none_exist = request.headers.get("if-none-exist")
    answer = await in_thread(channel.create, raw, if_none_exist, principal.id, principal.scope)
    return _answer(answer.status, answer.body, answer.location)


@router.post(
    "/DiagnosticReport",
    summary="A result or report: kept on the case it names, else waiting for a person",
    openapi_extra=_scope("intake:write", "DiagnosticReport"),
    response_class=Response,
    responses=_CREATED,
)
async def post_diagnostic_report(request: Request) -> Response:
    incoming = await _incoming(request)
    if isinstance(incoming, Response):
        return incoming
    principal, raw = incoming
    channel: FhirChannel = request.app.state.inbound.fhir
    answer = await in_thread(channel.report, raw, principal.id, principal.scope)
    return _answer(answer.status, answer.body, answer.location)


@router.get(
    "/ServiceRequest/{service_request_id}",
    summary="Read a referral",
    openapi_extra=_scope("cases:read"),
    response_class=Response,
    responses={"200": _resource("The ServiceRequest as received, masked for the reader")},
)
async def read_service_request(request: Request, service_request_id: str) -> Response:
    principal = _reader(request)
    if isinstance(principal, Response):
        return principal
    channel: FhirChannel = request.app.state.inbound.fhir
    try:
        resource = await in_thread(channel.read, service_request_id, principal)
    except FhirError as error:
        return _answer(error.status, error.outcome())
    return _answer(200, resource)


@router.get(
    "/Task",
    summary="A referral's processing status (based-on=ServiceRequest/{id})",
    openapi_extra={
        **_scope("cases:read"),
        "parameters": [
            {
                "name": "based-on",
                "in": "query",
                "required": True,
                "schema": {"type": "string", "minLength": 1},
                "description": "ServiceRequest/{id}, or the id alone",
            }
        ],
    },
    response_class=Response,
    responses={
        "200": _resource("A searchset Bundle with the referral's Task"),
        **answers(400, media=FHIR_JSON),
    },
)
async def search_task(request: Request) -> Response:
    principal = _reader(request)
    if isinstance(principal, Response):
        return principal
    based_on = request.query_params.get("based-on")
    if not based_on:
        return _error(400, "search Task by based-on=ServiceRequest/{id}", "Task.basedOn")
    channel: FhirChannel = request.app.state.inbound.fhir
    return _answer(200, await in_thread(channel.task, based_on, principal.scope))


@router.get(
    "/metadata",
    summary="The CapabilityStatement",
    openapi_extra=_scope("(any valid token)"),
    response_class=Response,
    responses={"200": _resource("The CapabilityStatement")},
)
async def metadata(request: Request) -> Response:
    try:
        get_principal(request)
    except CareopsError as exc:
        return _error(exc.status, exc.detail)
    return _answer(200, capability_statement(__version__))


@router.post(
    "/{resource_type}",
    summary="Other resource types: validated, then refused",
    openapi_extra={
        **_scope("intake:write"),
        "requestBody": {
            "required": True,
            "content": {m: {"schema": {"type": "object", "required": ["resourceType"]}} for m in _MEDIA},
        },
    },
    response_class=Response,
    responses=answers(400, 404, 413, 415, 422, media=FHIR_JSON, s404="careops does not take this type"),
)
async def post_other(request: Request, resource_type: str) -> Response:
    """A resource careops does not take: 400 naming what is invalid in it, else 404 not-supported."""
    incoming = await _incoming(request)
    if isinstance(incoming, Response):
        return incoming
    principal, raw = incoming
    channel: FhirChannel = request.app.state.inbound.fhir
    answer = await in_thread(channel.other, raw, resource_type, principal.id)
    return _answer(answer.status, answer.body)
