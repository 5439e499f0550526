"""Signed webhooks: HMAC-SHA256 over ``<timestamp>.<body>``, a replay window, secrets per connector.

Headers, inbound and outbound alike:

- ``X-Careops-Timestamp``: Unix seconds when the body was signed;
- ``X-Careops-Signature``: ``v1=<hex>``, one per live secret, comma-separated (while a secret is
  rotated, both the old and the new one sign, so that the other side can roll over at its pace).

A receiver recomputes ``HMAC-SHA256(secret, timestamp + "." + body)`` for each secret it holds
and accepts if any matches, if the timestamp is within the tolerance, and if that signature was
not seen before (a replayed request is refused even inside the window).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from careops.db import Database
from careops.domain.events import Event, EventType, record_events
from careops.domain.models import Base, Connector, ConnectorSecret, WebhookReceipt, utcnow
from careops.errors import Conflict, NotFound, Unauthorised, ValidationFailed
from careops.governance.masking import MaskingPolicy
from careops.governance.permissions import DEFAULT_MASKING
from careops.governance.principal import Principal
from careops.governance.roles import check_roles, effective_roles

TIMESTAMP_HEADER = "x-careops-timestamp"
SIGNATURE_HEADER = "x-careops-signature"
SIGNED = "(signed webhook)"  # what a signed route declares instead of a permission
SECRET_PREFIX = "whsec_"  # noqa: S105 - a recognisable prefix, not a secret
CONNECTOR_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # it is part of the inbound webhook's URL
_receipts = Base.metadata.tables[WebhookReceipt.__tablename__]


def signature(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"v1={digest}"


def signed_headers(live_secrets: list[str], body: bytes, now: float | None = None) -> dict[str, str]:
    """The headers of an outbound body: one signature per live secret."""
    timestamp = int(now if now is not None else time.time())
    return {
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: ", ".join(signature(s, timestamp, body) for s in live_secrets),
    }


def check_signature(
    live_secrets: list[str], timestamp: str | None, signatures: str | None, body: bytes, tolerance: float
) -> str:
    """The matching signature, or Unauthorised saying what is wrong (never which secret)."""
    if not timestamp or not signatures:
        raise Unauthorised(
            f"sign the request: headers {TIMESTAMP_HEADER} and {SIGNATURE_HEADER} are required"
        )
    if not timestamp.isdigit():
        raise Unauthorised(f"{TIMESTAMP_HEADER} must be Unix seconds")
    if abs(time.time() - int(timestamp)) > tolerance:
        raise Unauthorised(
            f"the signature is older than {tolerance:.0f} s (or from the future): sign it again"
        )
    offered = {part.strip() for part in signatures.split(",") if part.strip()}
    for secret in live_secrets:
        expected = signature(secret, int(timestamp), body)
        if any(hmac.compare_digest(expected, candidate) for candidate in offered):
            return expected
    raise Unauthorised("the signature does not match the body")


def _live(connector: Connector, now: dt.datetime) -> list[str]:
    return [s.secret for s in connector.secrets if s.expires_at is None or s.expires_at > now]


def _connector(session: Session, name: str) -> Connector:
    connector = session.get(Connector, name)
    if connector is None:
        raise NotFound("no connector with this name")
    return connector


def _secret_event(event_type: EventType, connector: Connector, actor: str, **payload: Any) -> Event:
    return Event(
        event_type,
        "connector",
        connector.name[:32],
        actor=actor,
        payload={"connector": connector.name, **payload},
    )


def create_connector(
    db: Database, name: str, direction: str, url: str | None, *, actor: str, sees_as: str | None = None
) -> str:
    """A connector and its first secret (returned once; stored encrypted). An outbound connector
    ``sees_as`` a role: what it is sent is masked as for that role (default: the partial policy)."""
    if not CONNECTOR_NAME.fullmatch(name):
        raise ValidationFailed(
            "a connector's name is 1 to 64 letters, digits, '-' or '_' (it is part of its URL)"
        )
    if direction not in ("inbound", "outbound"):
        raise ValidationFailed("direction is inbound or outbound")
    if direction == "outbound" and not (url or "").startswith(("https://", "http://")):
        raise ValidationFailed("an outbound connector needs the http(s) URL it delivers to")
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    with db.transaction() as session:
        if session.get(Connector, name) is not None:
            raise Conflict(f"the connector {name!r} exists")
        if sees_as is not None:
            check_roles(session, [sees_as])
        connector = Connector(name=name, direction=direction, url=url, sees_as=sees_as)
        connector.secrets.append(ConnectorSecret(secret=secret))
        session.add(connector)
        session.flush()
        record_events(
            session, _secret_event(EventType.CONNECTOR_CREATED, connector, actor, direction=direction)
        )
    return secret


def rotate_secret(db: Database, name: str, overlap: dt.timedelta, *, actor: str) -> str:
    """A new secret; the old ones keep working for ``overlap`` (both sign outbound bodies meanwhile)."""
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    now = utcnow()
    with db.transaction() as session:
        connector = _connector(session, name)
        for old in connector.secrets:
            if old.expires_at is None or old.expires_at > now + overlap:
                old.expires_at = now + overlap
        connector.secrets.append(ConnectorSecret(secret=secret))
        record_events(
            session,
            _secret_event(
                EventType.CONNECTOR_SECRET_ROTATED, connector, actor, overlap_seconds=overlap.total_seconds()
            ),
        )
    return secret


def list_connectors(db: Database) -> list[tuple[Connector, int]]:
    """Each connector with how many of its secrets are live."""
    now = utcnow()
    with db.sessions() as session:
        rows = session.scalars(select(Connector).order_by(Connector.name)).unique().all()
        return [(c, len(_live(c, now))) for c in rows]


@dataclass(frozen=True)
class Outbound:
    """Where an outbound connector delivers, its live secrets, and who it reads as."""

    url: str
    live_secrets: list[str]
    reader: Principal

    def headers(self, body: bytes) -> dict[str, str]:
        return signed_headers(self.live_secrets, body)


def outbound(db: Database, name: str) -> Outbound:
    """An outbound connector, with the masking of the role it ``sees_as`` (data minimisation)."""
    with db.sessions() as session:
        connector = _connector(session, name)
        if connector.direction != "outbound" or not connector.url:
            raise ValidationFailed(f"{name!r} is not an outbound connector")
        roles = effective_roles(session)
        spec = roles.get(connector.sees_as or "")
        masking = MaskingPolicy(dict(spec.masking if spec else DEFAULT_MASKING))
        reader = Principal(f"connector:{name}"[:100], name, frozenset({"cases:read"}), masking=masking)
        return Outbound(connector.url, _live(connector, utcnow()), reader)


def verify_inbound(
    db: Database, name: str, timestamp: str | None, signatures: str | None, body: bytes, tolerance: float
) -> None:
    """Accept a signed inbound request once: a bad, stale or replayed signature is Unauthorised."""
    with db.sessions() as session:
        connector = session.get(Connector, name)
        live = (
            _live(connector, utcnow()) if connector is not None and connector.direction == "inbound" else []
        )
    if not live:
        raise Unauthorised("no inbound connector with this name takes signed requests")
    matched = check_signature(live, timestamp, signatures, body, tolerance)
    digest = hashlib.sha256(f"{name}:{matched}".encode()).hexdigest()
    now = utcnow()
    try:
        with db.writer() as connection:
            connection.execute(
                delete(_receipts).where(_receipts.c.received_at < now - dt.timedelta(seconds=2 * tolerance))
            )
            connection.execute(
                insert(_receipts), {"signature_sha256": digest, "connector": name, "received_at": now}
            )
    except IntegrityError:
        raise Unauthorised("this signed request was received already (replay refused)") from None
