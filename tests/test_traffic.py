"""The demo's and the benchmarks' referral traffic: the shares a mix asks for, and what each kind is."""

from __future__ import annotations

import json
from collections import Counter

from bench.loadgen import Bodies
from careops.demo.traffic import Mix, ReferralFactory

MIX = Mix(incomplete=0.07, duplicate=0.03)


def test_referrals_come_in_the_shares_of_the_mix() -> None:
    factory = ReferralFactory(seed=3)
    kinds = Counter(factory.referral(MIX)[0] for _ in range(4000))
    assert set(kinds) == {"valid", "incomplete", "duplicate"}
    assert 0.05 < kinds["incomplete"] / 4000 < 0.09
    assert 0.015 < kinds["duplicate"] / 4000 < 0.045


def test_a_duplicate_is_a_recent_valid_referral_under_another_external_id() -> None:
    factory = ReferralFactory(seed=5)
    drawn = [factory.referral(Mix(incomplete=0.0, duplicate=0.5)) for _ in range(200)]
    valid = [referral for kind, referral in drawn if kind == "valid"]
    duplicates = [referral for kind, referral in drawn if kind == "duplicate"]
    assert duplicates
    for duplicate in duplicates:
        original = next(r for r in valid if r["patient"] == duplicate["patient"])
        assert original["external_id"] != duplicate["external_id"]
        assert {**original, "external_id": None} == {**duplicate, "external_id": None}


def test_an_incomplete_referral_lacks_what_the_intake_needs() -> None:
    factory = ReferralFactory(seed=7)
    for _ in range(50):
        referral = factory.incomplete()
        patient = referral["patient"]
        assert isinstance(patient, dict)
        lacking = "birth_date" not in patient or "given_name" not in patient
        assert lacking or referral["service_code"] == "UNKNOWN-SCAN"


def test_a_body_is_the_referral_as_json_or_malformed_in_its_share() -> None:
    factory = ReferralFactory(seed=11)
    bodies = [factory.body(Mix(incomplete=0.07, duplicate=0.03, malformed=0.1)) for _ in range(2000)]
    kinds = Counter(kind for kind, _ in bodies)
    assert 0.07 < kinds["malformed"] / 2000 < 0.13
    for kind, body in bodies:
        if kind != "malformed":
            assert isinstance(json.loads(body)["patient"], dict)


def test_the_load_generators_pool_never_hands_out_a_body_twice() -> None:
    bodies = Bodies(batch=40)
    for kind in ("fhir", "hl7"):
        pool = bodies.ready(kind, 30)
        assert len(pool) >= 30
        sent = [pool.popleft() for _ in range(len(pool) - 5)]
        pool = bodies.ready(kind, 60)  # tops up past what is left, with new bodies
        assert len(pool) >= 60
        sent += list(pool)
        assert len(set(sent)) == len(sent)
