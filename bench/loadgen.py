"""A small keep-alive HTTP/1.1 load generator (one process, asyncio) that prints JSON results.

Each request is a distinct realistic referral (90% valid, 7% incomplete, 3% duplicates) with its
own Idempotency-Key. Raw asyncio streams keep the generator's own CPU cost low on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid

from bench.messages import MIX, fhir_bundles, orders
from careops.demo.traffic import ReferralFactory

KINDS = {
    # kind: (path, content type); an HL7 answer counts as an error unless its MSA-1 is AA
    "json": ("/api/v1/referrals", "application/json"),
    "hl7": ("/api/v1/hl7", "application/hl7-v2"),
    "fhir": ("/fhir/r4", "application/fhir+json"),  # an error unless its ServiceRequest is 201
}


async def connection(
    host: str,
    port: int,
    token: str,
    bodies: list[bytes],
    deadline: float,
    results: list[tuple[int, float]],
    kind: str = "json",
) -> None:
    path, content_type = KINDS[kind]
    reader, writer = await asyncio.open_connection(host, port)
    index = 0
    while time.perf_counter() < deadline:
        body = bodies[index % len(bodies)]
        index += 1
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


def make_bodies(kind: str, count: int, seed: int) -> list[bytes]:
    if kind == "hl7":
        return orders(count, seed)
    if kind == "fhir":
        return fhir_bundles(count, seed)
    factory = ReferralFactory(seed=seed)
    return [factory.body(MIX)[1] for _ in range(count)]


async def main(
    url: str, token: str, connections: int, duration: float, warmup: float, kind: str = "json"
) -> dict[str, object]:
    host, port = url.removeprefix("http://").split(":")
    # Every body is made before the warm-up, so that the measurement follows it at once (making
    # 60,000 FHIR Bundles takes seconds, which left the server idle between the two).
    warm_bodies = make_bodies(kind, 20000, int(time.time()))
    bodies = make_bodies(kind, 60000, int(time.time() * 1000) % 100000)
    if warmup:
        warm: list[tuple[int, float]] = []
        share = len(warm_bodies) // connections
        await asyncio.gather(
            *(
                connection(
                    host,
                    int(port),
                    token,
                    warm_bodies[i * share : (i + 1) * share],
                    time.perf_counter() + warmup,
                    warm,
                    kind,
                )
                for i in range(connections)
            )
        )
    share = len(bodies) // connections
    results: list[tuple[int, float]] = []
    started = time.perf_counter()
    await asyncio.gather(
        *(
            connection(
                host, int(port), token, bodies[i * share : (i + 1) * share], started + duration, results, kind
            )
            for i in range(connections)
        )
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


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", default="")
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--kind", choices=sorted(KINDS), default="json")
    args = parser.parse_args()
    result = asyncio.run(main(args.url, args.token, args.connections, args.duration, args.warmup, args.kind))
    print(json.dumps(result))
