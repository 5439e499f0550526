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
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.engine import Connection

from careops.db import Database
from careops.domain.events import Event, EventType, record_events
from careops.domain.models import AuditCheckpoint, Base, BusinessEvent, utcnow

CHAIN_START = "0" * 64
SEAL_BATCH = 5000
MAX_FINDINGS = 100
_ADVISORY_LOCK = 0x6361_7265_6F70  # "careop": one sealer at a time on PostgreSQL
_events = Base.metadata.tables[BusinessEvent.__tablename__]
_checkpoints = Base.metadata.tables[AuditCheckpoint.__tablename__]
_CONTENT = (
    _events.c.id,
    _events.c.occurred_at,
    _events.c.type,
    _events.c.subject_type,
    _events.c.subject_id,
    _events.c.case_id,
    _events.c.location_id,
    _events.c.actor,
    _events.c.correlation_id,
    _events.c.payload,
)
_SEAL = (
    update(_events)
    .where(_events.c.id == bindparam("event_id"))
    .values(seq=bindparam("new_seq"), prev_hash=bindparam("new_prev_hash"), hash=bindparam("new_hash"))
)


def entry_body(seq: int, prev_hash: str, event: Any) -> str:
    """The canonical JSON that is hashed: sorted keys, no spaces, UTF-8, times in ISO 8601 UTC."""
    return json.dumps(
        {
            "seq": seq,
            "prev_hash": prev_hash,
            "occurred_at": event.occurred_at.isoformat(),
            "type": event.type,
            "subject_type": event.subject_type,
            "subject_id": event.subject_id,
            "case_id": event.case_id,
            "location_id": event.location_id,
            "actor": event.actor,
            "correlation_id": event.correlation_id,
            "payload": event.payload,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
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
            sealed.append(
                {"event_id": row.id, "new_seq": seq, "new_prev_hash": prev_hash, "new_hash": digest}
            )
            prev_hash = digest
        connection.execute(_SEAL, sealed)
        if secret_key is not None:
            connection.execute(
                insert(_checkpoints),
                {
                    "seq": seq,
                    "hash": prev_hash,
                    "signature": sign(secret_key, seq, prev_hash),
                    "created_at": utcnow(),
                },
            )
        return len(rows)


def seal_all(db: Database, secret_key: str) -> int:
    """Seal everything committed so far and sign the head (``careops audit seal``)."""
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

    def add(self, finding: Finding) -> None:
        if len(self.findings) < MAX_FINDINGS:
            self.findings.append(finding)


def _sealed(connection: Connection, batch: int = 20_000) -> Iterator[Any]:
    """Sealed entries in chain order, streamed in batches by ``seq`` (no server-side cursor needed)."""
    after = 0
    columns = (*_CONTENT, _events.c.seq, _events.c.prev_hash, _events.c.hash)
    while True:
        rows = connection.execute(
            select(*columns).where(_events.c.seq > after).order_by(_events.c.seq).limit(batch)
        ).all()
        yield from rows
        if len(rows) < batch:
            return
        after = rows[-1].seq


def verify(
    db: Database,
    secret_key: str,
    expected_head: tuple[int, str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> VerifyReport:
    """Walk the chain: every entry's hash, every link, every signed checkpoint, the expected head.

    Detects an edited, deleted, inserted or reordered entry (by hash, gap or broken link), a
    rewritten chain (against the checkpoints) and a truncated tail (a checkpoint or the expected
    head beyond the end). ``progress(done, total)`` is called every 10,000 entries.
    """
    report = VerifyReport()
    with db.engine.connect() as connection:
        total = connection.scalar(select(func.count()).where(_events.c.seq.is_not(None))) or 0
        checkpoints = {row.seq: row for row in connection.execute(select(_checkpoints))}
        unsealed = connection.execute(
            select(func.count(), func.min(_events.c.occurred_at)).where(_events.c.seq.is_(None))
        ).one()
        report.unsealed = int(unsealed[0])
        if unsealed[1] is not None:
            report.oldest_unsealed_seconds = (utcnow() - unsealed[1]).total_seconds()
        previous_seq, previous_hash = 0, CHAIN_START
        watched = set(checkpoints) | ({expected_head[0]} if expected_head else set())
        hashes_at: dict[int, str] = {}
        for row in _sealed(connection):
            report.entries += 1
            if row.seq != previous_seq + 1:
                report.add(
                    Finding(
                        row.seq, row.id, f"entries {previous_seq + 1} to {row.seq - 1} are missing (deleted)"
                    )
                )
            if row.prev_hash != previous_hash:
                report.add(
                    Finding(
                        row.seq,
                        row.id,
                        "does not link to the entry before it (inserted, deleted or reordered)",
                    )
                )
            if entry_hash(entry_body(row.seq, row.prev_hash, row)) != row.hash:
                report.add(Finding(row.seq, row.id, "its content no longer matches its hash (altered)"))
            if row.seq in watched:
                hashes_at[row.seq] = row.hash
            previous_seq, previous_hash = row.seq, row.hash
            if progress and report.entries % 10_000 == 0:
                progress(report.entries, total)
    report.head_seq, report.head_hash = previous_seq, previous_hash
    report.checkpoints = len(checkpoints)
    for seq, checkpoint in sorted(checkpoints.items()):
        if not hmac.compare_digest(checkpoint.signature, sign(secret_key, seq, checkpoint.hash)):
            report.add(Finding(seq, None, "the checkpoint's signature is wrong (forged or another key)"))
        elif seq > report.head_seq:
            report.add(
                Finding(
                    seq,
                    None,
                    f"a signed checkpoint exists but the chain ends at {report.head_seq} (truncated)",
                )
            )
        elif hashes_at.get(seq) != checkpoint.hash:
            report.add(
                Finding(seq, None, "differs from its signed checkpoint (the chain up to here was rewritten)")
            )
    if expected_head is not None:
        seq, head_hash = expected_head
        if seq > report.head_seq:
            report.add(
                Finding(
                    seq,
                    None,
                    f"the expected head is beyond the end of the chain at {report.head_seq} (truncated)",
                )
            )
        elif hashes_at.get(seq) != head_hash:
            report.add(
                Finding(seq, None, "differs from the expected head (the chain up to here was rewritten)")
            )
    if progress:
        progress(report.entries, total)
    return report


def latest_checkpoint(db: Database) -> dict[str, Any] | None:
    with db.engine.connect() as connection:
        row = connection.execute(select(_checkpoints).order_by(_checkpoints.c.seq.desc()).limit(1)).first()
    if row is None:
        return None
    return {
        "seq": row.seq,
        "hash": row.hash,
        "signature": row.signature,
        "created_at": row.created_at.isoformat(),
    }


EXPORT_FIELDS = (
    "seq",
    "prev_hash",
    "hash",
    "occurred_at",
    "type",
    "subject_type",
    "subject_id",
    "case_id",
    "location_id",
    "actor",
    "correlation_id",
    "payload",
)


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
