"""What each outbound connector receives: the subscriptions file (``connectors_file`` in the
settings; YAML, errors with file, line and path).

```yaml
connectors:
  - name: billing            # an outbound connector (careops connector create): its URL and secrets
    kind: webhook            # webhook (signed JSON POST) | n8n (the same, to an n8n webhook trigger) | email
    events: [invoice.approved, replenishment.approved]
    fields: [invoice_id, total, status]   # the only payload fields it receives (data minimisation)
    retry: {attempts: 8, max_age: 1h, first: 2s, longest: 5m}
    breaker: {failures: 5, open_for: 30s}
    ordered: true            # a case's deliveries go in event order (one at a time per case)
  - name: ops-mail
    kind: email
    events: [approval.escalated]
    fields: [policy, step, action]
    email: {host: 127.0.0.1, port: 25, sender: careops@example.org, to: [ops@example.org]}
```
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from careops.domain.events import EventType
from careops.integrations.outbound.odoo import ACTIONS as ODOO_ACTIONS
from careops.yamldoc import Document, DocumentError, PathError, mapping, parse_duration

KINDS = ("webhook", "n8n", "email", "odoo")
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_EVENTS = {str(e) for e in EventType}

SubscriptionError = DocumentError


@dataclass(frozen=True)
class Retry:
    attempts: int = 8
    max_age_seconds: float = 3600.0
    first_seconds: float = 2.0
    longest_seconds: float = 300.0


@dataclass(frozen=True)
class Breaker:
    failures: int = 5
    open_seconds: float = 30.0


@dataclass(frozen=True)
class Email:
    host: str
    port: int
    sender: str
    to: tuple[str, ...]


@dataclass(frozen=True)
class OdooTarget:
    url: str
    protocol: str  # json2 (Odoo 19) or xmlrpc (Odoo 16 to 18)
    database: str | None
    login: str | None
    api_key_env: str  # the environment variable holding the API key


@dataclass(frozen=True)
class Subscription:
    name: str
    kind: str
    events: frozenset[str]
    fields: tuple[str, ...]
    retry: Retry = field(default_factory=Retry)
    breaker: Breaker = field(default_factory=Breaker)
    ordered: bool = False
    email: Email | None = None
    odoo: OdooTarget | None = None

    # What the delivery books read (orchestration.deliveries.Policy).
    @property
    def attempts(self) -> int:
        return self.retry.attempts

    @property
    def max_age_seconds(self) -> float:
        return self.retry.max_age_seconds

    @property
    def first_seconds(self) -> float:
        return self.retry.first_seconds

    @property
    def longest_seconds(self) -> float:
        return self.retry.longest_seconds

    @property
    def breaker_failures(self) -> int:
        return self.breaker.failures

    @property
    def breaker_open_seconds(self) -> float:
        return self.breaker.open_seconds


def _subscription(raw: Any, at: tuple[str | int, ...]) -> Subscription:
    known = ("name", "kind", "events", "fields", "retry", "breaker", "ordered", "email", "odoo")
    raw = mapping(raw, known, at, "a connector")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise PathError("a connector's name is 1 to 64 letters, digits, '-' or '_'", (*at, "name"))
    kind = raw.get("kind")
    if kind not in KINDS:
        raise PathError(f"kind is one of {', '.join(KINDS)}", (*at, "kind"))
    events = raw.get("events")
    if not isinstance(events, list) or not events:
        raise PathError("events lists the business events it receives", (*at, "events"))
    unknown = [e for e in events if e not in _EVENTS]
    if unknown:
        raise PathError(f"no event {unknown[0]!r} in the catalogue (docs/events.md)", (*at, "events"))
    if any(str(e).startswith("delivery.") for e in events):
        raise PathError(
            "delivery events are not delivered (a failing target would feed itself)", (*at, "events")
        )
    fields = raw.get("fields") or []
    if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
        raise PathError("fields is a list of payload field names", (*at, "fields"))
    retry_raw = mapping(
        raw.get("retry") or {}, ("attempts", "max_age", "first", "longest"), (*at, "retry"), "retry"
    )
    attempts = retry_raw.get("attempts", 8)
    if not isinstance(attempts, int) or isinstance(attempts, bool) or not 1 <= attempts <= 100:
        raise PathError("attempts is a number from 1 to 100", (*at, "retry", "attempts"))
    retry = Retry(
        attempts,
        parse_duration(retry_raw.get("max_age", "1h"), (*at, "retry", "max_age")).total_seconds(),
        parse_duration(retry_raw.get("first", "2s"), (*at, "retry", "first")).total_seconds(),
        parse_duration(retry_raw.get("longest", "5m"), (*at, "retry", "longest")).total_seconds(),
    )
    breaker_raw = mapping(raw.get("breaker") or {}, ("failures", "open_for"), (*at, "breaker"), "breaker")
    failures = breaker_raw.get("failures", 5)
    if not isinstance(failures, int) or isinstance(failures, bool) or failures < 1:
        raise PathError("failures is a number, 1 or more", (*at, "breaker", "failures"))
    breaker = Breaker(
        failures,
        parse_duration(breaker_raw.get("open_for", "30s"), (*at, "breaker", "open_for")).total_seconds(),
    )
    email = None
    if kind == "email":
        spec = mapping(raw.get("email"), ("host", "port", "sender", "to"), (*at, "email"), "email")
        to = spec.get("to")
        if not isinstance(to, list) or not to:
            raise PathError("to lists the addresses it sends to", (*at, "email", "to"))
        email = Email(
            str(spec.get("host", "127.0.0.1")),
            int(spec.get("port", 25)),
            str(spec.get("sender", "careops@localhost")),
            tuple(str(t) for t in to),
        )
    odoo = _odoo(raw, at, events) if kind == "odoo" else None
    return Subscription(
        name,
        kind,
        frozenset(events),
        tuple(fields),
        retry,
        breaker,
        bool(raw.get("ordered", False)),
        email,
        odoo,
    )


def _odoo(raw: dict[str, Any], at: tuple[str | int, ...], events: list[str]) -> OdooTarget:
    spec = mapping(
        raw.get("odoo"), ("url", "protocol", "database", "login", "api_key_env"), (*at, "odoo"), "odoo"
    )
    if not str(spec.get("url", "")).startswith(("http://", "https://")):
        raise PathError("url is Odoo's address (http or https)", (*at, "odoo", "url"))
    protocol = spec.get("protocol", "json2")
    if protocol not in ("json2", "xmlrpc"):
        raise PathError("protocol is json2 (Odoo 19) or xmlrpc (Odoo 16 to 18)", (*at, "odoo", "protocol"))
    if protocol == "xmlrpc" and not (spec.get("database") and spec.get("login")):
        raise PathError("XML-RPC needs the database and the login", (*at, "odoo"))
    if not spec.get("api_key_env"):
        raise PathError("api_key_env names the environment variable that holds the API key", (*at, "odoo"))
    unknown = sorted(set(events) - set(ODOO_ACTIONS))
    if unknown:
        raise PathError(
            f"an odoo connector acts on {', '.join(ODOO_ACTIONS)}, not {unknown[0]}", (*at, "events")
        )
    return OdooTarget(
        str(spec["url"]), protocol, spec.get("database"), spec.get("login"), str(spec["api_key_env"])
    )


def _subscriptions(data: Any, source: str) -> list[Subscription]:
    raw = mapping(data or {}, ("connectors",), (), "the connectors file")
    items = raw.get("connectors") or []
    if not isinstance(items, list):
        raise PathError("connectors is a list", ("connectors",))
    found = [_subscription(item, ("connectors", i)) for i, item in enumerate(items)]
    if len({s.name for s in found}) != len(found):
        raise PathError("two connectors have the same name", ("connectors",))
    return found


def load_text(text: str, source: str = "<connectors>") -> list[Subscription]:
    return Document(text, source).parse(_subscriptions)


def load_file(path: Path | None) -> list[Subscription]:
    """The subscriptions of ``path`` (none without a file)."""
    return load_text(path.read_text(encoding="utf-8"), str(path)) if path is not None else []
