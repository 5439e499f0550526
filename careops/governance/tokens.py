"""Bearer API tokens: shown once, stored as SHA-256, scoped, expiring and revocable."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import time
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from careops.db import Database
from careops.domain.events import Event, EventType, record_events
from careops.domain.models import ApiToken, Location, User, utcnow
from careops.errors import NotFound, Unauthorised, ValidationFailed
from careops.governance.permissions import PERMISSIONS, grants
from careops.governance.principal import Principal, token_masking
from careops.governance.roles import held_by
from careops.governance.scoping import EVERYWHERE, LocationScope

TOKEN_PREFIX = "cop_"  # noqa: S105 - a recognisable prefix, not a secret


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _token_event(event_type: EventType, record: ApiToken, actor: str, **extra: Any) -> Event:
    payload = {
        "name": record.name,
        "prefix": record.prefix,
        "scopes": list(record.scopes),
        "locations": record.locations,
        **extra,
    }
    return Event(event_type, subject_type="token", subject_id=record.id, actor=actor, payload=payload)


def create_token(
    db: Database,
    name: str,
    scopes: list[str],
    expires_in: dt.timedelta | None = None,
    *,
    actor: str,
    locations: list[str] | None = None,
    user: str | None = None,
) -> tuple[str, ApiToken]:
    """A new token (its secret, shown once, and its record); ``token.created`` is audited.

    ``locations``: slugs of the only locations the token sees; None for all of them. ``user``: a
    personal token acts as that user (approvals are decided by people); its scopes must be among
    the user's permissions, and it sees the user's locations unless ``locations`` narrows them.
    """
    unknown = sorted(set(scopes) - set(PERMISSIONS))
    if unknown:
        raise ValidationFailed(f"unknown scopes: {', '.join(unknown)}; known: {', '.join(PERMISSIONS)}")
    if not scopes:
        raise ValidationFailed("a token needs at least one scope")
    secret, record = _new_token(name, scopes, expires_in)
    with db.transaction() as session:
        if locations is not None:
            record.locations = location_ids(session, locations)
        if user is not None:
            _bind_to_user(session, record, user)
        session.add(record)
        session.flush()
        record_events(session, _token_event(EventType.TOKEN_CREATED, record, actor))
    return secret, record


def _new_token(name: str, scopes: list[str], expires_in: dt.timedelta | None) -> tuple[str, ApiToken]:
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    record = ApiToken(
        name=name,
        prefix=secret[:10],
        token_sha256=_digest(secret),
        scopes=sorted(set(scopes)),
        expires_at=utcnow() + expires_in if expires_in else None,
    )
    return secret, record


def _bind_to_user(session: Session, record: ApiToken, username: str) -> None:
    person = session.scalars(select(User).where(User.username == username)).first()
    if person is None or person.disabled_at is not None:
        raise ValidationFailed(f"no enabled user {username!r}")
    held = held_by(session, person.roles)
    beyond = sorted(s for s in record.scopes if not grants(held, s))
    if beyond:
        raise ValidationFailed(
            f"{username}'s roles do not grant {', '.join(beyond)}: a personal token cannot"
        )
    if person.locations is not None:
        record.locations = sorted(set(record.locations or person.locations) & set(person.locations))
    record.user_id = person.id


def rotate_token(db: Database, name_or_id: str, overlap: dt.timedelta, *, actor: str) -> tuple[str, ApiToken]:
    """A new secret for a token: same name, scopes, locations and lifetime; the old one stops
    working after ``overlap`` (time to roll the new one out). Audited as ``token.rotated``."""
    with db.transaction() as session:
        active = _active_tokens(session, name_or_id)
        if len(active) > 1:
            raise ValidationFailed(
                "several active tokens have this name: rotate one by its id (careops token list)"
            )
        old = active[0]
        lifetime = old.expires_at - old.created_at if old.expires_at else None
        secret, record = _new_token(old.name, list(old.scopes), lifetime)
        record.locations, record.user_id = old.locations, old.user_id
        ends = utcnow() + overlap
        old.expires_at = min(old.expires_at, ends) if old.expires_at else ends
        session.add(record)
        session.flush()
        rotated = _token_event(
            EventType.TOKEN_ROTATED, old, actor, replaced_by=record.id, expires_at=old.expires_at.isoformat()
        )
        record_events(session, rotated, _token_event(EventType.TOKEN_CREATED, record, actor))
    return secret, record


def location_ids(session: Session, slugs: list[str]) -> list[str]:
    wanted = {slug.strip().lower() for slug in slugs if slug.strip()}
    if not wanted:
        raise ValidationFailed("name at least one location, or leave --locations out for all of them")
    known = {slug: id_ for id_, slug in session.execute(select(Location.id, Location.slug))}
    unknown = sorted(wanted - set(known))
    if unknown:
        raise ValidationFailed(f"unknown locations: {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return sorted(known[slug] for slug in wanted)


def location_slugs(db: Database) -> dict[str, str]:
    """Location id → slug, to show a token's locations by name."""
    with db.sessions() as session:
        return {id_: slug for id_, slug in session.execute(select(Location.id, Location.slug))}


def _active_tokens(session: Session, name_or_id: str) -> list[ApiToken]:
    """The unrevoked tokens with this id or name; 404 when there is none."""
    rows = session.scalars(
        select(ApiToken).where(
            (ApiToken.id == name_or_id) | (ApiToken.name == name_or_id), ApiToken.revoked_at.is_(None)
        )
    ).all()
    if not rows:
        raise NotFound("no active token with this name or id")
    return list(rows)


def list_tokens(db: Database) -> list[ApiToken]:
    with db.sessions() as session:
        return list(session.scalars(select(ApiToken).order_by(ApiToken.created_at)))


def revoke_token(db: Database, name_or_id: str, *, actor: str) -> int:
    """Revoke every active token with this name or id; each ``token.revoked`` is audited."""
    with db.transaction() as session:
        rows = _active_tokens(session, name_or_id)
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
        locations = LocationScope(frozenset(record.locations)) if record.locations is not None else EVERYWHERE
        scopes = frozenset(record.scopes)
        principal = Principal(
            record.id, record.name, scopes, locations, token_masking(scopes), user_id=record.user_id
        )
        with self._db.writer() as connection:  # at most once per cache period per process
            connection.execute(update(ApiToken).where(ApiToken.id == record.id).values(last_used_at=utcnow()))
            record_events(connection, _token_event(EventType.TOKEN_USED, record, record.id))
        self._cache[digest] = (principal, now + self._cache_seconds)
        return principal
