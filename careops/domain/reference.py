"""Look-ups in the reference data a referral points at: locations, services, referrers, payers."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from careops.domain.models import Location, Payer, Referrer, Service
from careops.domain.referrals import NormalisedReferral, normalise_code


@dataclass(frozen=True)
class ReferencedRecords:
    location: Location | None
    service: Service | None
    referrer: Referrer | None
    payer: Payer | None

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


def resolve_references(session: Session, referral: NormalisedReferral) -> ReferencedRecords:
    location = (
        session.scalars(select(Location).where(Location.slug == referral.location)).first()
        if referral.location
        else None
    )
    org_id = location.organisation_id if location else None
    service = find_service(session, org_id, referral.service_code) if org_id else None
    referrer = payer = None
    if org_id and referral.referrer_code:
        referrer = session.scalars(
            select(Referrer).where(
                Referrer.organisation_id == org_id, Referrer.code == referral.referrer_code
            )
        ).first()
    if org_id and referral.payer_code:
        payer = session.scalars(
            select(Payer).where(Payer.organisation_id == org_id, Payer.code == referral.payer_code)
        ).first()
    return ReferencedRecords(location, service, referrer, payer)


def find_service(session: Session, organisation_id: str, code: str | None) -> Service | None:
    """A service by its code, or by one of its aliases (code mapping to the catalogue)."""
    if not code:
        return None
    service = session.scalars(
        select(Service).where(Service.organisation_id == organisation_id, Service.code == code)
    ).first()
    if service is not None:
        return service
    for candidate in session.scalars(select(Service).where(Service.organisation_id == organisation_id)):
        if code in {normalise_code(alias) for alias in candidate.aliases}:
            return candidate
    return None
