"""Duplicate referrals: the same patient, service and referrer within a window."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from careops.domain.cases import CaseStatus
from careops.domain.models import ServiceCase


def find_duplicate_case(
    session: Session,
    *,
    patient_id: str,
    service_id: str,
    referrer_id: str | None,
    now: dt.datetime,
    window: dt.timedelta,
) -> ServiceCase | None:
    """The newest open case that a new referral repeats, if any (cancelled cases do not count)."""
    if window <= dt.timedelta(0):
        return None
    query = select(ServiceCase).where(
        ServiceCase.patient_id == patient_id,
        ServiceCase.service_id == service_id,
        ServiceCase.created_at >= now - window,
        ServiceCase.status != str(CaseStatus.CANCELLED),
    )
    query = query.where(
        ServiceCase.referrer_id.is_(None) if referrer_id is None else ServiceCase.referrer_id == referrer_id
    )
    return session.scalars(query.order_by(ServiceCase.created_at.desc()).limit(1)).first()
