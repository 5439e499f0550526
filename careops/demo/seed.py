"""The demo organisation: three locations, a service catalogue, payers and referrers, from
``reference.yaml`` (a reference file like any organisation's own)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from sqlalchemy import select

from careops.db import Database
from careops.domain.models import Organisation
from careops.orchestration.reference_files import ReferenceFile, apply_file, read_reference_file

DEMO_FILE = Path(__file__).with_name("reference.yaml")


@cache
def demo_reference() -> ReferenceFile:
    read = read_reference_file(DEMO_FILE)
    assert not read.problems, read.problems
    return read


def codes(kind: str, key: str = "code") -> list[str]:
    """The demo's codes (or slugs) of ``kind``, in file order."""
    return [entry.record[key] for entry in demo_reference().entries if entry.kind == kind]


LOCATIONS = codes("locations", "slug")
SERVICES = codes("services")
PAYERS = codes("payers")
REFERRERS = codes("referrers")


def seed_demo(db: Database) -> bool:
    """Create the demo organisation; False (and no change) when it already exists."""
    with db.sessions() as session:
        if session.scalars(select(Organisation).where(Organisation.slug == "demo")).first():
            return False
    apply_file(db, demo_reference(), actor="seed:demo", reason="the demo organisation")
    return True
