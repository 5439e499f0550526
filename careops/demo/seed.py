"""The demo organisation: three locations, a service catalogue, payers and referrers."""

from __future__ import annotations

from sqlalchemy import select

from careops.db import Database
from careops.domain.models import Location, Organisation, Payer, Referrer, Service

LOCATIONS = [
    ("north", "North Imaging Centre"),
    ("central", "Central Diagnostics"),
    ("south", "South Home Care"),
]
SERVICES = [
    # code, name, aliases, required fields, needs authorisation
    (
        "MRI-KNEE",
        "MRI knee",
        ["73721", "MRI KNEE"],
        ["patient.birth_date", "referrer.code", "payer_code", "member_id"],
        True,
    ),
    ("CT-HEAD", "CT head", ["70450"], ["patient.birth_date", "referrer.code"], True),
    ("XRAY-CHEST", "Chest X-ray", ["71046", "CXR"], ["patient.birth_date"], False),
    ("US-ABDO", "Abdominal ultrasound", ["76700"], ["patient.birth_date", "referrer.code"], False),
    ("BLOOD-PANEL", "Blood panel", ["80053", "CMP"], ["patient.birth_date"], False),
    ("HOME-WOUND", "Home wound care visit", ["WOUND CARE"], ["patient.birth_date", "patient.phone"], False),
]
PAYERS = [
    ("NHS", "NHS England", False),
    ("AXA", "AXA Health", True),
    ("BUPA", "Bupa", True),
    ("SELF", "Self-pay", False),
]
REFERRERS = [(f"GP-{n:03d}", f"Dr Referrer {n}") for n in range(1, 11)]


def seed_demo(db: Database) -> bool:
    """Create the demo organisation; False (and no change) when it already exists."""
    with db.transaction() as session:
        if session.scalars(select(Organisation).where(Organisation.slug == "demo")).first():
            return False
        org = Organisation(slug="demo", name="Northfield Diagnostics & Home Care")
        session.add(org)
        session.flush()
        session.add_all(
            Location(organisation_id=org.id, slug=s, name=n, timezone="Europe/London") for s, n in LOCATIONS
        )
        session.add_all(
            Service(
                organisation_id=org.id,
                code=c,
                name=n,
                aliases=a,
                required_fields=r,
                requires_authorisation=auth,
            )
            for c, n, a, r, auth in SERVICES
        )
        session.add_all(
            Payer(organisation_id=org.id, code=c, name=n, requires_authorisation=a) for c, n, a in PAYERS
        )
        session.add_all(Referrer(organisation_id=org.id, code=c, name=n) for c, n in REFERRERS)
        return True
