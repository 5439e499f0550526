"""Duplicate referrals: the same patient, service and referrer within a window."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import bindparam, select
from sqlalchemy.engine import Connection

from careops.db import run
from careops.domain.cases import CaseStatus
from careops.domain.models import Base, ServiceCase

_cases = Base.metadata.tables[ServiceCase.__tablename__]


# The newest open case of a patient, service and referrer (no referrer matching no referrer), read
# by a raw cursor (``run``): the intake's pipelined writer reads no SQLAlchemy result.
_REPEATED = (
    select(_cases.c.id, _cases.c.status, _cases.c.location_id)
    .where(
        _cases.c.patient_id == bindparam("patient_id"),
        _cases.c.service_id == bindparam("service_id"),
        _cases.c.created_at >= bindparam("since", type_=_cases.c.created_at.type),
        _cases.c.status != str(CaseStatus.CANCELLED),
        _cases.c.referrer_id.is_not_distinct_from(bindparam("referrer_id")),
    )
    .order_by(_cases.c.created_at.desc())
    .limit(1)
)


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
    found = run(
        connection,
        _REPEATED,
        {
            "patient_id": patient_id,
            "service_id": service_id,
            "referrer_id": referrer_id,
            "since": now - window,
        },
    ).fetchone()
    return (found[0], found[1], found[2]) if found is not None else None
