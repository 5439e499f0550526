"""Per-channel intake metrics: received, accepted, rejected, quarantined, and latency.

Labels carry the channel name only (``hl7-mllp``, ``hl7-http``, ...), never PHI or free text.
Under several server processes, ``careops serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at a shared
directory and ``/metrics`` adds the processes up.
"""

from __future__ import annotations

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


class ChannelMetrics:
    def __init__(self, channel: str) -> None:
        self.channel = channel

    def received(self) -> None:
        _RECEIVED.labels(self.channel).inc()

    def finished(self, accepted: bool, quarantined: bool, seconds: float) -> None:
        (_ACCEPTED if accepted else _REJECTED).labels(self.channel).inc()
        if quarantined:
            _QUARANTINED.labels(self.channel).inc()
        _LATENCY.labels(self.channel).observe(seconds)
