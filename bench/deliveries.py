"""Deliveries to a fast local receiver, beside a bare loop posting the same requests, and the
recovery of a backlog after an outage.

    .venv/bin/python -m bench.deliveries [--deliveries 5000] [--processes 2] [--backlog 10000]
                                         [--outage 40] [--rounds 3]

On a fresh PostgreSQL database with the demo organisation, an outbound connector ``bench``
subscribed to ``case.created`` and a receiver (uvicorn, one process, answering 200 and counting
idempotency keys). Issue 32's targets:

- *throughput*: ``--deliveries`` sealed ``case.created`` events planned, sent and settled by
  ``--processes`` worker processes running ``Deliverer.run_once`` ≥ 500 deliveries/s; the
  reference posts the same bodies with the same signing in a bare loop (httpx, as many processes
  and threads), in the same run;
- *recovery*: ``--backlog`` deliveries queued while the receiver is down for ``--outage`` seconds
  (the breaker opens, a few deliveries back off); the time from the receiver's return until the
  backlog is delivered ≤ 60 s. A longer outage ends in the same state (the breaker open, probing
  every ``open_for``), so the outage is kept short.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg
import uvicorn
from sqlalchemy import func, select

from bench.intake import console, drop_database, fresh_database
from bench.scheduling import rounds_table
from careops.db import Database
from careops.demo.seed import seed_demo
from careops.domain.deliveries import Delivery
from careops.domain.models import BusinessEvent, Location, new_id, utcnow
from careops.governance.keys import load_field_keys
from careops.governance.signing import create_connector, outbound
from careops.integrations.outbound.delivery import Deliverer
from careops.integrations.outbound.subscriptions import load_text
from careops.migrate import upgrade
from careops.orchestration.deliveries import plan
from careops.settings import Settings

SUBSCRIPTION = """
connectors:
  - name: bench
    kind: webhook
    events: [case.created]
    fields: [service, status]
    retry: {attempts: 50, max_age: 1h, first: 1s, longest: 10s}
    breaker: {failures: 5, open_for: 10s}
"""


def _receiver(port: int) -> None:
    """A fast target: 200 for every POST, the keys it took counted (GET /count)."""
    keys: set[str] = set()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        if scope["method"] == "POST":
            keys.add(dict(scope["headers"]).get(b"idempotency-key", b"").decode())
            body = b""
        else:
            body = str(len(keys)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="error", access_log=False)


def _start_receiver(port: int) -> multiprocessing.Process:
    process = multiprocessing.get_context("spawn").Process(target=_receiver, args=(port,), daemon=True)
    process.start()
    for _ in range(100):
        try:
            httpx.get(f"http://127.0.0.1:{port}/count", timeout=0.5)
            return process
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("the receiver did not start")


def _events(url: str, db: Database, count: int) -> None:
    """``count`` sealed case.created events after the deliveries cursor."""
    with db.sessions() as session:
        place = session.scalars(select(Location.id)).first()
        head = session.scalar(select(func.max(BusinessEvent.seq))) or 0
    now = utcnow()
    with psycopg.connect(url.replace("+psycopg", "")) as connection, connection.cursor() as cursor:
        with cursor.copy(
            "COPY business_event (type, subject_type, subject_id, location_id, actor, payload, occurred_at,"
            " seq, prev_hash, hash) FROM STDIN"
        ) as copy:
            for n in range(count):
                payload = json.dumps({"service": "XRAY-CHEST", "status": "validated", "n": n})
                copy.write_row(
                    (
                        "case.created",
                        "case",
                        new_id(),
                        place,
                        "bench",
                        payload,
                        now,
                        head + n + 1,
                        "0" * 64,
                        "0" * 64,
                    )
                )
        cursor.execute(
            "INSERT INTO automation_cursor (name, seq, updated_at) VALUES ('deliveries', %s, %s)"
            " ON CONFLICT (name) DO UPDATE SET seq = EXCLUDED.seq",
            (head, now),
        )


def _left(db: Database) -> int:
    with db.sessions() as session:
        return int(
            session.scalar(select(func.count()).select_from(Delivery).where(Delivery.status != "delivered"))
            or 0
        )


def _work(url: str, seconds: float, start: Any) -> None:
    """One worker process: rounds of plan, claim, send and settle for ``seconds``."""
    db = Database(url)
    load_field_keys(db, Settings(database_url=url))
    deliverer = Deliverer(db, load_text(SUBSCRIPTION), timeout=2)
    start.wait()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if deliverer.run_once(200) == 0:
            time.sleep(0.05)
    deliverer.close()


def _careops(url: str, db: Database, processes: int, count: int) -> float:
    _events(url, db, count)
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(processes + 1)
    workers = [context.Process(target=_work, args=(url, 600.0, start), daemon=True) for _ in range(processes)]
    for w in workers:
        w.start()
    start.wait()
    began = time.perf_counter()
    while True:
        time.sleep(0.2)
        with db.sessions() as session:
            planned = session.scalar(select(func.count()).select_from(Delivery)) or 0
        if planned >= count and _left(db) == 0:
            break
    elapsed = time.perf_counter() - began
    for w in workers:
        w.terminate()
    with psycopg.connect(url.replace("+psycopg", "")) as connection:
        connection.execute("DELETE FROM delivery")
    return count / elapsed


def _post_share(url: str, count: int, threads: int, start: Any, out: Any) -> None:
    db = Database(url)
    load_field_keys(db, Settings(database_url=url))
    target = outbound(db, "bench")
    client = httpx.Client(timeout=2)

    def one(n: int) -> None:
        body = {
            "delivery_id": new_id(),
            "event": {"id": n, "type": "case.created"},
            "data": {"service": "XRAY-CHEST"},
        }
        raw = json.dumps(body, separators=(",", ":")).encode()
        headers = {
            **target.headers(raw),
            "Content-Type": "application/json",
            "Idempotency-Key": body["delivery_id"],
        }
        assert client.post(target.url, content=raw, headers=headers).is_success

    start.wait()
    began = time.time()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(count)))
    out.put((began, time.time()))


def _bare(url: str, processes: int, count: int) -> float:
    context = multiprocessing.get_context("spawn")
    start, out = context.Barrier(processes), context.Queue()
    workers = [
        context.Process(target=_post_share, args=(url, count // processes, 16, start, out))
        for _ in range(processes)
    ]
    for w in workers:
        w.start()
    spans = [out.get() for _ in workers]
    for w in workers:
        w.join()
    return (count // processes * processes) / (max(e for _, e in spans) - min(b for b, _ in spans))


def _recovery(
    url: str, db: Database, port: int, receiver: multiprocessing.Process, backlog: int, outage: float
) -> tuple[float, multiprocessing.Process]:
    receiver.terminate()
    receiver.join()
    _events(url, db, backlog)
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(3)
    workers = [context.Process(target=_work, args=(url, outage + 300, start), daemon=True) for _ in range(2)]
    for w in workers:
        w.start()
    start.wait()
    time.sleep(outage)
    assert _left(db) > 0
    receiver = _start_receiver(port)
    back = time.perf_counter()
    while _left(db) > 0:
        time.sleep(0.2)
    drained = time.perf_counter() - back
    for w in workers:
        w.terminate()
    return drained, receiver


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--deliveries", type=int, default=5000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--backlog", type=int, default=10_000)
    parser.add_argument("--outage", type=float, default=40.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = fresh_database("postgres", Path(tmp))
        try:
            upgrade(url)
            db = Database(url)
            load_field_keys(db, Settings(database_url=url))
            seed_demo(db)
            port = 18000 + int(time.time()) % 1000
            receiver = _start_receiver(port)
            create_connector(db, "bench", "outbound", f"http://127.0.0.1:{port}/in", actor="bench")
            plan(db, load_text(SUBSCRIPTION))
            results = []
            for _ in range(args.rounds):
                rate = _careops(url, db, args.processes, args.deliveries)
                bare = _bare(url, args.processes, args.deliveries)
                results.append((rate, bare, rate / bare))
            drained, receiver = _recovery(url, db, port, receiver, args.backlog, args.outage)
            receiver.terminate()
            console.print(
                rounds_table(
                    f"Deliveries on PostgreSQL, {dt.date.today()}",
                    ("deliveries/s", "bare loop/s", "ratio"),
                    results,
                )
            )
            console.print(
                f"backlog of {args.backlog:,} after a {args.outage:.0f} s outage: drained {drained:.1f} s"
                " after the receiver came back"
            )
            db.dispose()
        finally:
            drop_database(url)


if __name__ == "__main__":
    main()
