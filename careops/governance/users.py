"""Console users: argon2id passwords, password rules, lockout after failed logins, roles, sessions.

A session is a random secret in an HttpOnly cookie, kept in the database only as its SHA-256,
with its own CSRF token, a fixed expiry and a revoke (logout, or disabling the user, or changing
the user's password or roles ends every session of that user).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from careops.db import Database
from careops.domain.events import Event, EventType, record_events
from careops.domain.models import User, UserSession, utcnow
from careops.errors import Conflict, NotFound, Unauthorised, ValidationFailed
from careops.governance.duties import check_duties
from careops.governance.masking import CLEAR, MaskingPolicy
from careops.governance.permissions import PHI_READ, grants, most_open
from careops.governance.principal import Principal
from careops.governance.roles import check_roles, effective_roles
from careops.governance.scoping import EVERYWHERE, LocationScope
from careops.governance.tokens import location_ids
from careops.settings import Settings

SSO_ONLY = "!sso"  # not a hash: no password can match it
_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
# Checked against so that an unknown user costs as much time as a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))
COMMON_PASSWORDS = frozenset(
    {
        "password",
        "password123",
        "123456789012",
        "qwertyuiopas",
        "letmein12345",
        "welcome12345",
        "careops12345",
    }
)


def check_password_rules(password: str, username: str, settings: Settings) -> None:
    problems = []
    if len(password) < settings.password_min_length:
        problems.append(f"at least {settings.password_min_length} characters")
    if username and username.lower() in password.lower():
        problems.append("must not contain the username")
    if password.lower() in COMMON_PASSWORDS or len(set(password)) < 5:
        problems.append("too easy to guess")
    if problems:
        raise ValidationFailed("the password does not meet the rules: " + "; ".join(problems))


def _user_event(event_type: EventType, user: User, actor: str, **payload: Any) -> Event:
    return Event(event_type, "user", user.id, actor=actor, payload={"username": user.username, **payload})


def create_user(
    db: Database,
    settings: Settings,
    username: str,
    password: str | None,
    roles: list[str],
    *,
    actor: str,
    display_name: str | None = None,
    locations: list[str] | None = None,
) -> User:
    """A user; with ``password`` None, one who logs in only through OpenID Connect."""
    username = username.strip().lower()
    if not username:
        raise ValidationFailed("a user needs a username")
    if password is not None:
        check_password_rules(password, username, settings)
    with db.transaction() as session:
        if session.scalars(select(User).where(User.username == username)).first():
            raise Conflict(f"the username {username!r} is taken")
        user = User(
            username=username,
            display_name=display_name or username,
            password_hash=_hasher.hash(password) if password is not None else SSO_ONLY,
            roles=check_roles(session, roles),
            locations=location_ids(session, locations) if locations is not None else None,
        )
        session.add(user)
        session.flush()
        record_events(
            session,
            _user_event(EventType.USER_CREATED, user, actor, roles=user.roles, locations=user.locations),
        )
    return user


def find_user(session: Session, username: str) -> User:
    user = session.scalars(select(User).where(User.username == username.strip().lower())).first()
    if user is None:
        raise NotFound("no user with this username")
    return user


def list_users(db: Database) -> list[User]:
    with db.sessions() as session:
        return list(session.scalars(select(User).order_by(User.username)))


def _end_sessions(session: Session, user_id: str) -> None:
    session.execute(
        update(UserSession)
        .where(UserSession.user_id == user_id, UserSession.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


def disable_user(db: Database, username: str, *, actor: str) -> None:
    """The user can no longer log in, and every open session ends now."""
    with db.transaction() as session:
        user = find_user(session, username)
        user.disabled_at = utcnow()
        _end_sessions(session, user.id)
        record_events(session, _user_event(EventType.USER_DISABLED, user, actor))


def set_roles(db: Database, settings: Settings, username: str, roles: list[str], *, actor: str) -> User:
    """Replace a user's roles, as the separation-of-duties rules allow (by default nobody changes
    their own). Open sessions of the user end."""
    with db.transaction() as session:
        user = find_user(session, username)
        check_duties(settings.separation_of_duties, "users:set_roles", actor, {"subject": user.id})
        before = list(user.roles)
        user.roles = check_roles(session, roles)
        _end_sessions(session, user.id)
        record_events(
            session, _user_event(EventType.USER_ROLES_CHANGED, user, actor, before=before, after=user.roles)
        )
        return user


def set_password(db: Database, settings: Settings, username: str, password: str, *, actor: str) -> None:
    """A new password; unlocks the account and ends its sessions."""
    with db.transaction() as session:
        user = find_user(session, username)
        check_password_rules(password, user.username, settings)
        user.password_hash = _hasher.hash(password)
        user.password_changed_at = utcnow()
        user.failed_logins = 0
        user.locked_until = None
        _end_sessions(session, user.id)
        record_events(session, _user_event(EventType.USER_PASSWORD_CHANGED, user, actor))


@dataclass(frozen=True)
class LoginResult:
    cookie: str
    csrf_token: str
    expires_at: dt.datetime


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def log_in(db: Database, settings: Settings, username: str, password: str, address: str) -> LoginResult:
    """A new session, or Unauthorised with the same words for an unknown user and a wrong password.

    ``settings.login_max_failures`` failures in a row lock the account for
    ``login_lockout_minutes``; a locked account refuses even the right password until then.
    Every attempt is audited, failed ones included.
    """
    with db.transaction() as session:
        result = _attempt(session, settings, username, password, address)
    if result is None:
        raise Unauthorised("the username or password is wrong, or the account is locked or disabled")
    return result


def _attempt(
    session: Session, settings: Settings, username: str, password: str, address: str
) -> LoginResult | None:
    user = session.scalars(
        select(User).where(User.username == username.strip().lower()).with_for_update()
    ).first()
    if user is None:
        _password_matches(_DUMMY_HASH, password)
        return None
    now = utcnow()
    failed = functools.partial(_user_event, EventType.USER_LOGIN_FAILED, user, "anonymous", address=address)
    if user.disabled_at is not None or (user.locked_until is not None and user.locked_until > now):
        record_events(session, failed(reason="disabled" if user.disabled_at else "locked"))
        return None
    if not _password_matches(user.password_hash, password):
        user.failed_logins += 1
        events = [failed(reason="password", failures=user.failed_logins)]
        if user.failed_logins >= settings.login_max_failures:
            user.locked_until = now + dt.timedelta(minutes=settings.login_lockout_minutes)
            events.append(
                _user_event(EventType.USER_LOCKED, user, "system", until=user.locked_until.isoformat())
            )
        record_events(session, *events)
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    return _open_session(session, settings, user, address, "password")


def _open_session(session: Session, settings: Settings, user: User, address: str, method: str) -> LoginResult:
    user.failed_logins = 0
    user.locked_until = None
    cookie, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    expires = utcnow() + dt.timedelta(hours=settings.session_hours)
    session.add(
        UserSession(user_id=user.id, token_sha256=_digest(cookie), csrf_token=csrf, expires_at=expires)
    )
    record_events(
        session, _user_event(EventType.USER_LOGGED_IN, user, user.id, address=address, method=method)
    )
    return LoginResult(cookie, csrf, expires)


def single_sign_on(db: Database, settings: Settings, username: str, address: str) -> LoginResult:
    """A session for the user an identity provider vouched for: it must exist here, enabled and
    not locked; its roles and locations are careops's own."""
    with db.transaction() as session:
        user = session.scalars(select(User).where(User.username == username)).first()
        result = None
        if user is not None:
            locked = user.locked_until is not None and user.locked_until > utcnow()
            if user.disabled_at is None and not locked:
                result = _open_session(session, settings, user, address, "oidc")
            else:
                refused = _user_event(
                    EventType.USER_LOGIN_FAILED, user, "anonymous", address=address, reason="sso"
                )
                record_events(session, refused)
    if result is None:
        raise Unauthorised("your identity provider knows you, but careops has no active user of that name")
    return result


def _password_matches(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def log_out(db: Database, cookie: str) -> None:
    with db.transaction() as session:
        row = session.scalars(select(UserSession).where(UserSession.token_sha256 == _digest(cookie))).first()
        if row is None or row.revoked_at is not None:
            return
        row.revoked_at = utcnow()
        user = session.get(User, row.user_id)
        if user is not None:
            record_events(session, _user_event(EventType.USER_LOGGED_OUT, user, user.id))


@dataclass(frozen=True)
class ConsoleUser:
    principal: Principal
    csrf_token: str
    display_name: str
    roles: list[str]


def user_principal(session: Session, user: User) -> Principal:
    """A user's permissions and PHI policy: the union of its roles' (as they are now)."""
    specs = [spec for name, spec in effective_roles(session).items() if name in user.roles]
    permissions = frozenset(p for spec in specs for p in spec.permissions)
    masking = CLEAR if grants(permissions, PHI_READ) else MaskingPolicy(most_open([s.masking for s in specs]))
    scope = LocationScope(frozenset(user.locations)) if user.locations is not None else EVERYWHERE
    return Principal(user.id, user.username, permissions, scope, masking, user_id=user.id)


def session_user(db: Database, cookie: str) -> ConsoleUser:
    """The user behind a session cookie; Unauthorised when it is unknown, revoked or expired."""
    with db.sessions() as session:
        row = session.scalars(select(UserSession).where(UserSession.token_sha256 == _digest(cookie))).first()
        if row is None or row.revoked_at is not None or row.expires_at <= utcnow():
            raise Unauthorised("the session has ended: log in again")
        user = session.get(User, row.user_id)
        if user is None or user.disabled_at is not None:
            raise Unauthorised("the session has ended: log in again")
        return ConsoleUser(user_principal(session, user), row.csrf_token, user.display_name, list(user.roles))
