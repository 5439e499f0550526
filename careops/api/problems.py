"""RFC 9457 problem details for every error the API returns."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Match, Route

from careops.errors import CareopsError, ValidationFailed
from careops.observability.logs import get_logger
from careops.observability.tracing import current_correlation_id

PROBLEM_TYPE_BASE = "https://careops.dev/problems/"
# Codes of answers the framework gives (no route, no such method), besides CareopsError's own.
FRAMEWORK_CODES = {404: "not_found", 405: "method_not_allowed"}
HTTP_ERROR = "http_error"  # any other HTTP error the framework raises
INTERNAL_ERROR = "internal_error"  # a bug: logged with its traceback, never shown
log = get_logger("careops.api")


def problem(
    status: int, code: str, title: str, detail: str, request: Request, extra: Mapping[str, Any] | None = None
) -> JSONResponse:
    """The problem answer; ``extra`` adds members (an error's ``allowed``, ``reason_codes``, …) but
    never replaces the standard ones."""
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        "correlation_id": current_correlation_id() or uuid.uuid4().hex,
    }
    body |= {key: value for key, value in (extra or {}).items() if key not in body}
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if "retry_after" in body:
        headers = {"Retry-After": str(body["retry_after"])}
    return JSONResponse(body, status_code=status, media_type="application/problem+json", headers=headers)


def allowed_methods(request: Request) -> list[str]:
    """Every method served at the request's path (a path that two routes share, one per method,
    answers a 405 listing both, where the router names only the first's)."""
    scope = {**request.scope, "method": ""}
    matching = [route for route in _routes(request.app.routes) if route.matches(scope)[0] is not Match.NONE]
    if not matching:
        return []
    # The routes of the path the router took (the first to match), not of a wider template
    # (``/fhir/r4/{type}``) that the same URL also fits.
    return sorted({m for route in matching if route.path == matching[0].path for m in route.methods or ()})


def _routes(routes: Iterable[BaseRoute]) -> Iterator[Route]:
    """The routes, those of included routers too (FastAPI includes a router as one route)."""
    for route in routes:
        if isinstance(route, Route):
            yield route
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from _routes(included.routes)


def install(app: FastAPI) -> None:
    @app.exception_handler(CareopsError)
    async def careops_error(request: Request, exc: CareopsError) -> JSONResponse:
        if exc.status >= 500:
            log.error("request.failed", code=exc.code)
        return problem(exc.status, exc.code, exc.title, exc.detail, request, exc.extra)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return await careops_error(request, ValidationFailed.from_errors(exc.errors()))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 400:  # FastAPI could not parse the body: as any invalid body, a 422
            unreadable = [{"loc": ["body"], "msg": f"unreadable ({exc.detail})"}]
            return await careops_error(request, ValidationFailed.from_errors(unreadable))
        code = FRAMEWORK_CODES.get(exc.status_code, HTTP_ERROR)
        answer = problem(exc.status_code, code, str(exc.detail), str(exc.detail), request)
        answer.headers.update(exc.headers or {})
        if exc.status_code == 405:
            answer.headers["Allow"] = ", ".join(allowed_methods(request))
        return answer

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("request.unexpected_error", path=request.url.path)
        return problem(500, INTERNAL_ERROR, "Internal error", "an unexpected error occurred", request)
