"""Duplicate referrals: the same patient, service and referrer within a window."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.engine import Connection

from careops.domain.cases import CaseStatus
from careops.domain.models import Base, ServiceCase

_cases = Base.metadata.tables[ServiceCase.__tablename__]


def find_duplicate_case(
    connection: Connection,
    *,
    patient_id: str,
    service_id: str,
    referrer_id: str | None,
    now: dt.datetime,
    window: dt.timedelta,
) -> tuple[str, str, str] | None:
    """(id, status, location id) of the newest open case a new referral repeats (not cancelled ones)."""
    if window <= dt.timedelta(0):
        return None
    query = select(_cases.c.id, _cases.c.status, _cases.c.location_id).where(
        _cases.c.patient_id == patient_id,
        _cases.c.service_id == service_id,
        _cases.c.created_at >= now - window,
        _cases.c.status != str(CaseStatus.CANCELLED),
        _cases.c.referrer_id.is_(None) if referrer_id is None else _cases.c.referrer_id == referrer_id,
    )
    row = connection.execute(query.order_by(_cases.c.created_at.desc()).limit(1)).first()
    return (row[0], row[1], row[2]) if row is not None else None
