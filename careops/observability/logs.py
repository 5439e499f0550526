"""Structured logs (structlog, one JSON object per line) that never carry PHI.

Every line, ours and the libraries' (uvicorn, SQLAlchemy, DBOS, through the standard logging
module), passes ``redact``:

- values under keys that name PHI or secrets (``given_name``, ``mrn``, ``body``, ``password``, …)
  are replaced by ``[redacted]``;
- in every other text, e-mail addresses, dates, and digit runs that look like phone numbers or
  identifiers are replaced;
- an exception is logged as its type and the code locations it passed through, never its message
  (driver errors quote the statement's parameters, validation errors quote the input).

Request bodies are never logged (the API logs none), and metrics labels are channel names only.
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import structlog
from structlog.typing import EventDict, Processor

from careops.domain.models import Base
from careops.domain.phi import phi_fields

REDACTED = "[redacted]"
SECRET_KEYS = frozenset(
    [
        "body",
        "payload",
        "raw",
        "raw_payload",
        "password",
        "token",
        "secret",
        "authorization",
        "cookie",
        "notes",
        "clinical_notes",
        "reason",
        "name",
        "patient",
        "text",
        "content",
        "params",
        "parameters",
    ]
)
PHI_KEYS = frozenset(key for mapper in Base.registry.mappers for key in phi_fields(mapper.class_))
SENSITIVE_KEYS = SECRET_KEYS | PHI_KEYS
QUIET_LIBRARIES = ("mail.log", "httpx", "httpcore")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
_DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b|\b\d{1,2}[/.]\d{1,2}[/.]\d{2,4}\b")
_NUMBERISH = re.compile(r"\+?\d[\d\s().-]{5,}\d")
_IP_OR_VERSION = re.compile(r"^\d{1,3}(\.\d{1,3}){1,3}$")


def _numbers(match: re.Match[str]) -> str:
    text = match.group(0)
    digits = sum(ch.isdigit() for ch in text)
    return REDACTED if digits >= 7 and not _IP_OR_VERSION.match(text.strip()) else text


def scrub(text: str) -> str:
    """``text`` without e-mail addresses, dates, and phone- or identifier-like digit runs."""
    text = _EMAIL.sub(REDACTED, text)
    text = _DATE.sub(REDACTED, text)
    return _NUMBERISH.sub(_numbers, text)


def safe_exception(exc_info: tuple[type[BaseException], BaseException, TracebackType | None]) -> str:
    """``ValueError at careops/x.py:12 in f <- ...``: the type and where, never the message."""
    kind, _, trace = exc_info
    frames = [
        f"{frame.filename.rsplit('/careops/', 1)[-1]}:{frame.lineno} in {frame.name}"
        for frame in traceback.extract_tb(trace)
    ][-8:]
    return f"{kind.__module__}.{kind.__qualname__} at " + " <- ".join(reversed(frames))


def redact(_: Any, __: str, event: EventDict) -> EventDict:
    """The structlog processor: see the module's docstring."""
    exc_info = event.pop("exc_info", None)
    if exc_info:
        if exc_info is True:
            exc_info = sys.exc_info()
        if isinstance(exc_info, BaseException):
            exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
        if exc_info[0] is not None:
            event["exception"] = safe_exception(exc_info)
    for key, value in list(event.items()):
        if key.lower() in SENSITIVE_KEYS:
            event[key] = REDACTED
        elif key == "correlation_id" and isinstance(value, str) and _SAFE_ARGUMENT.match(value):
            continue  # careops's own (hex) ids stay whole; a caller's other text is scrubbed
        elif isinstance(value, str) and key != "exception":
            event[key] = scrub(value)
    return event


_SAFE_ARGUMENT = re.compile(r"^[0-9a-f]{8,64}$|^[\d.:]*$")


def _safe_argument(value: Any) -> Any:
    """Numbers, and texts of only digits, dots, colons or hex (ids, addresses) stay; all else goes."""
    if isinstance(value, int | float) or (isinstance(value, str) and _SAFE_ARGUMENT.match(value)):
        return value
    return REDACTED


class _RedactArguments(logging.Filter):
    """A library's record keeps only numbers and hex ids among its arguments: a library may
    format anything into its message."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, Mapping):
            record.args = {key: _safe_argument(value) for key, value in record.args.items()}
        elif record.args:
            record.args = tuple(_safe_argument(a) for a in record.args)
        return True


def _from_stdlib(_: Any, __: str, event: EventDict) -> EventDict:
    record: logging.LogRecord | None = event.get("_record")
    if record is not None:
        event["logger"] = record.name
        if record.exc_info:
            event["exc_info"] = record.exc_info
    return event


STAMP: list[Processor] = [
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def _configure_structlog(level: str) -> None:
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            redact,
            *STAMP,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )


def configure_logging(level: str = "INFO") -> None:
    """JSON lines on stderr for structlog and for every standard-library logger, all redacted."""
    _configure_structlog(level)
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[_from_stdlib, redact, *STAMP],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.JSONRenderer(),
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    handler.addFilter(_RedactArguments())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for chatty in QUIET_LIBRARIES:  # a line per SMTP command or HTTP call says nothing useful
        logging.getLogger(chatty).setLevel(max(logging.WARNING, root.level))


def get_logger(name: str) -> Any:
    """A structlog logger: ``log.info("event.name", key=value)``; always redacted."""
    return structlog.get_logger(name)


# Whatever the process configures later, careops's own log lines are redacted from the start.
_configure_structlog("INFO")
