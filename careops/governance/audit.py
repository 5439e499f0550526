"""The tamper-evident audit log: business events sealed into a SHA-256 hash chain.

Every state change and security-relevant action is a business event, written in the transaction
of the change. ``seal`` then gives each committed event, in commit-independent id order, its place
in the chain: ``seq`` (1, 2, 3, … without gaps), ``prev_hash`` (the previous entry's hash, or 64
zeros for the first) and ``hash`` = SHA-256 of the entry's canonical JSON (``entry_body``), which
includes ``seq`` and ``prev_hash``. Anyone can recompute the chain from an export.

Sealing after commit, by one sealer at a time (an advisory lock on PostgreSQL, the writer queue
on SQLite), keeps the request path free of a global lock: the chain stays correct with any number
of processes writing events. An entry is editable without trace only while unsealed (normally
under a second); ``verify`` reports unsealed entries and their age.

A chain alone can be recomputed by whoever edits it; signed checkpoints of the head (HMAC under
the secret key), written as the chain grows and exportable for safekeeping elsewhere, catch that.
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import hashlib
import hmac
import json
import multiprocessing
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from json.encoder import encode_basestring as _encode_string
from typing import IO, Any

from sqlalchemy import Text, TextClause, bindparam, cast, func, insert, select, text
from sqlalchemy.engine import Connection

from careops.db import Database, canonical_json
from careops.domain.events import EVENT_COLUMNS, Event, EventType, record_events
from careops.domain.models import AuditCheckpoint, Base, BusinessEvent, utcnow

CHAIN_START = "0" * 64
SEAL_BATCH = 5000
MAX_FINDINGS = 100
PARALLEL_MINIMUM = 100_000  # shorter chains are walked in one process
_ADVISORY_LOCK = 0x6361_7265_6F70  # "careop": one sealer at a time on PostgreSQL
_events = Base.metadata.tables[BusinessEvent.__tablename__]
_checkpoints = Base.metadata.tables[AuditCheckpoint.__tablename__]
_CONTENT = (_events.c.id, *(_events.c[name] for name in EVENT_COLUMNS))
SEAL_GROUP = 256  # rows per sealing UPDATE; a remainder goes in halving groups (128, 64, …, 1)


@functools.cache
def _seal_statement(rows: int) -> TextClause:
    """One UPDATE that seals ``rows`` events (a joined VALUES list): one statement per group instead
    of one per event, which made sealing cost the database as much as writing the events."""
    values = ", ".join(
        f"(CAST(:id_{i} AS BIGINT), CAST(:seq_{i} AS BIGINT), :prev_{i}, :hash_{i})" for i in range(rows)
    )
    return text(
        f"WITH v (id, seq, prev_hash, hash) AS (VALUES {values}) "  # noqa: S608 - constants; values are bound
        f"UPDATE {_events.name} SET seq = v.seq, prev_hash = v.prev_hash, hash = v.hash "
        f"FROM v WHERE {_events.name}.id = v.id"
    )


# PostgreSQL seals any number of rows with one statement of four array parameters: its text never
# changes, so it is prepared once (the VALUES lists of SQLite's groups are re-parsed by psycopg and
# planned anew by PostgreSQL each time, which had made sealing half of the worker's CPU).
_SEAL_ARRAYS = text(
    f"UPDATE {_events.name} SET seq = v.seq, prev_hash = v.prev_hash, hash = v.hash "  # noqa: S608 - constant
    "FROM unnest(CAST(:ids AS BIGINT[]), CAST(:seqs AS BIGINT[]), CAST(:prevs AS TEXT[]), "
    "CAST(:hashes AS TEXT[])) AS v (id, seq, prev_hash, hash) "
    f"WHERE {_events.name}.id = v.id"
)


def _write_seals(connection: Connection, seals: list[tuple[int, int, str, str]]) -> None:
    """(event id, seq, prev_hash, hash) for each event: on PostgreSQL in one statement, on SQLite
    in groups of SEAL_GROUP, 128, 64, … 1."""
    if connection.dialect.name == "postgresql":
        ids, seqs, prevs, hashes = (list(column) for column in zip(*seals, strict=True))
        connection.execute(_SEAL_ARRAYS, {"ids": ids, "seqs": seqs, "prevs": prevs, "hashes": hashes})
        return
    start, size = 0, SEAL_GROUP
    while start < len(seals):
        while size > len(seals) - start:
            size //= 2
        group = seals[start : start + size]
        params: dict[str, Any] = {}
        for i, (event_id, seq, prev_hash, digest) in enumerate(group):
            params |= {f"id_{i}": event_id, f"seq_{i}": seq, f"prev_{i}": prev_hash, f"hash_{i}": digest}
        connection.execute(_seal_statement(size), params)
        start += size


def _text(value: str | None) -> str:
    return "null" if value is None else _encode_string(value)


def entry_body(seq: int, prev_hash: str, event: Any, payload_json: str | None = None) -> str:
    """The canonical JSON that is hashed: ``canonical_json`` of the entry (sorted keys, no spaces,
    UTF-8, times in ISO 8601 UTC), written out key by key because it is computed a million times
    by ``verify``. ``payload_json``: the payload's canonical text when the caller already has it.
    """
    payload = canonical_json(event.payload) if payload_json is None else payload_json
    encode = _encode_string  # the columns that are never null skip the None test
    return (
        f'{{"actor":{encode(event.actor)},"case_id":{_text(event.case_id)},'
        f'"correlation_id":{_text(event.correlation_id)},"location_id":{_text(event.location_id)},'
        f'"occurred_at":{encode(event.occurred_at.isoformat())},"payload":{payload},'
        f'"prev_hash":{encode(prev_hash)},"seq":{seq},"subject_id":{encode(event.subject_id)},'
        f'"subject_type":{encode(event.subject_type)},"type":{encode(event.type)}}}'
    )


def entry_hash(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()


def sign(secret_key: str, seq: int, head_hash: str) -> str:
    return hmac.new(secret_key.encode(), f"{seq}:{head_hash}".encode(), hashlib.sha256).hexdigest()


def _head(connection: Connection) -> tuple[int, str]:
    row = connection.execute(
        select(_events.c.seq, _events.c.hash)
        .where(_events.c.seq.is_not(None))
        .order_by(_events.c.seq.desc())
        .limit(1)
    ).first()
    return (int(row.seq), str(row.hash)) if row else (0, CHAIN_START)


def seal(db: Database, secret_key: str | None = None, limit: int = SEAL_BATCH) -> int:
    """Seal up to ``limit`` committed events; with ``secret_key``, also sign the new head.

    Returns how many were sealed (0 also when another sealer holds the chain right now).
    """
    with db.writer() as connection:
        if connection.dialect.name == "postgresql" and not connection.scalar(
            select(func.pg_try_advisory_xact_lock(_ADVISORY_LOCK))
        ):
            return 0
        seq, prev_hash = _head(connection)
        rows = connection.execute(
            select(*_CONTENT).where(_events.c.seq.is_(None)).order_by(_events.c.id).limit(limit)
        ).all()
        if not rows:
            return 0
        sealed = []
        for row in rows:
            seq += 1
            digest = entry_hash(entry_body(seq, prev_hash, row))
            sealed.append((row.id, seq, prev_hash, digest))
            prev_hash = digest
        _write_seals(connection, sealed)
        if secret_key is not None:
            _sign_head(connection, secret_key, seq, prev_hash)
        return len(rows)


def _sign_head(connection: Connection, secret_key: str, seq: int, head_hash: str) -> dict[str, Any]:
    checkpoint = {
        "seq": seq,
        "hash": head_hash,
        "signature": sign(secret_key, seq, head_hash),
        "created_at": utcnow(),
    }
    connection.execute(insert(_checkpoints), checkpoint)
    return checkpoint


def seal_all(db: Database, secret_key: str) -> int:
    """Seal everything committed so far, signing the head of each batch (``careops audit seal``)."""
    total = 0
    while sealed := seal(db, secret_key):
        total += sealed
    return total


class Sealer:
    """The worker's sealing loop: seals often, signs a checkpoint every ``checkpoint_seconds``."""

    def __init__(self, db: Database, secret_key: str, checkpoint_seconds: float) -> None:
        self.db = db
        self.secret_key = secret_key
        self.checkpoint_seconds = checkpoint_seconds
        self._last_checkpoint = 0.0

    def seal_once(self) -> int:
        now = time.monotonic()
        due = now - self._last_checkpoint >= self.checkpoint_seconds
        sealed = seal(self.db, self.secret_key if due else None)
        if sealed and due:
            self._last_checkpoint = now
        return sealed


@dataclass
class Finding:
    seq: int | None
    event_id: int | None
    problem: str

    def __str__(self) -> str:
        where = f"entry {self.seq}" if self.seq is not None else "the chain"
        return (
            f"{where} (event id {self.event_id}): {self.problem}"
            if self.event_id
            else f"{where}: {self.problem}"
        )


@dataclass
class VerifyReport:
    entries: int = 0
    head_seq: int = 0
    head_hash: str = CHAIN_START
    checkpoints: int = 0
    unsealed: int = 0
    oldest_unsealed_seconds: float | None = None
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings


def _sealed(connection: Connection, low: int, high: int, batch: int = 20_000) -> Iterator[Any]:
    """Sealed entries with ``low <= seq <= high`` in chain order, in batches, payloads as stored text.

    On PostgreSQL the rows come straight from the driver (named tuples, times in UTC), which
    halves the Python work per entry compared with SQLAlchemy rows; ``verify`` reads millions.
    """
    content = [c for c in _CONTENT if c.name != "payload"]
    payload_text = cast(_events.c.payload, Text).label("payload_text")
    columns = (*content, payload_text, _events.c.seq, _events.c.prev_hash, _events.c.hash)
    query = select(*columns).where(_events.c.seq > bindparam("after"), _events.c.seq <= high)
    query = query.order_by(_events.c.seq).limit(batch)
    fetch = _driver_fetch(connection, query) if connection.dialect.name == "postgresql" else None
    after = low - 1
    while True:
        rows = fetch(after) if fetch else connection.execute(query, {"after": after}).all()
        yield from rows
        if len(rows) < batch:
            return
        after = rows[-1].seq


def _driver_fetch(connection: Connection, query: Any) -> Callable[[int], list[Any]]:
    from psycopg.rows import namedtuple_row

    connection.exec_driver_sql("SET LOCAL TIME ZONE 'UTC'")  # ends with this transaction
    compiled = query.compile(dialect=connection.dialect)
    sql, params = str(compiled), dict(compiled.params)
    driver = connection.connection.driver_connection
    assert driver is not None
    cursor = driver.cursor(row_factory=namedtuple_row)

    def fetch(after: int) -> list[Any]:
        cursor.execute(sql, {**params, "after": after})
        rows: list[Any] = cursor.fetchall()
        return rows

    return fetch


@dataclass
class _Segment:
    """What walking one range of the chain found; ranges are walked apart and joined after."""

    first: tuple[int, str, int] | None = None  # (seq, prev_hash, event id) of its first entry
    last: tuple[int, str] | None = None  # (seq, hash) of its last entry
    entries: int = 0
    findings: list[Finding] = field(default_factory=list)
    hashes_at: dict[int, str] = field(default_factory=dict)


def _link(previous: tuple[int, str], seq: int, prev_hash: str, event_id: int | None) -> list[Finding]:
    found = []
    if seq != previous[0] + 1:
        found.append(Finding(seq, event_id, f"entries {previous[0] + 1} to {seq - 1} are missing (deleted)"))
    if prev_hash != previous[1]:
        found.append(
            Finding(seq, event_id, "does not link to the entry before it (inserted, deleted or reordered)")
        )
    return found


def _walk(
    connection: Connection, low: int, high: int, watched: set[int], tick: Callable[[int], None]
) -> _Segment:
    segment = _Segment()
    previous: tuple[int, str] | None = None
    for row in _sealed(connection, low, high):
        segment.entries += 1
        if previous is None:
            segment.first = (row.seq, row.prev_hash, row.id)
        elif len(segment.findings) < MAX_FINDINGS:
            segment.findings += _link(previous, row.seq, row.prev_hash, row.id)
        if not _hash_matches(row) and len(segment.findings) < MAX_FINDINGS:
            segment.findings.append(
                Finding(row.seq, row.id, "its content no longer matches its hash (altered)")
            )
        if row.seq in watched:
            segment.hashes_at[row.seq] = row.hash
        previous = (row.seq, row.hash)
        if segment.entries % 10_000 == 0:
            tick(10_000)
    segment.last = previous
    return segment


_shared_progress: Any = None


def _init_walker(progress: Any) -> None:
    global _shared_progress
    _shared_progress = progress


def _walk_apart(url: str, low: int, high: int, watched: set[int]) -> _Segment:
    """A range walked in a process of its own (``verify`` with several processes)."""

    def tick(done: int) -> None:
        with _shared_progress.get_lock():
            _shared_progress.value += done

    db = Database(url)
    try:
        with db.engine.connect() as connection:
            return _walk(connection, low, high, watched, tick)
    finally:
        db.dispose()


def _walk_all(
    db: Database, head: int, watched: set[int], processes: int, progress: Callable[[int], None]
) -> list[_Segment]:
    """The chain's segments in order: one walked here, or ``processes`` ranges walked at once."""
    if processes <= 1 or head < PARALLEL_MINIMUM:
        done = 0

        def tick(count: int) -> None:
            nonlocal done
            done += count
            progress(done)

        with db.engine.connect() as connection:
            return [_walk(connection, 1, head, watched, tick)]
    context = multiprocessing.get_context("spawn")
    counter = context.Value("q", 0)
    step = -(-head // processes)
    bounds = [(low, min(head, low + step - 1)) for low in range(1, head + 1, step)]
    with ProcessPoolExecutor(
        processes, mp_context=context, initializer=_init_walker, initargs=(counter,)
    ) as pool:
        futures = [pool.submit(_walk_apart, db.url, low, high, watched) for low, high in bounds]
        while not all(f.done() for f in futures):
            progress(counter.value)
            time.sleep(0.2)
        return [f.result() for f in futures]


def verify(
    db: Database,
    secret_key: str,
    expected_head: tuple[int, str] | None = None,
    progress: Callable[[int, int], None] | None = None,
    processes: int = 1,
) -> VerifyReport:
    """Walk the chain: every entry's hash, every link, every signed checkpoint, the expected head.

    Detects an edited, deleted, inserted or reordered entry (by hash, gap or broken link), a
    rewritten chain (against the checkpoints) and a truncated tail (a checkpoint or the expected
    head beyond the end). With ``processes`` > 1 a long chain is walked in that many ranges at
    once. ``progress(done, total)`` is called as entries are checked. Findings come in chain order.
    """
    report = VerifyReport()
    with db.engine.connect() as connection:
        total = connection.scalar(select(func.count()).where(_events.c.seq.is_not(None))) or 0
        head = connection.scalar(select(func.max(_events.c.seq))) or 0
        checkpoints = {row.seq: row for row in connection.execute(select(_checkpoints))}
        unsealed = connection.execute(
            select(func.count(), func.min(_events.c.occurred_at)).where(_events.c.seq.is_(None))
        ).one()
    report.unsealed = int(unsealed[0])
    if unsealed[1] is not None:
        report.oldest_unsealed_seconds = (utcnow() - unsealed[1]).total_seconds()
    watched = set(checkpoints) | ({expected_head[0]} if expected_head else set())

    def walked(done: int) -> None:
        if progress:
            progress(done, total)

    previous = (0, CHAIN_START)
    hashes_at: dict[int, str] = {}
    for segment in _walk_all(db, head, watched, processes, walked):
        if segment.first is not None:
            report.findings += _link(previous, *segment.first)
        report.findings += segment.findings
        report.entries += segment.entries
        hashes_at |= segment.hashes_at
        previous = segment.last or previous
    report.head_seq, report.head_hash = previous
    report.checkpoints = len(checkpoints)
    report.findings += _check_heads(secret_key, checkpoints, expected_head, hashes_at, report.head_seq)
    report.findings = sorted(report.findings, key=lambda f: f.seq or 0)[:MAX_FINDINGS]
    walked(report.entries)
    return report


def _check_heads(
    secret_key: str,
    checkpoints: dict[int, Any],
    expected_head: tuple[int, str] | None,
    hashes_at: dict[int, str],
    head_seq: int,
) -> list[Finding]:
    """The chain against its signed checkpoints and against a head kept elsewhere."""
    found = []
    for seq, checkpoint in sorted(checkpoints.items()):
        if not hmac.compare_digest(checkpoint.signature, sign(secret_key, seq, checkpoint.hash)):
            found.append(Finding(seq, None, "the checkpoint's signature is wrong (forged or another key)"))
        elif seq > head_seq:
            found.append(
                Finding(seq, None, f"a signed checkpoint exists but the chain ends at {head_seq} (truncated)")
            )
        elif hashes_at.get(seq) != checkpoint.hash:
            found.append(
                Finding(seq, None, "differs from its signed checkpoint (the chain up to here was rewritten)")
            )
    if expected_head is not None:
        seq, head_hash = expected_head
        if seq > head_seq:
            found.append(
                Finding(
                    seq, None, f"the expected head is beyond the end of the chain at {head_seq} (truncated)"
                )
            )
        elif hashes_at.get(seq) != head_hash:
            found.append(
                Finding(seq, None, "differs from the expected head (the chain up to here was rewritten)")
            )
    return found


def _hash_matches(row: Any) -> bool:
    """Whether a sealed entry still has the content it was sealed with.

    Fast path: the payload as stored (canonical when written by careops). Otherwise the payload
    is parsed and spelt canonically, as for rows stored before payloads were kept as written.
    """
    if entry_hash(entry_body(row.seq, row.prev_hash, row, row.payload_text)) == row.hash:
        return True
    canonical = canonical_json(json.loads(row.payload_text))
    return bool(entry_hash(entry_body(row.seq, row.prev_hash, row, canonical)) == row.hash)


def chain_status(db: Database) -> dict[str, Any]:
    """Where the chain stands, read cheaply (``verify`` walks it): the last sealed entry and when
    its event happened, how many events wait to be sealed, and the last signed checkpoint."""
    with db.engine.connect() as connection:
        head = connection.execute(
            select(_events.c.seq, _events.c.occurred_at)
            .where(_events.c.seq.is_not(None))
            .order_by(_events.c.seq.desc())
            .limit(1)
        ).first()
        unsealed = connection.scalar(select(func.count()).where(_events.c.seq.is_(None))) or 0
        checkpoint = connection.execute(
            select(_checkpoints.c.seq, _checkpoints.c.created_at).order_by(_checkpoints.c.seq.desc()).limit(1)
        ).first()
    return {
        "head_seq": head.seq if head else 0,
        "head_at": head.occurred_at.isoformat() if head else None,
        "unsealed": int(unsealed),
        "checkpoint_seq": checkpoint.seq if checkpoint else None,
        "checkpoint_at": checkpoint.created_at.isoformat() if checkpoint else None,
    }


def checkpoint_head(db: Database, secret_key: str) -> dict[str, Any] | None:
    """Seal what is committed, then the signed checkpoint of the chain's head (signed now if the
    worker sealed it between its periodic checkpoints); None for an empty chain."""
    seal_all(db, secret_key)
    with db.writer() as connection:
        seq, head_hash = _head(connection)
        if seq == 0:
            return None
        row = connection.execute(select(_checkpoints).where(_checkpoints.c.seq == seq)).first()
        checkpoint = dict(row._mapping) if row else _sign_head(connection, secret_key, seq, head_hash)
    return {**checkpoint, "created_at": checkpoint["created_at"].isoformat()}


EXPORT_FIELDS = ("seq", "prev_hash", "hash", "occurred_at", *(c for c in EVENT_COLUMNS if c != "occurred_at"))


def export(
    db: Database, out: IO[str], *, start: dt.datetime | None, end: dt.datetime | None, fmt: str, actor: str
) -> int:
    """Write sealed entries with ``start <= occurred_at < end`` as JSON lines or CSV; audited.

    Each JSON line holds every field its hash covers, so the chain can be checked independently:
    ``hash == sha256(canonical JSON of the line without "hash")``.
    """
    query = select(*_CONTENT, _events.c.seq, _events.c.prev_hash, _events.c.hash).where(
        _events.c.seq.is_not(None)
    )
    if start:
        query = query.where(_events.c.occurred_at >= start)
    if end:
        query = query.where(_events.c.occurred_at < end)
    writer = csv.DictWriter(out, fieldnames=EXPORT_FIELDS) if fmt == "csv" else None
    if writer:
        writer.writeheader()
    count = 0
    with db.engine.connect() as connection:
        for row in connection.execute(query.order_by(_events.c.seq)):
            record = {name: getattr(row, name) for name in EXPORT_FIELDS}
            record["occurred_at"] = row.occurred_at.isoformat()
            if writer:
                writer.writerow({**record, "payload": json.dumps(row.payload, sort_keys=True)})
            else:
                out.write(
                    json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n"
                )
            count += 1
    with db.writer() as connection:
        record_events(
            connection,
            Event(
                EventType.AUDIT_EXPORTED,
                subject_type="audit",
                subject_id="chain",
                actor=actor,
                payload={
                    "format": fmt,
                    "entries": count,
                    "from": start.isoformat() if start else None,
                    "to": end.isoformat() if end else None,
                },
            ),
        )
    return count
