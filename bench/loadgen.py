"""A small keep-alive HTTP/1.1 load generator (one process, asyncio) that prints JSON results.

Each request is a distinct realistic referral (90% valid, 7% incomplete, 3% duplicates) with its
own Idempotency-Key. Raw asyncio streams keep the generator's own CPU cost low on 2 cores.

One measurement (``bench.intake``):

    python -m bench.loadgen --url URL --token T --connections 4 --duration 6 --kind fhir

Many short ones against one server (``bench.channels``): ``--serve`` reads one request a line on
stdin, ``{"kind": "fhir", "connections": 4, "duration": 2}``, and answers each with its result
on a line of stdout. Bodies come from one pool per kind, made ahead of the measurements and never
sent twice, so that a measurement is not preceded by seconds of making bodies with the server
idle, and many short measurements can be interleaved.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from collections import deque
from typing import Any

from bench.messages import MIX, fhir_bundles, orders
from careops.demo.traffic import ReferralFactory

KINDS = {
    # kind: (path, content type); an HL7 answer counts as an error unless its MSA-1 is AA
    "json": ("/api/v1/referrals", "application/json"),
    "hl7": ("/api/v1/hl7", "application/hl7-v2"),
    "fhir": ("/fhir/r4", "application/fhir+json"),  # an error unless its ServiceRequest is 201
}
# The most requests a second a measurement can take from a pool (several times what 2 cores do).
_MOST_PER_SECOND = 2500


def make_bodies(kind: str, count: int, seed: int) -> list[bytes]:
    if kind == "hl7":
        return orders(count, seed)
    if kind == "fhir":
        return fhir_bundles(count, seed)
    factory = ReferralFactory(seed=seed)
    return [factory.body(MIX)[1] for _ in range(count)]


class Bodies:
    """Distinct bodies of each kind, made in batches before they are needed; none is sent twice."""

    def __init__(self, batch: int = 20000) -> None:
        self.batch = batch
        self.pools: dict[str, deque[bytes]] = {}
        self.seed = int(time.time() * 1000) % 100000

    def ready(self, kind: str, count: int) -> deque[bytes]:
        """The kind's pool, holding at least ``count`` bodies."""
        pool = self.pools.setdefault(kind, deque())
        if len(pool) < count:
            self.seed += 1
            pool.extend(make_bodies(kind, max(self.batch, count - len(pool)), self.seed))
        return pool


async def connection(
    host: str,
    port: int,
    token: str,
    pool: deque[bytes],
    deadline: float,
    results: list[tuple[int, float]],
    kind: str = "json",
) -> None:
    """One keep-alive connection sending bodies from ``pool`` (shared with the measurement's other
    connections) one after the other until ``deadline``."""
    path, content_type = KINDS[kind]
    reader, writer = await asyncio.open_connection(host, port)
    while time.perf_counter() < deadline and pool:
        body = pool.popleft()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
            f"Authorization: Bearer {token}\r\nIdempotency-Key: {uuid.uuid4().hex}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        started = time.perf_counter()
        try:
            writer.write(head + body)
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.decode().partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            answer = await reader.readexactly(length)
            status = int(status_line.split()[1])
            if (kind == "hl7" and b"MSA|AA|" not in answer) or (
                kind == "fhir" and b"201 Created" not in answer
            ):
                status = 0
        except (OSError, asyncio.IncompleteReadError, IndexError, ValueError):
            results.append((0, time.perf_counter() - started))
            writer.close()
            reader, writer = await asyncio.open_connection(host, port)
            continue
        results.append((status, time.perf_counter() - started))
    writer.close()


async def measure(
    url: str, token: str, connections: int, duration: float, kind: str, bodies: Bodies
) -> dict[str, Any]:
    """``connections`` connections sending ``kind`` requests for ``duration`` seconds."""
    host, port = url.removeprefix("http://").split(":")
    pool = bodies.ready(kind, int(duration * _MOST_PER_SECOND))
    results: list[tuple[int, float]] = []
    started = time.perf_counter()
    deadline = started + duration
    await asyncio.gather(
        *(connection(host, int(port), token, pool, deadline, results, kind) for _ in range(connections))
    )
    elapsed = time.perf_counter() - started
    latencies = sorted(latency for _, latency in results)

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(len(latencies) * p))] * 1000 if latencies else 0.0

    statuses: dict[str, int] = {}
    for status, _ in results:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    errors = sum(count for status, count in statuses.items() if not status.startswith("2"))
    return {
        "requests": len(results),
        "throughput": len(results) / elapsed,
        "p50_ms": pct(0.50),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        "errors": errors,
        "statuses": statuses,
    }


async def once(
    url: str, token: str, connections: int, duration: float, warmup: float, kind: str
) -> dict[str, Any]:
    """A warm-up, then one measurement."""
    bodies = Bodies()
    bodies.ready(kind, int((warmup + duration) * _MOST_PER_SECOND))
    if warmup:
        await measure(url, token, connections, warmup, kind, bodies)
    return await measure(url, token, connections, duration, kind, bodies)


def serve(url: str, token: str) -> None:
    """Answer each request line on stdin with a measurement on stdout, until stdin closes."""
    bodies = Bodies()
    for line in sys.stdin:
        asked = json.loads(line)
        measurement = measure(url, token, asked["connections"], asked["duration"], asked["kind"], bodies)
        print(json.dumps(asyncio.run(measurement)), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", default="")
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--kind", choices=sorted(KINDS), default="json")
    parser.add_argument("--serve", action="store_true", help="measure what each line of stdin asks for")
    args = parser.parse_args()
    if args.serve:
        serve(args.url, args.token)
    else:
        result = asyncio.run(
            once(args.url, args.token, args.connections, args.duration, args.warmup, args.kind)
        )
        print(json.dumps(result))
