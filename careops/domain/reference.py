"""The reference data a referral points at (locations, services, referrers, payers), as a snapshot.

Reference data changes rarely and is read on every referral, so intake resolves codes against an
in-memory ``Catalogue`` loaded in four queries (and refreshed by the caller's cache).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from careops.domain.models import Location, Payer, Referrer, Service
from careops.domain.referrals import NormalisedReferral, normalise_code


@dataclass(frozen=True)
class LocationRef:
    id: str
    organisation_id: str


@dataclass(frozen=True)
class ServiceRef:
    id: str
    code: str
    required_fields: tuple[str, ...]
    requires_authorisation: bool


@dataclass(frozen=True)
class CodedRef:
    """A referrer or payer: its id, code and (payers only) whether it needs authorisation."""

    id: str
    code: str
    requires_authorisation: bool = False


@dataclass(frozen=True)
class ReferencedRecords:
    location: LocationRef | None
    service: ServiceRef | None
    referrer: CodedRef | None
    payer: CodedRef | None

    def unknown_codes(self, referral: NormalisedReferral) -> list[str]:
        """``unknown_*`` reason codes for every code the referral gives that the catalogue lacks."""
        reasons = []
        if referral.location and self.location is None:
            reasons.append("unknown_location")
        if referral.service_code and self.service is None:
            reasons.append("unknown_service_code")
        if referral.referrer_code and self.referrer is None:
            reasons.append("unknown_referrer_code")
        if referral.payer_code and self.payer is None:
            reasons.append("unknown_payer_code")
        return reasons


@dataclass
class Catalogue:
    locations: dict[str, LocationRef] = field(default_factory=dict)
    services: dict[tuple[str, str], ServiceRef] = field(default_factory=dict)
    referrers: dict[tuple[str, str], CodedRef] = field(default_factory=dict)
    payers: dict[tuple[str, str], CodedRef] = field(default_factory=dict)

    @classmethod
    def load(cls, session: Session) -> Catalogue:
        catalogue = cls()
        for loc in session.scalars(select(Location)):
            catalogue.locations[loc.slug] = LocationRef(loc.id, loc.organisation_id)
        for svc in session.scalars(select(Service)):
            ref = ServiceRef(svc.id, svc.code, tuple(svc.required_fields), svc.requires_authorisation)
            for code in (svc.code, *svc.aliases):
                catalogue.services.setdefault((svc.organisation_id, normalise_code(code) or ""), ref)
        for referrer in session.scalars(select(Referrer)):
            catalogue.referrers[(referrer.organisation_id, referrer.code)] = CodedRef(
                referrer.id, referrer.code
            )
        for payer in session.scalars(select(Payer)):
            catalogue.payers[(payer.organisation_id, payer.code)] = CodedRef(
                payer.id, payer.code, payer.requires_authorisation
            )
        return catalogue

    def resolve(self, referral: NormalisedReferral) -> ReferencedRecords:
        """Codes mapped to records: service codes match the code or any alias, in any case and spacing."""
        location = self.locations.get(referral.location or "")
        if location is None:
            return ReferencedRecords(None, None, None, None)
        org = location.organisation_id
        return ReferencedRecords(
            location,
            self.services.get((org, referral.service_code or "")),
            self.referrers.get((org, referral.referrer_code or "")),
            self.payers.get((org, referral.payer_code or "")),
        )
