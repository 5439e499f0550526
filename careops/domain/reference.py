"""The reference data a referral points at (locations, services, referrers, payers), as a snapshot.

Reference data changes rarely and is read on every referral, so intake resolves codes against an
in-memory ``Catalogue`` loaded in five queries (and refreshed by the caller's cache): the live
records, and the live code mappings that say what a sender's own codes stand for. Retired records
are not in it: a referral naming one waits in the exception queue like one naming an unknown code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from careops.domain.models import CodeMapping, Location, Payer, Referrer, Service
from careops.domain.referrals import NormalisedReferral, normalise_code

Ref = TypeVar("Ref", "ServiceRef", "CodedRef")


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
    authorisation: tuple[tuple[str, bool], ...] = ()  # per payer code, overriding the above

    def needs_authorisation(self, payer: CodedRef | None) -> bool:
        """Whether a case for this service, paid by ``payer``, waits for an authorisation."""
        if payer is not None:
            for code, needed in self.authorisation:
                if code == payer.code:
                    return needed
        return self.requires_authorisation and (payer is None or payer.requires_authorisation)


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


def mapping_key(kind: str, code: str) -> str:
    """How a sender's code is compared: a location's name in lower case, other codes as
    ``normalise_code`` writes them (any case and spacing)."""
    return code.strip().lower() if kind == "location" else normalise_code(code) or ""


def senders(sender: str | None) -> tuple[str, ...]:
    """Whose mappings apply to what ``sender`` sent, most specific first: the sender as recorded
    (an HL7 ``APP|FACILITY``), its last part (the facility), that part's first component (the
    facility's name without its universal id), then every sender (``*``)."""
    if not sender:
        return ("*",)
    facility = sender.rsplit("|", 1)[-1]
    return tuple(dict.fromkeys(who for who in (sender, facility, facility.split("^", 1)[0], "*") if who))


@dataclass
class Catalogue:
    locations: dict[str, LocationRef] = field(default_factory=dict)
    services: dict[tuple[str, str], ServiceRef] = field(default_factory=dict)
    referrers: dict[tuple[str, str], CodedRef] = field(default_factory=dict)
    payers: dict[tuple[str, str], CodedRef] = field(default_factory=dict)
    # (sender, kind, mapping_key(code)) -> the careops code (a location's slug) it stands for
    mappings: dict[tuple[str, str, str], str] = field(default_factory=dict)

    @classmethod
    def load(cls, session: Session) -> Catalogue:
        catalogue = cls()
        for loc in session.scalars(select(Location).where(Location.retired_at.is_(None))):
            catalogue.locations[loc.slug] = LocationRef(loc.id, loc.organisation_id)
        for svc in session.scalars(select(Service).where(Service.retired_at.is_(None))):
            ref = ServiceRef(
                svc.id,
                svc.code,
                tuple(svc.required_fields),
                svc.requires_authorisation,
                tuple((code, bool(needed)) for code, needed in sorted(svc.authorisation.items())),
            )
            for code in (svc.code, *svc.aliases):
                catalogue.services.setdefault((svc.organisation_id, normalise_code(code) or ""), ref)
        for referrer in session.scalars(select(Referrer).where(Referrer.retired_at.is_(None))):
            catalogue.referrers[(referrer.organisation_id, referrer.code)] = CodedRef(
                referrer.id, referrer.code
            )
        for payer in session.scalars(select(Payer).where(Payer.retired_at.is_(None))):
            catalogue.payers[(payer.organisation_id, payer.code)] = CodedRef(
                payer.id, payer.code, payer.requires_authorisation
            )
        live = select(CodeMapping.sender, CodeMapping.kind, CodeMapping.code, CodeMapping.target)
        for sender, kind, code, target in session.execute(live.where(CodeMapping.retired_at.is_(None))):
            catalogue.mappings[(sender, kind, mapping_key(kind, code))] = target
        return catalogue

    def mapped(self, kind: str, code: str | None, sender: str | None) -> str | None:
        """What a mapping of ``sender`` (or of every sender) says ``code`` of ``kind`` stands for."""
        if not code or not self.mappings:
            return None
        key = mapping_key(kind, code)
        for who in senders(sender):
            target = self.mappings.get((who, kind, key))
            if target is not None:
                return target
        return None

    def resolve(self, referral: NormalisedReferral, sender: str | None = None) -> ReferencedRecords:
        """Codes mapped to records: service codes match the code or any alias, in any case and spacing;
        a code careops does not know is looked up in the sender's mappings."""
        location = self.locations.get(referral.location or "") or self.locations.get(
            self.mapped("location", referral.location, sender) or ""
        )
        if location is None:
            return ReferencedRecords(None, None, None, None)
        org = location.organisation_id

        def find(kind: str, table: dict[tuple[str, str], Ref], code: str | None) -> Ref | None:
            """The record ``code`` names, directly or through a mapping; a FHIR ``system|code``
            pair is tried whole, then by its code alone."""
            for candidate in dict.fromkeys([code, code.rsplit("|", 1)[-1]] if code else []):
                found = table.get((org, candidate))
                if found is None:
                    target = self.mapped(kind, candidate, sender)
                    found = table.get((org, (normalise_code(target) if kind == "service" else target) or ""))
                if found is not None:
                    return found
            return None

        return ReferencedRecords(
            location,
            find("service", self.services, referral.service_code),
            find("referrer", self.referrers, referral.referrer_code),
            find("payer", self.payers, referral.payer_code),
        )
