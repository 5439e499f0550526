"""The one exception tree of careops.

    CareopsError                 code="error"
    ├── ValidationFailed         code="validation_failed"   (bad input a human must fix)
    ├── NotFound                 code="not_found"
    ├── Unauthorised             code="unauthorised"        (no or unknown credentials)
    ├── Forbidden                code="forbidden"           (known caller, missing scope)
    ├── Conflict                 code="conflict"
    │   ├── InvalidTransition    code="invalid_transition"
    │   ├── DuplicateRequest     code="duplicate_request"   (Idempotency-Key reused with another body)
    │   └── WriteConflict        code="write_conflict"      (concurrent writes clashed; send it again)
    ├── PayloadTooLarge          code="payload_too_large"
    ├── TooManyRequests          code="too_many_requests"
    └── ConfigurationError       code="configuration_error" (unsafe or impossible settings)

Every error carries a stable ``code`` and an HTTP ``status``; the API turns it into RFC 9457
problem details and the CLI into one red line. Messages never contain PHI.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar


class CareopsError(Exception):
    code: ClassVar[str] = "error"
    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal error"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class ValidationFailed(CareopsError):
    code = "validation_failed"
    status = 422
    title = "The request is not valid"

    @classmethod
    def from_errors(cls, errors: Iterable[Mapping[str, Any]]) -> ValidationFailed:
        """From pydantic errors: ``errors`` lists each field, ``detail`` says them in one line."""
        named = field_errors(errors)
        return cls("; ".join(f"{e['field']}: {e['message']}" for e in named), errors=named)


def field_errors(errors: Iterable[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Pydantic errors as ``{field, message}`` with dotted paths a human can read (never the input)."""
    named = []
    for error in errors:
        location = [str(part) for part in error.get("loc", ()) if part != "body"]
        named.append({"field": ".".join(location) or "(body)", "message": str(error.get("msg", "invalid"))})
    return named


class NotFound(CareopsError):
    code = "not_found"
    status = 404
    title = "Not found"


class Unauthorised(CareopsError):
    code = "unauthorised"
    status = 401
    title = "Authentication required"


class Forbidden(CareopsError):
    code = "forbidden"
    status = 403
    title = "Not allowed"


class Conflict(CareopsError):
    code = "conflict"
    status = 409
    title = "Conflict"


class InvalidTransition(Conflict):
    code = "invalid_transition"
    title = "Transition not allowed"


class DuplicateRequest(Conflict):
    code = "duplicate_request"
    title = "Idempotency-Key already used with a different request"


class WriteConflict(Conflict):
    code = "write_conflict"
    title = "The write clashed with concurrent writes; send it again"


class PayloadTooLarge(CareopsError):
    code = "payload_too_large"
    status = 413
    title = "Payload too large"


class TooManyRequests(CareopsError):
    code = "too_many_requests"
    status = 429
    title = "Too many requests"


class ConfigurationError(CareopsError):
    code = "configuration_error"
    title = "Unsafe or impossible configuration"
