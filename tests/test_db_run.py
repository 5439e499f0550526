"""``run()``: hot writes on the DBAPI cursor store exactly what SQLAlchemy's own execution stores."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import bindparam, func, insert, select, text
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.exc import DBAPIError, IntegrityError

from careops.db import Database, _compiled, insert_rows, insert_together, run
from careops.domain.encryption import PREFIX
from careops.domain.models import Base, Document, IntakeItem, new_id, utcnow
from careops.governance.keys import load_field_keys
from careops.migrate import upgrade
from careops.settings import Settings

_items = Base.metadata.tables[IntakeItem.__tablename__]
_ITEM_INSERT = insert(_items)
_documents = Base.metadata.tables[Document.__tablename__]


def _item(**overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": new_id(),
        "channel": "api",
        "sender": None,
        "status": "accepted",
        "reasons": ["missing_field:patient.birth_date"],
        "content_type": "application/json",
        "raw_payload": '{"patient": {"family_name": "Ødegård"}}',
        "payload_sha256": "0" * 64,
        "normalised": {"patient": {"family_name": "Ødegård"}, "priority": "urgent"},
        "location_id": None,
        "case_id": None,
        "received_at": utcnow(),
        "principal_id": "p",
        "idempotency_key": new_id(),
        "response_status": 201,
        "response_body": {"outcome": "case_created"},
    }
    return row | overrides


def _stored(db: Database, item_id: str) -> tuple[Any, ...]:
    """The row as the database holds it (ciphertext) and as the ORM reads it back."""
    with db.engine.connect() as connection:
        raw = connection.exec_driver_sql(
            f"SELECT raw_payload, normalised FROM intake_item WHERE id = '{item_id}'"  # noqa: S608 - a test id
        ).one()
    with db.sessions() as session:
        item = session.get(IntakeItem, item_id)
        assert item is not None
        return tuple(raw), (
            item.raw_payload,
            item.normalised,
            item.reasons,
            item.received_at,
            item.response_body,
        )


def test_run_stores_what_sqlalchemy_stores(db: Database) -> None:
    by_run, by_sqlalchemy = _item(), _item()
    by_sqlalchemy["received_at"] = by_run["received_at"]
    with db.writer() as connection:
        run(connection, _ITEM_INSERT, by_run)
        connection.execute(_ITEM_INSERT, by_sqlalchemy)
    (run_cipher, run_values), (sa_cipher, sa_values) = (
        _stored(db, by_run["id"]),
        _stored(db, by_sqlalchemy["id"]),
    )
    assert run_values == sa_values
    assert run_values[0] == by_run["raw_payload"] and run_values[1] == by_run["normalised"]
    # Encrypted the same way (fresh nonces, so not the same bytes): never the clear text.
    for stored in (*run_cipher, *sa_cipher):
        text = stored.decode() if isinstance(stored, bytes) else stored
        assert text.startswith(PREFIX) and "Ødegård" not in text


def test_run_of_many_rows_and_returning(db: Database) -> None:
    rows = [_item() for _ in range(3)]
    with db.writer() as connection:
        run(connection, _ITEM_INSERT, rows)
        returned = run(connection, insert(_items).returning(_items.c.id), _item(id="returned-id")).fetchall()
    assert returned == [("returned-id",)]
    with db.sessions() as session:
        stored = session.scalars(select(IntakeItem).where(IntakeItem.id.in_([r["id"] for r in rows])))
        assert sorted(i.raw_payload for i in stored) == [r["raw_payload"] for r in rows]


def test_insert_rows_stores_every_row_in_statements_of_up_to_16(db: Database) -> None:
    """40 rows: three multi-row statements (16, 16, 8), with the columns' bind processing."""
    rows = [_item(raw_payload=f"payload {i}") for i in range(40)]
    columns = tuple(rows[0])
    with db.pipelined_writer() as connection:
        insert_rows(connection, _items, columns, rows)
    with db.sessions() as session:
        ids = [r["id"] for r in rows]
        stored = {
            i.id: i.raw_payload for i in session.scalars(select(IntakeItem).where(IntakeItem.id.in_(ids)))
        }
    assert stored == {r["id"]: r["raw_payload"] for r in rows}
    for row in rows[::13]:  # encrypted like any other write
        (cipher, _), (clear, *_) = _stored(db, row["id"])
        assert str(cipher).startswith(PREFIX) and clear == row["raw_payload"]


@pytest.mark.parametrize("writer", ["writer", "pipelined_writer"])
def test_run_raises_sqlalchemys_integrity_error_and_the_transaction_rolls_back(
    db: Database, writer: str
) -> None:
    """In the pipelined writer the error surfaces with the Sync at the end, not at its statement,
    and undoes the writes a read in between had sent already: the same."""
    first = _item()
    with getattr(db, writer)() as connection:
        run(connection, _ITEM_INSERT, first)
    survivor = _item()
    read = select(_items.c.id).where(_items.c.id == bindparam("item_id"))
    with pytest.raises(IntegrityError), getattr(db, writer)() as connection:
        run(connection, _ITEM_INSERT, survivor)
        assert run(connection, read, {"item_id": survivor["id"]}).fetchone() == (survivor["id"],)
        run(connection, _ITEM_INSERT, _item(id=first["id"]))
    with db.sessions() as session:
        assert session.get(IntakeItem, survivor["id"]) is None
    # Nothing is left open on any pooled connection: every later transaction works and commits.
    for _ in range(db.pool_size + 1):
        later = _item()
        with getattr(db, writer)() as connection:
            run(connection, _ITEM_INSERT, later)
        with db.sessions() as session:
            assert session.get(IntakeItem, later["id"]) is not None


def test_run_refuses_to_leave_out_a_column_with_a_python_default(db: Database) -> None:
    row = _item()
    del row["received_at"]  # its default (utcnow) is computed by SQLAlchemy, which run() skips
    with pytest.raises(ValueError, match="Python-side default"), db.writer() as connection:
        run(connection, _ITEM_INSERT, row)


def test_each_database_encrypts_with_its_own_keys(tmp_path: Path) -> None:
    """Bind processors are compiled per database: two databases with different keys each read their own."""
    databases = []
    for name, secret in (("one", "first secret " * 4), ("two", "second secret " * 4)):
        url = f"sqlite:///{tmp_path / name}.db"
        upgrade(url)
        database = Database(url)
        load_field_keys(database, Settings(database_url=url, secret_key=secret))
        databases.append(database)
    try:
        rows = [_item(raw_payload=f"payload of {i}") for i in range(2)]
        for database, row in zip(databases, rows, strict=True):
            with database.writer() as connection:
                run(connection, _ITEM_INSERT, row)
        for database, row in zip(databases, rows, strict=True):
            assert _stored(database, row["id"])[1][0] == row["raw_payload"]
    finally:
        for database in databases:
            database.dispose()


def test_pipelined_writer_commits_writes_and_reads_in_one_transaction(db: Database) -> None:
    """On PostgreSQL the transaction goes in pipeline mode (BEGIN with the first statement, COMMIT
    with the last writes); elsewhere it is ``writer()``."""
    rows = [_item() for _ in range(3)]
    with db.pipelined_writer() as connection:
        run(connection, _ITEM_INSERT, rows[0])
        # A read in the middle sends what is queued and sees it (same transaction).
        read = select(_items.c.id).where(_items.c.id == bindparam("item_id"))
        assert run(connection, read, {"item_id": rows[0]["id"]}).fetchone() == (rows[0]["id"],)
        for row in rows[1:]:
            run(connection, _ITEM_INSERT, row)
    with db.sessions() as session:
        assert all(session.get(IntakeItem, row["id"]) is not None for row in rows)


def test_pipelined_writer_rolls_back_on_an_error_of_the_caller(db: Database) -> None:
    """Also what a read in between sent already (PostgreSQL would commit it with the Sync)."""
    row, before_read = _item(), _item()
    read = select(_items.c.id).where(_items.c.id == bindparam("item_id"))
    with pytest.raises(RuntimeError, match="caller"), db.pipelined_writer() as connection:
        run(connection, _ITEM_INSERT, before_read)
        assert run(connection, read, {"item_id": before_read["id"]}).fetchone() == (before_read["id"],)
        run(connection, _ITEM_INSERT, row)
        raise RuntimeError("the caller failed")
    with db.sessions() as session:
        assert session.get(IntakeItem, row["id"]) is None
        assert session.get(IntakeItem, before_read["id"]) is None
    later = _item()  # the connection is fine for the next transaction, which commits
    with db.pipelined_writer() as connection:
        run(connection, _ITEM_INSERT, later)
    with db.sessions() as session:
        assert session.get(IntakeItem, later["id"]) is not None


def test_run_reads_with_a_statements_own_values(db: Database) -> None:
    """A LIMIT or a literal in the statement is bound by run() itself, beside the row's values."""
    rows = [_item(channel="hl7", sender="run-test") for _ in range(3)]
    with db.writer() as connection:
        run(connection, _ITEM_INSERT, rows)
    query = (
        select(_items.c.id)
        .where(_items.c.channel == "hl7", _items.c.sender == "run-test", _items.c.id != bindparam("not"))
        .order_by(_items.c.id)
        .limit(1)
    )
    with db.pipelined_writer() as connection:
        found = run(connection, query, {"not": min(r["id"] for r in rows)}).fetchall()
    assert found == [(sorted(r["id"] for r in rows)[1],)]
    with pytest.raises(ValueError, match="expanding"), db.writer() as connection:
        run(connection, select(_items.c.id).where(_items.c.id.in_(["a", "b"])), {})


def test_run_binds_a_name_used_twice_and_keeps_a_literal_percent_sign(db: Database) -> None:
    """PostgreSQL gets numbered parameters ($1…): a name used twice is one number, and the percent
    sign of a LIKE pattern in the SQL stays what it was."""
    rows = [_item(channel="hl7", sender=sender) for sender in ("lab%north", "lab-south", "x")]
    with db.writer() as connection:
        run(connection, _ITEM_INSERT, rows)
    query = text(
        "SELECT sender FROM intake_item WHERE (sender LIKE 'lab%' AND sender <> :skip) OR sender = :skip "
        "ORDER BY sender"
    ).bindparams(bindparam("skip"))
    with db.pipelined_writer() as connection:
        found = run(connection, query, {"skip": "lab-south"}).fetchall()
    assert found == [("lab%north",), ("lab-south",)]


def test_numbered_parameters_follow_their_first_use() -> None:
    """What run() sends PostgreSQL: numbered parameters, a name used twice one number, in the
    order of first use, a literal percent sign as it is."""
    query = text("SELECT 1 WHERE a = :x AND b = :y_1 OR c = :x AND d LIKE 'q%'").bindparams(
        bindparam("x"), bindparam("y_1")
    )
    compiled = _compiled(query, PGDialect_psycopg(), ("x", "y_1"))
    assert compiled.raw
    assert compiled.sql == "SELECT 1 WHERE a = $1 AND b = $2 OR c = $1 AND d LIKE 'q%'"
    assert compiled.order == ("x", "y_1")


def _document(item_id: str, name: str) -> dict[str, Any]:
    content = f"letter {name}".encode()
    return {
        "id": new_id(),
        "intake_item_id": item_id,
        "filename": name,
        "content_type": "text/plain",
        "size_bytes": len(content),
        "sha256": "0" * 64,
        "content": content,
        "text": content.decode(),
        "created_at": utcnow(),
    }


def test_insert_together_writes_rows_that_point_at_each_other_in_one_statement(db: Database) -> None:
    """An intake item and the documents that point at it, in one go (one statement on
    PostgreSQL): foreign keys hold once it has run; one pointing at nothing fails it whole."""
    item = _item()
    documents = [_document(item["id"], f"page {i}") for i in range(2)]
    with db.pipelined_writer() as connection:
        insert_together(connection, [(_items, [item]), (_documents, documents), (_items, [])])
    with db.sessions() as session:
        stored = session.scalars(select(Document).where(Document.intake_item_id == item["id"])).all()
        assert sorted(d.text for d in stored) == ["letter page 0", "letter page 1"]
        assert session.get(IntakeItem, item["id"]) is not None
    lost, orphan = _item(), _document("no-such-item", "orphan")
    with pytest.raises(IntegrityError), db.pipelined_writer() as connection:
        insert_together(connection, [(_items, [lost]), (_documents, [orphan])])
    with db.sessions() as session:
        assert session.get(IntakeItem, lost["id"]) is None


def test_insert_together_takes_more_rows_than_one_statement_holds(db: Database) -> None:
    item = _item()
    documents = [_document(item["id"], f"page {i}") for i in range(20)]
    with db.pipelined_writer() as connection:
        insert_together(connection, [(_items, [item]), (_documents, documents)])
    with db.sessions() as session:
        stored = session.scalars(select(Document.id).where(Document.intake_item_id == item["id"])).all()
    assert len(stored) == 20


_BACKEND = text("SELECT pg_backend_pid()")


def _write_one(db: Database) -> int | None:
    """Insert an item with a pipelined writer; its PostgreSQL backend's pid (None on SQLite)."""
    with db.pipelined_writer() as connection:
        run(connection, _ITEM_INSERT, _item())
        if connection.dialect.name != "postgresql":
            return None
        return int(run(connection, _BACKEND, {}).fetchone()[0])


def test_a_pinned_threads_writers_share_one_connection_and_outlive_losing_it(db: Database) -> None:
    postgres = db.engine.dialect.name == "postgresql"
    with db.pinned():
        first, second = _write_one(db), _write_one(db)
        if postgres:
            assert first == second
            with db.pipelined_writer():  # a writer inside a writer checks out its own connection
                assert _write_one(db) != first
            with db.engine.connect() as admin:
                admin.exec_driver_sql(f"SELECT pg_terminate_backend({first})")
            with pytest.raises(DBAPIError):
                _write_one(db)
        after = _write_one(db)  # on a new connection
    assert after != first or not postgres
    with db.sessions() as session:
        stored = session.scalar(select(func.count()).select_from(_items).where(_items.c.channel == "api"))
    assert stored == (4 if postgres else 3)


def test_at_most_half_the_pool_is_pinned(settings: Settings) -> None:
    database = Database(settings.database_url, pool_size=2)  # one connection may be pinned
    holding, release = threading.Event(), threading.Event()

    def pin() -> None:
        with database.pinned():
            holding.set()
            release.wait(10)

    other = threading.Thread(target=pin)
    try:
        with database.pinned():
            pinned_here = database.engine.pool.checkedout()  # type: ignore[attr-defined]
        other.start()
        assert holding.wait(10)
        with database.pinned():
            beside_another = database.engine.pool.checkedout()  # type: ignore[attr-defined]
    finally:
        release.set()
        other.join(10)
        database.dispose()
    pinning = 1 if database.engine.dialect.name == "postgresql" else 0
    assert (pinned_here, beside_another) == (pinning, pinning)
