"""Bad input under load: malformed requests on every channel at full speed beside valid traffic.

    .venv/bin/python -m bench.badinput [--duration 20] [--rounds 3] [--backends postgres,sqlite]

Starts `careops serve --workers 2 --mllp-port P` on a fresh database (rate limits off: the flood
is meant to reach the intake) and, per backend:

1. measures the JSON intake's capacity (valid referrals, 4 connections, closed loop);
2. then, each round, sends valid referrals at half that rate (open loop, 4 connections) for
   ``--duration`` seconds alone (the reference), and again for as long with a flood beside them:
   4 connections sending malformed requests as fast as they are answered, drawn from every
   channel (JSON: broken JSON, wrong types, an empty Idempotency-Key, a body over 1 MiB one
   request in ``OVERSIZED_EVERY``; HL7 v2
   over HTTP and over MLLP: junk, a truncated order, a frame without its start block; FHIR: not
   JSON, a wrong resourceType, a null element). The valid requests are at least half of all
   that is sent (the flood is held to the same number of connections);
3. checks that nothing was lost: every answered request is an intake item (accepted) or a
   quarantined one, counted in the database against what was sent; no answer was a 5xx.

Prints, per round, the valid rate alone and beside the flood (the ratio: the issue's ≥ 80%), the
flood's rate, 5xx answers, the server's RSS at the start and end of the flood, and the totals.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

from rich.table import Table
from sqlalchemy import create_engine, func, select

from bench.intake import (
    BIN,
    RunningApp,
    console,
    drop_database,
    free_port,
    fresh_database,
    prepare_careops,
    run_backends,
    start_app,
    tree_rss_mb,
)
from bench.messages import MIX, orders
from careops.demo.traffic import ReferralFactory
from careops.domain.models import IntakeItem
from careops.integrations.inbound.mllp import END_BLOCK, START_BLOCK, frame

CONNECTIONS = 4
# A body over 1 MiB is kept whole (encrypted: ~8 ms of SQLite's single writer, twenty small
# refusals' worth); drawn as often as the others, it made a tenth of the flood's requests and
# nine tenths of its bytes (35 MB/s). One request in 40 is still 2.6 MB/s of oversized bodies.
OVERSIZED_EVERY = 40
ORDER = orders(1, 7)[0]
# (channel, path, content type, extra headers, body): what the flood sends, in turn.
Request = tuple[str, str, str, dict[str, str], bytes]
MALFORMED: list[Request] = [
    ("json", "/api/v1/referrals", "application/json", {}, b'{"location": "north", "patient": '),
    ("json", "/api/v1/referrals", "application/json", {}, b'{"patient": "not an object", "priority": 7}'),
    ("json", "/api/v1/referrals", "application/json", {"Idempotency-Key": ""}, b'{"location": "north"}'),
    ("json", "/api/v1/referrals", "application/json", {}, b'{"x": "' + b"y" * (1024 * 1024 + 10) + b'"}'),
    ("hl7", "/api/v1/hl7", "application/hl7-v2", {}, b"HELLO|not hl7\r"),
    ("hl7", "/api/v1/hl7", "application/hl7-v2", {}, ORDER[:60]),
    ("hl7", "/api/v1/hl7", "application/hl7-v2", {}, b"MSH|^~\\&|A|B|C|D|20260101||ZZZ^Z99|1|P|2.5.1\r"),
    ("fhir", "/fhir/r4/ServiceRequest", "application/fhir+json", {}, b'{"resourceType": '),
    ("fhir", "/fhir/r4/ServiceRequest", "application/fhir+json", {}, b'{"resourceType": "Patient"}'),
    (
        "fhir",
        "/fhir/r4/ServiceRequest",
        "application/fhir+json",
        {},
        b'{"resourceType": "ServiceRequest", "status": null, "intent": "order", "subject": {}}',
    ),
]
MLLP_MALFORMED = [frame(b"junk that is no message"), ORDER + END_BLOCK, frame(ORDER[:40])]


@dataclass
class Tally:
    """Answers by kind: accepted or refused (a refusal must be in quarantine), and 5xx."""

    accepted: int = 0
    refused: int = 0
    server_errors: int = 0
    unanswered: int = 0
    valid_done: int = 0
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: Request, token: str
) -> tuple[int, bytes]:
    _, path, content_type, headers, body = request
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    writer.write(
        (
            f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: {content_type}\r\n"
            f"Authorization: Bearer {token}\r\n{extra}Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        + body
    )
    status_line = await reader.readline()
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
    return int(status_line.split()[1]), await reader.readexactly(length)


def _judge(tally: Tally, channel: str, status: int, answer: bytes) -> None:
    tally.statuses[f"{channel} {status}"] += 1
    if status >= 500:
        tally.server_errors += 1
    elif channel == "hl7":
        tally.accepted += b"MSA|AA|" in answer
        tally.refused += b"MSA|AA|" not in answer
    else:
        tally.accepted += status < 300
        tally.refused += status >= 300


async def _http_sender(
    port: int, token: str, next_request: Callable[[], Request], deadline: float, tally: Tally, pace: float = 0
) -> None:
    """One keep-alive connection: requests one after the other (every ``pace`` s when set)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    due = time.perf_counter()
    while (now := time.perf_counter()) < deadline:
        if pace:
            if now < due:
                await asyncio.sleep(due - now)
            due += pace
        request = next_request()
        started = time.perf_counter()
        try:
            status, answer = await _exchange(reader, writer, request, token)
        except (OSError, asyncio.IncompleteReadError, IndexError, ValueError):
            tally.unanswered += 1
            writer.close()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            continue
        tally.latencies.append(time.perf_counter() - started)
        _judge(tally, request[0], status, answer)
        if pace and status < 300:
            tally.valid_done += 1
    writer.close()


async def _mllp_sender(port: int, deadline: float, tally: Tally) -> None:
    """Malformed frames over MLLP, each answered with an AR before the next."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    turn = 0
    while time.perf_counter() < deadline:
        writer.write(MLLP_MALFORMED[turn % len(MLLP_MALFORMED)])
        turn += 1
        answer = await reader.readuntil(END_BLOCK)
        _judge(tally, "hl7", 200, answer.removeprefix(START_BLOCK))
    writer.close()


def _valid_requests(seed: int) -> Callable[[], Request]:
    factory = ReferralFactory(seed=seed)

    def next_request() -> Request:
        body = factory.body(MIX)[1]
        return ("json", "/api/v1/referrals", "application/json", {"Idempotency-Key": uuid.uuid4().hex}, body)

    return next_request


def _malformed_requests(seed: int) -> Callable[[], Request]:
    """The malformed requests in random order, a body over 1 MiB one time in ``OVERSIZED_EVERY``."""
    rng = random.Random(seed)
    small = [request for request in MALFORMED if len(request[4]) < 1024 * 1024]
    oversized = [request for request in MALFORMED if len(request[4]) >= 1024 * 1024]

    def next_request() -> Request:
        return rng.choice(oversized if rng.randrange(OVERSIZED_EVERY) == 0 else small)

    return next_request


async def _capacity(port: int, token: str, duration: float) -> Tally:
    """Valid referrals on CONNECTIONS connections, each sent when the last is answered."""
    tally = Tally()
    deadline = time.perf_counter() + duration
    valid = _valid_requests(1)
    await asyncio.gather(*(_http_sender(port, token, valid, deadline, tally) for _ in range(CONNECTIONS)))
    return tally


async def _round(
    port: int, mllp_port: int, token: str, rate: float, duration: float, flood: bool, seed: int
) -> tuple[Tally, Tally]:
    valid, bad = Tally(), Tally()
    deadline = time.perf_counter() + duration
    requests = _valid_requests(seed)
    senders = [
        _http_sender(port, token, requests, deadline, valid, pace=CONNECTIONS / rate)
        for _ in range(CONNECTIONS)
    ]
    if flood:
        malformed = _malformed_requests(seed)
        senders += [_http_sender(port, token, malformed, deadline, bad) for _ in range(CONNECTIONS - 1)]
        senders.append(_mllp_sender(mllp_port, deadline, bad))
    await asyncio.gather(*senders)
    return valid, bad


def _items(url: str) -> Counter[str]:
    engine = create_engine(url)
    with engine.connect() as connection:
        rows = connection.execute(select(IntakeItem.status, func.count()).group_by(IntakeItem.status)).all()
    engine.dispose()
    return Counter({str(status): int(count) for status, count in rows})


def bench_backend(backend: str, duration: float, rounds: int, workdir: Path) -> list[dict[str, Any]]:
    url = fresh_database(backend, workdir)
    app: RunningApp | None = None
    try:
        env, token = prepare_careops(url)
        mllp_port = free_port()
        env = {
            **env,
            "CAREOPS_API_REQUESTS_PER_MINUTE_PER_ADDRESS": "0",
            "CAREOPS_API_REQUESTS_PER_MINUTE_PER_TOKEN": "0",
            "CAREOPS_MLLP_PORT": str(mllp_port),
        }
        app = start_app("careops", [str(BIN / "careops"), "serve", "--workers", "2"], env, "/healthz", token)
        totals = asyncio.run(_capacity(app.port, token, 5))
        rate = totals.accepted / 5 / 2
        console.print(f"  {backend}: valid traffic at {rate:.0f} req/s, half the JSON intake's capacity")
        rows = []
        for number in range(rounds):
            alone, _ = asyncio.run(_round(app.port, mllp_port, token, rate, duration, False, 10 + number))
            rss_before = sum(tree_rss_mb(app.process.pid))
            beside, bad = asyncio.run(_round(app.port, mllp_port, token, rate, duration, True, 20 + number))
            rss_after = sum(tree_rss_mb(app.process.pid))
            for tally in (alone, beside, bad):
                for name in ("accepted", "refused", "server_errors", "unanswered"):
                    setattr(totals, name, getattr(totals, name) + getattr(tally, name))
            bad_sent = bad.accepted + bad.refused + bad.server_errors
            rows.append(
                {
                    "backend": backend,
                    "round": number + 1,
                    "valid_alone": alone.valid_done / duration,
                    "valid_beside": beside.valid_done / duration,
                    "ratio": beside.valid_done / max(alone.valid_done, 1),
                    "bad_rps": bad_sent / duration,
                    "bad_share": bad_sent / max(bad_sent + beside.accepted + beside.refused, 1),
                    "p99_beside_ms": sorted(beside.latencies)[int(len(beside.latencies) * 0.99)] * 1000,
                    "server_errors": alone.server_errors + beside.server_errors + bad.server_errors,
                    "rss_before": rss_before,
                    "rss_after": rss_after,
                }
            )
        time.sleep(1)  # the last answers are committed before they are sent; this is margin only
        items = _items(url)
        for row in rows:
            row["sent_answered"] = totals.accepted + totals.refused + totals.server_errors
            row["quarantined"] = items["quarantined"]
            row["refused"] = totals.refused
            row["items_not_quarantined"] = sum(items.values()) - items["quarantined"]
            row["accepted"] = totals.accepted
            row["unanswered"] = totals.unanswered
        return rows
    finally:
        if app is not None:
            app.stop()
        drop_database(url)


def main() -> None:
    rows = run_backends(
        __doc__ or "", "rounds (each: valid alone, then valid beside the flood)", bench_backend, 20, 3
    )
    table = Table(title=f"bad input under load — {os.cpu_count()} cores, {dt.date.today()}")
    columns = [
        "db", "round", "valid alone req/s", "valid beside flood req/s", "ratio", "flood req/s",
        "malformed share", "valid p99 ms (flood)", "5xx", "RSS MB before → after",
    ]  # fmt: skip
    for column in columns:
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(
            r["backend"], str(r["round"]), f"{r['valid_alone']:.0f}", f"{r['valid_beside']:.0f}",
            f"{r['ratio']:.0%}", f"{r['bad_rps']:.0f}", f"{r['bad_share']:.0%}", f"{r['p99_beside_ms']:.0f}",
            str(r["server_errors"]), f"{r['rss_before']:.0f} → {r['rss_after']:.0f}",
        )  # fmt: skip
    console.print(table)
    for backend in dict.fromkeys(r["backend"] for r in rows):
        mine = [r for r in rows if r["backend"] == backend]
        last = mine[-1]
        lost = (last["refused"] - last["quarantined"]) + (last["accepted"] - last["items_not_quarantined"])
        console.print(
            f"{backend}: median ratio {median(r['ratio'] for r in mine):.0%}; "
            f"answered {last['sent_answered']}, "
            f"refused {last['refused']} = quarantined {last['quarantined']}, accepted {last['accepted']} = "
            f"items {last['items_not_quarantined']}; lost {lost}; unanswered {last['unanswered']}"
        )
    out = Path(__file__).parent / "results" / f"badinput-{dt.datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
