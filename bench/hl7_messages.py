"""Realistic, distinct HL7 v2 orders (ORM^O01) for the demo catalogue, for the channel benchmark."""

from __future__ import annotations

import datetime as dt
import uuid

from careops.demo.traffic import ReferralFactory

_PRIORITY = {"routine": "R", "urgent": "A", "stat": "S"}


def order(referral: dict[str, object]) -> bytes:
    """The referral as an ORM^O01 message (location in MSH-6, as a hospital engine would route it)."""
    patient = referral["patient"]
    referrer = referral["referrer"]
    assert isinstance(patient, dict) and isinstance(referrer, dict)
    now = dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S")
    birth = str(patient.get("birth_date", "")).replace("-", "")
    insurance = ["IN1", "1", "PLAN", str(referral["payer_code"]), *[""] * 32, str(referral["member_id"])]
    segments = [
        f"MSH|^~\\&|BENCH|CLINIC|CAREOPS|{referral['location']}|{now}||ORM^O01^ORM_O01|{uuid.uuid4().hex}|P|2.5.1",
        f"PID|1||{patient['mrn']}^^^^MR||{patient.get('family_name', '')}^{patient.get('given_name', '')}"
        f"||{birth}|{str(patient.get('sex', 'U'))[:1].upper()}|||||{patient.get('phone', '')}",
        "PV1|1|O",
        f"ORC|NW|{referral['external_id']}|||||^^^^^{_PRIORITY[str(referral['priority'])]}||{now}|||"
        f"{referrer['code']}^Referrer^Dr",
        f"OBR|1|{referral['external_id']}||{referral['service_code']}",
        "|".join(insurance),
    ]
    return ("\r".join(segments) + "\r").encode()


def orders(count: int, seed: int) -> list[bytes]:
    factory = ReferralFactory(seed=seed)
    return [order(factory.valid()) for _ in range(count)]
