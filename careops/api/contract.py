"""The OpenAPI document as the contract: each operation's security, every answer it can give (with
its media type and schema) and the links between list, item and action operations.

Routers declare what is particular to them (a 409, a FHIR or HL7 answer) with ``answers``; what
follows from a route's shape is added here, once for all of them:

- its security: open (``security: []``), a bearer token with the route's scope, or the HMAC
  signature of an inbound connector;
- 401, 403 and 429 for a route behind a token (401 and 429 behind a signature), 404 for a route
  with path parameters, 422 for one with parameters or a body;
- errors as ``application/problem+json`` with the ``Problem`` schema, except under ``/fhir/r4``,
  where every error is an ``OperationOutcome`` in ``application/fhir+json``.

``tests/api/test_contract.py`` runs schemathesis against a served process: an answer the document
does not declare fails the suite.
"""

from __future__ import annotations

from typing import Any

from fastapi.routing import APIRoute

from careops.governance.signing import SIGNATURE_HEADER, SIGNED, TIMESTAMP_HEADER

PROBLEM_JSON = "application/problem+json"
FHIR_JSON = "application/fhir+json"
FHIR_PREFIX = "/fhir/r4"
_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_OUTCOME_REF = {"$ref": "#/components/schemas/OperationOutcome"}

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details, with careops's stable `code` (docs/api.md lists them).",
    "type": "object",
    "required": ["type", "title", "status", "detail", "code", "correlation_id"],
    "properties": {
        "type": {"type": "string", "description": "https://careops.dev/problems/{code}"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string", "description": "What is wrong, for a human; never PHI."},
        "code": {"type": "string", "description": "Stable machine-readable code."},
        "correlation_id": {"type": "string", "description": "Your X-Correlation-Id, or one made up."},
        "quarantine_id": {"type": "string", "description": "Where the refused payload is kept."},
        "errors": {
            "type": "array",
            "description": "Each invalid field or header.",
            "items": {
                "type": "object",
                "required": ["field", "message"],
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
        "reason_codes": {"type": "array", "items": {"type": "string"}},
        "allowed": {"type": "array", "items": {"type": "string"}, "description": "Actions allowed now."},
        "required_scope": {"type": "string"},
        "retry_after": {"type": "integer", "description": "Seconds to wait (also in Retry-After)."},
    },
}
OPERATION_OUTCOME_SCHEMA: dict[str, Any] = {
    "title": "OperationOutcome",
    "description": "A FHIR R4 OperationOutcome: why the request was refused, and where.",
    "type": "object",
    "required": ["resourceType", "issue"],
    "properties": {
        "resourceType": {"const": "OperationOutcome"},
        "issue": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["severity", "code"],
                "properties": {
                    "severity": {"enum": ["fatal", "error", "warning", "information"]},
                    "code": {"type": "string"},
                    "diagnostics": {"type": "string"},
                    "expression": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}
SECURITY_SCHEMES: dict[str, Any] = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "An API token (`careops token create`); each operation names its scope.",
    },
    "signature": {
        "type": "apiKey",
        "in": "header",
        "name": SIGNATURE_HEADER,
        "description": "`v1=` HMAC-SHA256 of `{timestamp}.{body}` with the connector's secret "
        "(docs/security.md#signed-webhooks).",
    },
    "signature_timestamp": {
        "type": "apiKey",
        "in": "header",
        "name": TIMESTAMP_HEADER,
        "description": "Unix seconds of the signature; stale ones are refused.",
    },
}

MEANING = {
    400: "The request cannot be read (FHIR: an OperationOutcome naming the element).",
    401: "No valid credentials (a missing, unknown, expired or revoked token; a bad signature).",
    403: "The credentials lack the scope, or the location is not the caller's.",
    404: "No such record, or not one the caller's locations see.",
    409: "The record's state does not allow this now.",
    413: "The body is over the limit; it is kept in quarantine.",
    415: "The body's media type is not taken here; it is kept in quarantine.",
    422: "The request is not valid: each field or header is named.",
    429: "Too many requests from this address or token; Retry-After says how long to wait.",
}


def answers(*statuses: int, media: str = PROBLEM_JSON, **described: str) -> dict[int | str, dict[str, Any]]:
    """Error answers for a route's ``responses=``: each status with its meaning (or ``described``,
    keyed ``s409``), in ``media`` with the schema that media type carries."""
    return {str(status): _error(status, media, described.get(f"s{status}")) for status in statuses}


def _error(status: int, media: str, description: str | None = None) -> dict[str, Any]:
    schema = {PROBLEM_JSON: _PROBLEM_REF, FHIR_JSON: _OUTCOME_REF}.get(media, {"type": "string"})
    return {"description": description or MEANING[status], "content": {media: {"schema": schema}}}


def document(schema: dict[str, Any], routes: list[APIRoute], open_paths: frozenset[str]) -> None:
    """Complete ``schema`` (FastAPI's document of ``routes``) as the contract described above."""
    components = schema.setdefault("components", {})
    components.setdefault("schemas", {}).update(
        Problem=PROBLEM_SCHEMA, OperationOutcome=OPERATION_OUTCOME_SCHEMA
    )
    components["schemas"].pop("HTTPValidationError", None)
    components["schemas"].pop("ValidationError", None)
    components["securitySchemes"] = SECURITY_SCHEMES
    for route in routes:
        for method in route.methods or ():
            operation = schema["paths"].get(route.path_format, {}).get(method.lower())
            if operation is not None:
                _complete(operation, route, route.path_format in open_paths)
    for source, status, target, parameters in LINKS:
        _link(schema, source, status, target, parameters)


def _complete(operation: dict[str, Any], route: APIRoute, is_open: bool) -> None:
    scope = operation.get("x-required-scope") or _scope(route)
    media = FHIR_JSON if route.path_format.startswith(FHIR_PREFIX) else PROBLEM_JSON
    statuses: list[int] = []
    if is_open or scope is None:
        operation["security"] = []
    elif scope == SIGNED:
        operation["security"] = [{"signature": [], "signature_timestamp": []}]
        statuses += [401, 429]
    else:
        operation["x-required-scope"] = scope
        operation["security"] = [{"bearer": []}]
        statuses += [401, 403, 429]
    if route.param_convertors:
        statuses.append(404)
    if operation.get("parameters") or operation.get("requestBody"):
        statuses.append(422)
    responses = operation.setdefault("responses", {})
    if "HTTPValidationError" in str(responses.get("422")):  # FastAPI's own: careops answers a Problem
        del responses["422"]
    for status in statuses:
        responses.setdefault(str(status), _error(status, media))


def _scope(route: APIRoute) -> str | None:
    """The scope a route's ``require`` dependency asks for, if any."""
    scopes = (getattr(d.call, "required_scope", None) for d in route.dependant.dependencies)
    return next((s for s in scopes if s), None)


# (operation, status, linked operation, its parameters as runtime expressions): how a client (or
# a stateful test) walks from what it created or listed to the record and its actions.
_CASE = {"case_id": "$response.body#/items/0/id"}
_CREATED_CASE = {"case_id": "$response.body#/case_id"}
_EXCEPTION = {"exception_id": "$response.body#/items/0/id"}
_QUARANTINED = {"item_id": "$response.body#/items/0/id"}
_REFUSED = {"item_id": "$response.body#/quarantine_id"}
LINKS: list[tuple[str, str, str, dict[str, str]]] = [
    *[
        ("GET /api/v1/cases", "200", f"{verb} /api/v1/cases/{{case_id}}{action}", _CASE)
        for verb, action in [("GET", ""), ("POST", "/transitions"), ("POST", "/triage"), ("POST", "/reveal")]
    ],
    *[
        ("POST /api/v1/referrals", status, "GET /api/v1/cases/{case_id}", _CREATED_CASE)
        for status in ("200", "201")
    ],
    (
        "POST /api/v1/referrals",
        "202",
        "GET /api/v1/exceptions/{exception_id}",
        {"exception_id": "$response.body#/exception_id"},
    ),
    *[
        ("POST /api/v1/referrals", status, "GET /api/v1/quarantine/{item_id}", _REFUSED)
        for status in ("409", "413", "422")
    ],
    (
        "POST /api/v1/referrals",
        "201",
        "GET /api/v1/intake/{item_id}/documents",
        {"item_id": "$response.body#/intake_item_id"},
    ),
    ("GET /api/v1/exceptions", "200", "GET /api/v1/exceptions/{exception_id}", _EXCEPTION),
    ("GET /api/v1/exceptions", "200", "POST /api/v1/exceptions/{exception_id}/resolve", _EXCEPTION),
    *[
        ("GET /api/v1/quarantine", "200", f"{verb} /api/v1/quarantine/{{item_id}}{action}", _QUARANTINED)
        for verb, action in [("GET", ""), ("POST", "/replay"), ("POST", "/discard")]
    ],
    *[
        (
            "GET /api/v1/intake/{item_id}/documents",
            "200",
            f"GET /api/v1/documents/{{document_id}}/{part}",
            {"document_id": "$response.body#/items/0/id"},
        )
        for part in ("content", "text")
    ],
    (
        "POST /fhir/r4/ServiceRequest",
        "201",
        "GET /fhir/r4/ServiceRequest/{service_request_id}",
        {"service_request_id": "$response.body#/id"},
    ),
    ("POST /fhir/r4/ServiceRequest", "201", "GET /fhir/r4/Task", {"based-on": "$response.body#/id"}),
]


def _link(schema: dict[str, Any], source: str, status: str, target: str, parameters: dict[str, str]) -> None:
    source_method, source_path = source.split(" ", 1)
    target_method, target_path = target.split(" ", 1)
    operation = schema["paths"][source_path][source_method.lower()]
    target_id = schema["paths"][target_path][target_method.lower()]["operationId"]
    response = operation["responses"].setdefault(status, {"description": MEANING.get(int(status), "")})
    name = target_id.split("_api_")[0].split("_fhir_")[0]
    response.setdefault("links", {})[name] = {"operationId": target_id, "parameters": parameters}
