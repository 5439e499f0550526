"""Per-channel intake metrics: received, accepted, rejected, quarantined, and latency.

Labels carry the channel name only (``hl7-mllp``, ``hl7-http``, ...), never PHI or free text.
Under several server processes, ``careops serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at a shared
directory and ``/metrics`` adds the processes up.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from prometheus_client import Counter, Histogram

_RECEIVED = Counter("careops_channel_received", "Inbound items received", ["channel"])
_ACCEPTED = Counter(
    "careops_channel_accepted", "Inbound items accepted (case, exception item or record)", ["channel"]
)
_REJECTED = Counter("careops_channel_rejected", "Inbound items rejected (NAK or 4xx)", ["channel"])
_QUARANTINED = Counter("careops_channel_quarantined", "Inbound items kept in quarantine", ["channel"])
_LATENCY = Histogram(
    "careops_channel_latency_seconds",
    "From receipt to answer (committed)",
    ["channel"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)


@dataclass
class Measurement:
    """What the caller says of one item before the ``measured`` block ends (rejected by default)."""

    accepted: bool = False
    quarantined: bool = False


@dataclass(frozen=True)
class _Series:
    received: Counter
    accepted: Counter
    rejected: Counter
    quarantined: Counter
    latency: Histogram


@functools.cache  # one per channel name: a handful, fixed in code
def _series(channel: str) -> _Series:
    """The channel's labelled series, looked up once (``labels()`` takes a lock each time)."""
    return _Series(
        _RECEIVED.labels(channel),
        _ACCEPTED.labels(channel),
        _REJECTED.labels(channel),
        _QUARANTINED.labels(channel),
        _LATENCY.labels(channel),
    )


@contextmanager
def measured(channel: str) -> Iterator[Measurement]:
    """Count one inbound item of ``channel`` and time it; an exception counts as a rejection."""
    series = _series(channel)
    series.received.inc()
    started = time.perf_counter()
    seen = Measurement()
    try:
        yield seen
    finally:
        (series.accepted if seen.accepted else series.rejected).inc()
        if seen.quarantined:
            series.quarantined.inc()
        series.latency.observe(time.perf_counter() - started)
