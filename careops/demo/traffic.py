"""Realistic referral traffic for the demo and the benchmarks: valid, incomplete, duplicate, malformed."""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from careops.demo.seed import LOCATIONS, PAYERS, REFERRERS, SERVICES

GIVEN = [
    "Alex",
    "Sam",
    "Jordan",
    "Priya",
    "Mohammed",
    "Olivia",
    "Chen",
    "Fatima",
    "Liam",
    "Aisha",
    "Noah",
    "Zoe",
]
FAMILY = [
    "Smith",
    "Jones",
    "Patel",
    "Khan",
    "Williams",
    "Brown",
    "Taylor",
    "Nguyen",
    "Okafor",
    "Garcia",
    "Murphy",
]


@dataclass
class Mix:
    """Shares of each kind of referral; what is left after these is valid."""

    incomplete: float = 0.07
    duplicate: float = 0.03
    malformed: float = 0.0


class ReferralFactory:
    """Distinct, complete referrals for the demo catalogue, and their spoiled variants."""

    def __init__(self, seed: int | None = None) -> None:
        self.random = random.Random(seed)
        self.sent: list[dict[str, object]] = []

    def valid(self) -> dict[str, object]:
        r = self.random
        code = r.choice(SERVICES)
        payer = r.choice(PAYERS)
        return {
            "location": r.choice(LOCATIONS),
            "service_code": code if r.random() < 0.8 else code.lower().replace("-", " "),
            "priority": r.choice(["routine", "routine", "routine", "urgent", "stat"]),
            "patient": {
                "mrn": f"MRN-{uuid.uuid4().hex[:12].upper()}",
                "given_name": r.choice(GIVEN),
                "family_name": r.choice(FAMILY),
                "birth_date": f"{r.randint(1930, 2020)}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}",
                "sex": r.choice(["female", "male"]),
                "phone": f"+44 7700 9{r.randint(0, 99999):05d}",
            },
            "referrer": {"code": r.choice(REFERRERS)},
            "payer_code": payer,
            "member_id": f"{r.randint(100, 999)} {r.randint(100, 999)} {r.randint(1000, 9999)}",
            "external_id": f"EXT-{uuid.uuid4().hex[:10]}",
        }

    def incomplete(self) -> dict[str, object]:
        referral = self.valid()
        patient = referral["patient"]
        assert isinstance(patient, dict)
        spoil = self.random.choice(["birth_date", "service", "given_name"])
        if spoil == "birth_date":
            patient.pop("birth_date")
        elif spoil == "service":
            referral["service_code"] = "UNKNOWN-SCAN"
        else:
            patient.pop("given_name")
        return referral

    def referral(self, mix: Mix) -> tuple[str, dict[str, object]]:
        """The kind chosen and its referral (``mix.malformed`` aside: a malformed body is no referral)."""
        return self._referral(mix, self.random.random())

    def body(self, mix: Mix) -> tuple[str, bytes]:
        """The kind chosen and its JSON body."""
        roll = self.random.random()
        if roll < mix.malformed:
            return "malformed", self.random.choice(
                [b'{"location": "north", "patient": ', b'{"patient": "not an object"}']
            )
        kind, referral = self._referral(mix, roll - mix.malformed)
        return kind, json.dumps(referral).encode()

    def _referral(self, mix: Mix, roll: float) -> tuple[str, dict[str, object]]:
        if roll < mix.duplicate and self.sent:
            # The same patient and service again under another external id (nothing nested changes).
            duplicate = {
                **self.random.choice(self.sent[-200:]),
                "external_id": f"EXT-{uuid.uuid4().hex[:10]}",
            }
            return "duplicate", duplicate
        if roll < mix.duplicate + mix.incomplete:
            return "incomplete", self.incomplete()
        referral = self.valid()
        self.sent.append(referral)
        return "valid", referral


@dataclass
class TrafficStats:
    sent: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)

    def record(self, status: int, seconds: float) -> None:
        self.sent += 1
        self.by_status[status] = self.by_status.get(status, 0) + 1
        self.latencies_ms.append(seconds * 1000)

    def percentile(self, p: float) -> float:
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms[-5000:])
        return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


async def simulate(
    base_url: str,
    token: str,
    stats: TrafficStats,
    *,
    rate_per_second: float,
    mix: Mix,
    stop: Callable[[], bool],
    seed: int | None = None,
) -> None:
    """Post referrals at about ``rate_per_second`` until ``stop()`` says so."""
    factory = ReferralFactory(seed)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as client:
        interval = 1.0 / rate_per_second
        while not stop():
            _, body = factory.body(mix)
            started = time.perf_counter()
            try:
                response = await client.post(
                    "/api/v1/referrals", content=body, headers={"Idempotency-Key": uuid.uuid4().hex}
                )
                stats.record(response.status_code, time.perf_counter() - started)
            except httpx.HTTPError:
                stats.errors += 1
            await asyncio.sleep(max(0.0, interval - (time.perf_counter() - started)))
