"""Location scoping: which locations' records a caller may see, enforced in the service layer.

A caller bound to some locations never sees another location's record: lists, counts and
exports leave it out, and a direct fetch answers 404, exactly as for an id that does not exist,
so that the answer does not even tell that it exists. Records not yet tied to any location
(e.g. a quarantined payload that named none) are visible only to callers bound to all locations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select
from sqlalchemy.orm import InstrumentedAttribute

from careops.errors import NotFound

# Any select, whatever its columns (a ``Select`` is generic in the tuple of its row's types).
Query = TypeVar("Query", bound=Select[*tuple[Any, ...]])


@dataclass(frozen=True)
class LocationScope:
    """All locations (``ids`` None) or only these location ids."""

    ids: frozenset[str] | None = None

    @property
    def everywhere(self) -> bool:
        return self.ids is None

    def restrict(self, query: Query, location: ColumnElement[Any] | InstrumentedAttribute[Any]) -> Query:
        """``query`` limited to rows whose ``location`` column is in scope."""
        return query if self.ids is None else query.where(location.in_(self.ids))

    def allows(self, location_id: str | None) -> bool:
        return self.ids is None or location_id in self.ids

    def check(self, location_id: str | None, what: str) -> None:
        """404 for a record outside the scope, worded as for one that does not exist."""
        if not self.allows(location_id):
            raise NotFound(f"no {what} with this id")


EVERYWHERE = LocationScope()
