"""A location named by its slug, as the services look it up for a caller, and its row lock."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from careops.domain.models import Location
from careops.errors import NotFound
from careops.governance.scoping import LocationScope


def location_named(session: Session, slug: str, scope: LocationScope, *, live: bool = True) -> Location:
    """The location with this slug among the caller's (only a live one unless ``live`` is False);
    404 otherwise, worded the same whether it does not exist or is not theirs."""
    query = select(Location).where(Location.slug == slug)
    if live:
        query = query.where(Location.retired_at.is_(None))
    location = session.scalars(query).first()
    if location is None or not scope.allows(location.id):
        raise NotFound(f"no location {slug!r} among yours")
    return location


def lock_location(session: Session, location_id: str) -> None:
    """Lock the location's row to the end of the transaction: what checks staff's visits across
    it (the travel time between home visits) runs one transaction at a time."""
    session.scalars(select(Location.id).where(Location.id == location_id).with_for_update()).all()
