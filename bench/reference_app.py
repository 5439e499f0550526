"""The bare reference for bench/intake.py: FastAPI + pydantic + one transaction of 3 inserts.

No auth, no idempotency, no normalisation: what any intake endpoint costs at least on this
machine and database. Run with uvicorn, database from CAREOPS_DATABASE_URL, its tables created
first (``bench.reference_schema``: two workers creating them at once would race).
"""

from __future__ import annotations

import datetime as dt
import os
import uuid

from fastapi import FastAPI
from pydantic import BaseModel
from sqlalchemy import insert

from bench.reference_schema import ref_event, ref_patient, ref_referral
from careops.db import make_engine


class PatientIn(BaseModel):
    mrn: str | None = None
    given_name: str | None = None
    family_name: str | None = None
    birth_date: str | None = None
    sex: str | None = None
    phone: str | None = None


class ReferrerIn(BaseModel):
    code: str | None = None


class ReferralIn(BaseModel):
    location: str | None = None
    service_code: str | None = None
    priority: str | None = None
    patient: PatientIn
    referrer: ReferrerIn
    payer_code: str | None = None
    member_id: str | None = None
    external_id: str | None = None


engine = make_engine(os.environ["CAREOPS_DATABASE_URL"])
app = FastAPI()


@app.post("/api/v1/referrals", status_code=201)
def submit(referral: ReferralIn) -> dict[str, str]:
    patient_id, referral_id = uuid.uuid4().hex, uuid.uuid4().hex
    with engine.begin() as connection:
        connection.execute(
            insert(ref_patient),
            {"id": patient_id, "name": f"{referral.patient.given_name} {referral.patient.family_name}"},
        )
        connection.execute(
            insert(ref_referral),
            {
                "id": referral_id,
                "patient_id": patient_id,
                "service": referral.service_code,
                "created_at": dt.datetime.now(dt.UTC),
            },
        )
        connection.execute(
            insert(ref_event),
            {"id": uuid.uuid4().hex, "type": "referral.received", "payload": {"id": referral_id}},
        )
    return {"id": referral_id}
