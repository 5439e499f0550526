"""The demo organisation: three locations, a service catalogue, payers and referrers, from
``reference.yaml`` (a reference file like any organisation's own)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from sqlalchemy import select

from careops.db import Database
from careops.domain.models import Organisation
from careops.governance.scoping import EVERYWHERE
from careops.orchestration.inventory import Move, move_stock
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
    _opening_stock(db)
    return True


def _opening_stock(db: Database) -> None:
    """Each threshold's item received at its location up to the threshold's maximum, except the
    saline at south, left under its minimum so the demo has a replenishment to make."""
    for entry in (e for e in demo_reference().entries if e.kind == "thresholds"):
        record = entry.record
        low = record["item"] == "SALINE-100ML"
        quantity = record["minimum"] - 2 if low else record["maximum"] or record["minimum"] * 2
        move = Move(record["location"], record["item"], "receipt", quantity, reason="opening stock")
        move_stock(db, move, actor="seed:demo", scope=EVERYWHERE)
