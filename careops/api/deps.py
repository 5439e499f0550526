"""Dependencies shared by routers: the database, settings, the caller and request bodies.

The dependencies are ``async`` although none of them awaits: FastAPI runs a plain ``def``
dependency in the thread pool, a hand-off per dependency per request (a sixth of the HL7 route's
CPU, bench/RESULTS.md). The caller's token is looked up in a cache; a miss reads one row.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Path, Request
from pydantic import Field

from careops.db import Database
from careops.domain.models import ID_PATTERN, PLAIN_TEXT
from careops.errors import Forbidden, PayloadTooLarge, TooManyRequests, Unauthorised, ValidationFailed
from careops.governance.abuse import RateLimiter
from careops.governance.principal import Principal
from careops.governance.tokens import TokenVerifier
from careops.settings import Settings


async def get_db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


class ApiLimits:
    """Requests per minute per client address (counted before the token is checked, so that
    guessing tokens is slow too) and per token; 0 switches a limit off. Per server process."""

    def __init__(self, per_address: int, per_token: int) -> None:
        self.addresses = RateLimiter(per_address) if per_address else None
        self.tokens = RateLimiter(per_token) if per_token else None

    def check(self, limiter: RateLimiter | None, key: str, what: str) -> None:
        if limiter is not None and not limiter.allow(key):
            wait = limiter.retry_after()
            raise TooManyRequests(f"too many requests from this {what}: wait {wait} s", retry_after=wait)


def check_address(request: Request) -> None:
    """429 when the client's address is over its limit (counted before any credential is checked)."""
    limits: ApiLimits = request.app.state.api_limits
    limits.check(limits.addresses, request.client.host if request.client else "unknown", "address")


def get_principal(request: Request) -> Principal:
    check_address(request)
    limits: ApiLimits = request.app.state.api_limits
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorised("send an API token as 'Authorization: Bearer cop_...'")
    verifier: TokenVerifier = request.app.state.tokens
    principal = verifier.verify(token.strip())
    limits.check(limits.tokens, principal.id, "token")
    return principal


def authorise(request: Request, scope: str) -> Principal:
    """The caller, if its token carries ``scope``; 401 without a valid token, 403 without the scope."""
    principal = get_principal(request)
    if not principal.can(scope):
        raise Forbidden(f"this token lacks the scope {scope!r}", required_scope=scope)
    return principal


def require(scope: str) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency that admits only callers whose token carries ``scope``."""

    async def check(request: Request) -> Principal:
        return authorise(request, scope)

    check.required_scope = scope  # type: ignore[attr-defined]
    return check


def optional_header(request: Request, name: str, max_length: int) -> str | None:
    """An optional header's value, or None when it is absent.

    A header that is sent must say something: empty or blank, longer than ``max_length`` or
    holding anything but printable ASCII is a 422 naming the header (its value is not repeated:
    it may be anything).
    """
    value = request.headers.get(name)
    if value is None:
        return None
    problem = header_problem(value, max_length)
    if problem is not None:
        raise ValidationFailed(
            f"header {name}: {problem}", errors=[{"field": f"header.{name}", "message": problem}]
        )
    return value


# A key or id sent in a header: printable ASCII, not blank (also what the OpenAPI document says).
HEADER_VALUE = "^[ -~]*[!-~][ -~]*$"
_HEADER_VALUE = re.compile(HEADER_VALUE)


def header_problem(value: str, max_length: int) -> str | None:
    """Why a header's value is no usable key or id, or None."""
    if not value.strip():
        return "must not be empty"
    if len(value) > max_length:
        return f"at most {max_length} characters"
    if not _HEADER_VALUE.match(value):
        return "printable ASCII characters only"
    return None


class OversizedBody(PayloadTooLarge):
    """A body over the limit; carries what was read so that it can be quarantined."""

    def __init__(self, detail: str, raw: bytes) -> None:
        super().__init__(detail)
        self.raw = raw


async def read_body(request: Request, settings: Settings) -> bytes:
    """The request body, refused with 413 above ``max_body_bytes`` (kept up to the quarantine cap)."""
    limit = settings.max_body_bytes
    declared = request.headers.get("content-length")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size <= settings.quarantine_max_bytes:
            chunks.append(chunk)
    raw = b"".join(chunks)
    if size > limit or (declared is not None and declared.isdigit() and int(declared) > limit):
        raise OversizedBody(f"the body is {size} bytes; the limit is {limit} bytes", raw)
    return raw


RecordId = Annotated[str, Path(pattern=ID_PATTERN, description="A record id (32 hex digits)")]
Zone = Annotated[str, Field(min_length=1, max_length=64, pattern=PLAIN_TEXT)]  # a home visit's address zone

DbDep = Annotated[Database, Depends(get_db)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
