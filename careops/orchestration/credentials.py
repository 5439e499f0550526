"""Credential expiry warnings: ``staff.credential_expiring`` ahead of time, once per credential.

A live member of staff's credential that expires within the warning period (30 days by default,
``CAREOPS_CREDENTIAL_WARNING_DAYS``) writes the event and opens an item in the ``staffing``
queue, keyed by the credential, so the next run (the worker's, every hour) does not warn again.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from careops.db import Database
from careops.domain.events import Event, EventType, record_events
from careops.domain.models import ExceptionItem, Location, Resource, utcnow
from careops.governance.scoping import LocationScope
from careops.orchestration.exception_queue import open_exception
from careops.orchestration.staffing import QUEUE


def expiring(resource: Resource, first: dt.date, last: dt.date) -> list[tuple[dict[str, object], dt.date]]:
    """The member of staff's credentials that expire from ``first`` to ``last``, with the day."""
    found = []
    for credential in resource.credentials:
        if credential.get("expires"):
            expires = dt.date.fromisoformat(str(credential["expires"]))
            if first <= expires <= last:
                found.append((credential, expires))
    return found


def _live_staff(session: Session) -> list[tuple[Resource, str | None]]:
    """Every live member of staff with the id of the location they are based at."""
    return [
        (resource, location_id)
        for resource, location_id in session.execute(
            select(Resource, Location.id)
            .outerjoin(Location, Location.slug == Resource.location)
            .where(Resource.staff.is_(True), Resource.retired_at.is_(None))
            .order_by(Resource.code)
        )
    ]


def _credential_view(
    resource: Resource, credential: dict[str, object], expires: dt.date, today: dt.date
) -> dict[str, object]:
    return {
        "staff": resource.code,
        "type": credential["type"],
        "number": credential.get("number"),
        "expires": expires.isoformat(),
        "days_left": (expires - today).days,
    }


def warn_expiring_credentials(
    db: Database, days: int = 30, today: dt.date | None = None, batch: int = 500
) -> int:
    """Warn once for each credential expiring within ``days``, up to ``batch`` in a transaction;
    how many warnings it wrote (the worker runs it again at once after a full batch)."""
    today = today or utcnow().date()
    written = 0
    with db.transaction() as session:
        for resource, location_id in _live_staff(session):
            for credential, expires in expiring(resource, today, today + dt.timedelta(days=days)):
                key = f"credential:{resource.id}:{credential.get('number') or credential['type']}:{expires}"
                if session.scalars(select(ExceptionItem.id).where(ExceptionItem.dedupe_key == key)).first():
                    continue
                open_exception(
                    session, QUEUE, ["credential_expiring"], actor="careops", location_id=location_id,
                    dedupe_key=key,
                )  # fmt: skip
                payload = _credential_view(resource, credential, expires, today)
                record_events(
                    session,
                    Event(
                        EventType.STAFF_CREDENTIAL_EXPIRING, "resource", resource.id, "careops",
                        location_id=location_id, payload=payload,
                    ),
                )  # fmt: skip
                written += 1
                if written == batch:
                    return written
    return written


def expiring_credentials(db: Database, days: int, scope: LocationScope) -> list[dict[str, object]]:
    """The credentials of live staff based at the caller's locations that expire within ``days``
    (already expired ones too: their holder cannot be booked for what they cover), soonest first."""
    today = utcnow().date()
    with db.sessions() as session:
        rows = [
            {**_credential_view(resource, credential, expires, today), "name": resource.name,
             "location": resource.location}
            for resource, location_id in _live_staff(session)
            if location_id is not None and scope.allows(location_id)
            for credential, expires in expiring(resource, dt.date.min, today + dt.timedelta(days=days))
        ]  # fmt: skip
    return sorted(rows, key=lambda row: (str(row["expires"]), str(row["staff"])))
