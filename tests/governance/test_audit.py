"""The audit chain: sealing, and every kind of tampering caught by `verify` (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import itertools
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import delete, select, text, update

from careops.db import Database, canonical_json
from careops.domain.events import Event, EventType, record_events
from careops.domain.models import AuditCheckpoint, BusinessEvent
from careops.governance import audit
from careops.governance.audit import CHAIN_START, entry_body, entry_hash, export, seal, seal_all, sign, verify
from careops.settings import Settings

KEY = "k" * 40


@pytest.fixture
def db(empty_db: Database) -> Database:
    """No demo organisation: the event log starts empty."""
    return empty_db


def write_events(db: Database, count: int, subject: str = "s") -> None:
    with db.writer() as connection:
        record_events(
            connection,
            *(
                Event(EventType.CASE_TRANSITIONED, "case", f"{subject}{i}", actor="test", payload={"n": i})
                for i in range(count)
            ),
        )


def chain(db: Database) -> list[BusinessEvent]:
    with db.sessions() as session:
        return list(
            session.scalars(
                select(BusinessEvent).where(BusinessEvent.seq.is_not(None)).order_by(BusinessEvent.seq)
            )
        )


def problems(db: Database, expected: tuple[int, str] | None = None) -> list[str]:
    return [str(f) for f in verify(db, KEY, expected).findings]


def test_sealing_links_every_event_into_one_chain(db: Database) -> None:
    write_events(db, 5)
    assert seal(db, KEY) == 5
    write_events(db, 3, "t")
    assert seal(db, KEY) == 3 and seal(db, KEY) == 0
    entries = chain(db)
    assert [e.seq for e in entries] == list(range(1, 9))
    assert entries[0].prev_hash == CHAIN_START
    assert all(later.prev_hash == earlier.hash for earlier, later in itertools.pairwise(entries))
    report = verify(db, KEY)
    assert report.ok and report.entries == 8 and report.checkpoints == 2 and report.head_seq == 8


def test_a_batch_larger_than_a_sealing_group_is_sealed_whole(db: Database) -> None:
    """PostgreSQL seals with one array statement, SQLite in groups of 256, 32, 8, 2, 1 here."""
    write_events(db, 299)
    assert seal(db, KEY) == 299
    entries = chain(db)
    assert [e.seq for e in entries] == list(range(1, 300))
    assert all(later.prev_hash == earlier.hash for earlier, later in itertools.pairwise(entries))
    assert verify(db, KEY).ok


def tamper_edit(db: Database) -> None:
    with db.writer() as connection:
        connection.execute(update(BusinessEvent).where(BusinessEvent.seq == 3).values(actor="someone-else"))


def tamper_delete(db: Database) -> None:
    with db.writer() as connection:
        connection.execute(delete(BusinessEvent).where(BusinessEvent.seq == 3))


def tamper_insert(db: Database) -> None:
    with db.writer() as connection:
        connection.execute(text("UPDATE business_event SET seq = seq + 1000 WHERE seq >= 3"))
        connection.execute(text("UPDATE business_event SET seq = seq - 999 WHERE seq >= 1000"))
    write_events(db, 1, "forged")
    with db.writer() as connection:
        forged = connection.scalar(select(BusinessEvent.id).where(BusinessEvent.seq.is_(None)))
        connection.execute(
            update(BusinessEvent)
            .where(BusinessEvent.id == forged)
            .values(seq=3, prev_hash="0" * 64, hash="0" * 64)
        )


def tamper_reorder(db: Database) -> None:
    with db.writer() as connection:
        connection.execute(text("UPDATE business_event SET seq = -1 WHERE seq = 2"))
        connection.execute(text("UPDATE business_event SET seq = 2 WHERE seq = 3"))
        connection.execute(text("UPDATE business_event SET seq = 3 WHERE seq = -1"))


def tamper_rewrite(db: Database) -> None:
    """Edit entry 2 and recompute every hash after it: a consistent chain, but not the signed one."""
    tamper_edit_at = 2
    entries = chain(db)
    with db.writer() as connection:
        previous = entries[tamper_edit_at - 2].hash
        for entry in entries[tamper_edit_at - 1 :]:
            if entry.seq == tamper_edit_at:
                connection.execute(
                    update(BusinessEvent).where(BusinessEvent.id == entry.id).values(actor="rewritten")
                )
                entry.actor = "rewritten"
            digest = entry_hash(entry_body(entry.seq, previous, entry))
            connection.execute(
                update(BusinessEvent)
                .where(BusinessEvent.id == entry.id)
                .values(prev_hash=previous, hash=digest)
            )
            previous = digest


def tamper_truncate(db: Database) -> None:
    with db.writer() as connection:
        connection.execute(delete(BusinessEvent).where(BusinessEvent.seq >= 5))


def tamper_forge_checkpoint(db: Database) -> None:
    with db.writer() as connection:
        connection.execute(text("UPDATE audit_checkpoint SET signature = :s"), {"s": "f" * 64})


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        (tamper_edit, "entry 3 (event id 3): its content no longer matches its hash (altered)"),
        (tamper_delete, "entry 4 (event id 4): entries 3 to 3 are missing (deleted)"),
        (tamper_insert, "entry 3"),
        (tamper_reorder, "entry 2"),
        (tamper_rewrite, "entry 6: differs from its signed checkpoint (the chain up to here was rewritten)"),
        (tamper_truncate, "entry 6: a signed checkpoint exists but the chain ends at 4 (truncated)"),
        (tamper_forge_checkpoint, "entry 6: the checkpoint's signature is wrong (forged or another key)"),
    ],
)
def test_every_kind_of_tampering_is_caught_and_named(
    db: Database, tamper: Callable[[Database], None], expected: str
) -> None:
    write_events(db, 6)
    seal(db, KEY)
    assert problems(db) == []
    tamper(db)
    found = problems(db)
    assert found, "tampering went unnoticed"
    assert found[0].startswith(expected), found


def test_a_truncated_tail_without_checkpoints_is_caught_by_the_exported_head(db: Database) -> None:
    write_events(db, 6)
    seal(db)
    head = chain(db)[-1]
    tamper_truncate(db)
    assert problems(db) == []
    assert problems(db, (6, str(head.hash))) == [
        "entry 6: the expected head is beyond the end of the chain at 4 (truncated)"
    ]


def test_the_export_lets_anyone_recompute_the_chain(db: Database) -> None:
    write_events(db, 4)
    seal_all(db, KEY)
    buffer = io.StringIO()
    assert export(db, buffer, start=None, end=None, fmt="jsonl", actor="test") == 4
    previous = "0" * 64
    for line in buffer.getvalue().splitlines():
        record = json.loads(line)
        claimed = record.pop("hash")
        canonical = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert record["prev_hash"] == previous
        assert hashlib.sha256(canonical.encode()).hexdigest() == claimed
        previous = claimed
    with db.sessions() as session:
        exported = session.scalars(select(BusinessEvent).where(BusinessEvent.type == "audit.exported")).one()
    assert exported.payload["entries"] == 4 and exported.actor == "test"


def test_the_checkpoint_signature_is_an_hmac_of_seq_and_hash(db: Database) -> None:
    write_events(db, 2)
    seal(db, KEY)
    with db.sessions() as session:
        checkpoint = session.scalars(select(AuditCheckpoint)).one()
    assert (
        checkpoint.signature == sign(KEY, 2, checkpoint.hash) != sign("another-key" * 4, 2, checkpoint.hash)
    )


def careops(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"CAREOPS_DATABASE_URL": settings.database_url, "CAREOPS_SECRET_KEY": KEY, "PATH": ""}
    return subprocess.run(
        [str(Path(sys.executable).parent / "careops"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_cli_verifies_exports_and_names_the_broken_entry(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    write_events(db, 6)
    checkpoint = careops(settings, "audit", "checkpoint")
    assert checkpoint.returncode == 0, checkpoint.stderr
    head = json.loads(checkpoint.stdout)
    assert head["seq"] == 6
    verified = careops(settings, "audit", "verify", "--expect", f"{head['seq']}:{head['hash']}")
    assert verified.returncode == 0 and "the audit chain is intact" in verified.stderr
    exported = careops(
        settings, "audit", "export", "--format", "csv", "--output", str(tmp_path / "audit.csv")
    )
    assert exported.returncode == 0 and "exported 6 entries" in exported.stderr
    assert (tmp_path / "audit.csv").read_text().splitlines()[0].startswith("seq,prev_hash,hash,occurred_at")
    tamper_edit(db)
    broken = careops(settings, "audit", "verify")
    assert broken.returncode == 1
    assert "broken: entry 3 (event id 3): its content no longer matches its hash (altered)" in broken.stderr


@given(
    required=st.lists(st.text(), min_size=4, max_size=4),
    optional=st.lists(st.one_of(st.none(), st.text()), min_size=3, max_size=3),
    payload=st.dictionaries(
        st.text(), st.one_of(st.none(), st.text(), st.integers(), st.booleans()), max_size=4
    ),
    seq=st.integers(min_value=1, max_value=2**62),
    moment=st.datetimes(timezones=st.just(dt.UTC)),
)
def test_the_hand_written_body_is_the_canonical_json_of_the_entry(
    required: list[str], optional: list[str | None], payload: dict[str, object], seq: int, moment: dt.datetime
) -> None:
    actor, subject_id, subject_type, event_type = required  # NOT NULL columns
    case_id, correlation_id, location_id = optional
    entry = {
        "actor": actor,
        "case_id": case_id,
        "correlation_id": correlation_id,
        "location_id": location_id,
        "occurred_at": moment.isoformat(),
        "payload": payload,
        "prev_hash": "a" * 64,
        "seq": seq,
        "subject_id": subject_id,
        "subject_type": subject_type,
        "type": event_type,
    }
    row = SimpleNamespace(**{**entry, "occurred_at": moment})
    assert entry_body(seq, "a" * 64, row) == canonical_json(entry)


def test_verifying_in_parallel_ranges_finds_the_same(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit, "PARALLEL_MINIMUM", 0)
    write_events(db, 9)
    seal(db, KEY)
    intact = verify(db, KEY, processes=3)
    assert intact.ok and intact.entries == 9 and intact.head_seq == 9
    tamper_delete(db)
    assert [str(f) for f in verify(db, KEY, processes=3).findings] == problems(db)
    with db.writer() as connection:  # break the link exactly at the boundary between two ranges
        connection.execute(update(BusinessEvent).where(BusinessEvent.seq == 7).values(prev_hash="e" * 64))
    assert "entry 7 (event id 7): does not link to the entry before it" in " ".join(
        str(f) for f in verify(db, KEY, processes=3).findings
    )


def test_the_checkpoint_command_signs_the_head_even_when_the_worker_sealed_it_unsigned(db: Database) -> None:
    write_events(db, 3)
    seal(db, KEY)
    write_events(db, 2, "later")
    seal(db)  # the worker between two periodic checkpoints
    head = audit.checkpoint_head(db, KEY)
    assert head is not None and head["seq"] == 5 and head["signature"] == sign(KEY, 5, head["hash"])
    assert audit.checkpoint_head(db, KEY) == head
    assert problems(db, (5, head["hash"])) == []
