"""Duplicate referrals: the same patient, service and referrer within a window."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Select, bindparam, select
from sqlalchemy.engine import Connection

from careops.db import run
from careops.domain.cases import CaseStatus
from careops.domain.models import Base, ServiceCase

_cases = Base.metadata.tables[ServiceCase.__tablename__]


def _repeated(by_referrer: bool) -> Select[Any]:
    referrer = (
        _cases.c.referrer_id == bindparam("referrer_id") if by_referrer else _cases.c.referrer_id.is_(None)
    )
    return (
        select(_cases.c.id, _cases.c.status, _cases.c.location_id)
        .where(
            _cases.c.patient_id == bindparam("patient_id"),
            _cases.c.service_id == bindparam("service_id"),
            _cases.c.created_at >= bindparam("since", type_=_cases.c.created_at.type),
            _cases.c.status != str(CaseStatus.CANCELLED),
            referrer,
        )
        .order_by(_cases.c.created_at.desc())
        .limit(1)
    )


# By a raw cursor (``run``), so that the intake's pipelined writer can read the answer.
_REPEATED = {True: _repeated(True), False: _repeated(False)}


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
        _REPEATED[referrer_id is not None],
        {
            "patient_id": patient_id,
            "service_id": service_id,
            "referrer_id": referrer_id,
            "since": now - window,
        }
        if referrer_id is not None
        else {"patient_id": patient_id, "service_id": service_id, "since": now - window},
    ).fetchone()
    return (found[0], found[1], found[2]) if found is not None else None
