"""Bearer API tokens: shown once, stored as SHA-256, scoped, expiring and revocable."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import select

from careops.db import Database
from careops.domain.events import Event, EventType, record_events
from careops.domain.models import ApiToken, utcnow
from careops.errors import NotFound, Unauthorised, ValidationFailed

TOKEN_PREFIX = "cop_"  # noqa: S105 - a recognisable prefix, not a secret
ADMIN = "admin"
SCOPES = {
    "intake:write": "submit referrals",
    "cases:read": "read cases and their timelines",
    "cases:transition": "move cases through their states and record triage",
    "exceptions:read": "read the exception queues",
    "exceptions:resolve": "resolve exception items",
    "quarantine:read": "read quarantined payloads",
    ADMIN: "everything",
}


@dataclass(frozen=True)
class Principal:
    """Who is calling: a token's id and name, and the scopes it carries."""

    id: str
    name: str
    scopes: frozenset[str]

    def can(self, scope: str) -> bool:
        return ADMIN in self.scopes or scope in self.scopes


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _token_event(event_type: EventType, record: ApiToken, actor: str) -> Event:
    payload = {"name": record.name, "prefix": record.prefix, "scopes": list(record.scopes)}
    return Event(event_type, subject_type="token", subject_id=record.id, actor=actor, payload=payload)


def create_token(
    db: Database, name: str, scopes: list[str], expires_in: dt.timedelta | None = None, *, actor: str
) -> tuple[str, ApiToken]:
    """A new token (its secret, shown once, and its record); ``token.created`` is audited."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise ValidationFailed(f"unknown scopes: {', '.join(unknown)}; known: {', '.join(SCOPES)}")
    if not scopes:
        raise ValidationFailed("a token needs at least one scope")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    record = ApiToken(
        name=name,
        prefix=secret[:10],
        token_sha256=_digest(secret),
        scopes=sorted(set(scopes)),
        expires_at=utcnow() + expires_in if expires_in else None,
    )
    with db.transaction() as session:
        session.add(record)
        session.flush()
        record_events(session, _token_event(EventType.TOKEN_CREATED, record, actor))
    return secret, record


def list_tokens(db: Database) -> list[ApiToken]:
    with db.sessions() as session:
        return list(session.scalars(select(ApiToken).order_by(ApiToken.created_at)))


def revoke_token(db: Database, name_or_id: str, *, actor: str) -> int:
    """Revoke every active token with this name or id; each ``token.revoked`` is audited."""
    with db.transaction() as session:
        rows = session.scalars(
            select(ApiToken).where(
                (ApiToken.id == name_or_id) | (ApiToken.name == name_or_id), ApiToken.revoked_at.is_(None)
            )
        ).all()
        if not rows:
            raise NotFound("no active token with this name or id")
        for row in rows:
            row.revoked_at = utcnow()
        record_events(session, *(_token_event(EventType.TOKEN_REVOKED, row, actor) for row in rows))
        return len(rows)


class TokenVerifier:
    """Checks bearer tokens; a verified token is trusted for ``cache_seconds`` without a query."""

    def __init__(self, db: Database, cache_seconds: float) -> None:
        self._db = db
        self._cache_seconds = cache_seconds
        self._cache: dict[str, tuple[Principal, float]] = {}

    def verify(self, token: str) -> Principal:
        if not token.startswith(TOKEN_PREFIX):
            raise Unauthorised("the bearer token is not a careops token")
        digest = _digest(token)
        cached = self._cache.get(digest)
        now = time.monotonic()
        if cached is not None and cached[1] > now:
            return cached[0]
        with self._db.sessions() as session:
            record = session.scalars(select(ApiToken).where(ApiToken.token_sha256 == digest)).first()
        if record is None or record.revoked_at is not None:
            raise Unauthorised("the bearer token is unknown or revoked")
        if record.expires_at is not None and record.expires_at <= utcnow():
            raise Unauthorised("the bearer token has expired")
        principal = Principal(record.id, record.name, frozenset(record.scopes))
        self._cache[digest] = (principal, now + self._cache_seconds)
        return principal
