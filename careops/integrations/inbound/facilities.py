"""Which careops location something sent from outside is for, from the names it gives its place."""

from __future__ import annotations

from collections.abc import Container

from careops.settings import Settings


def location_for(
    names: list[str], settings: Settings, slugs: Container[str], *, pass_unmapped: bool = True
) -> str | None:
    """The location slug for a sender's names of a place (facility, organisation, mailbox), most
    specific first: one ``facility_locations`` maps, or one named like a slug, else
    ``default_location``. Else the first name is passed on as it is (``pass_unmapped``), so that
    the item waits in the exception queue with ``unknown_location`` instead of landing somewhere
    wrong."""
    mapping = {name.lower(): slug for name, slug in settings.facility_locations.items()}
    for name in names:
        key = name.lower()
        if key in mapping:
            return mapping[key]
        if key in slugs:
            return key
    if settings.default_location:
        return settings.default_location
    return names[0][:64] if names and pass_unmapped else None
