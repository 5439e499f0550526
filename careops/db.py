"""Engines and sessions for the system of record (SQLite in WAL mode, or PostgreSQL via psycopg 3)."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import json
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

try:
    import fcntl
except ImportError:  # Windows: writers then queue per process only
    fcntl = None  # type: ignore[assignment]

import psycopg
from sqlalchemy import (
    BindParameter,
    Connection,
    Dialect,
    Engine,
    Table,
    TextClause,
    bindparam,
    create_engine,
    event,
    text,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

_BEGIN_MODE = "sqlite_begin"
T = TypeVar("T")


def canonical_json(value: Any) -> str:
    """JSON with sorted keys, no spaces and UTF-8 text: one spelling per value (what the audit hashes)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def make_engine(url: str, pool_size: int = 10) -> Engine:
    pool = {"pool_size": pool_size, "max_overflow": pool_size}
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            json_serializer=canonical_json,
            **pool,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(url, json_serializer=canonical_json, **pool)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Autocommit at the driver level; SQLAlchemy's "begin" event issues BEGIN itself (below).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    # Writers take the lock up front (BEGIN IMMEDIATE) so that two of them queue on busy_timeout
    # instead of failing mid-transaction; readers stay DEFERRED and never block a writer in WAL mode.
    # Sent on the driver's connection: SQLAlchemy's execution machinery cost more than the BEGIN.
    mode = connection.get_execution_options().get(_BEGIN_MODE, "DEFERRED")
    connection.connection.driver_connection.execute(f"BEGIN {mode}")  # type: ignore[union-attr]


@dataclass(frozen=True)
class _Compiled:
    statement: ClauseElement  # held, so that its id is not reused while this is cached
    sql: str
    # The parameters' order for positional SQL: SQLite's, and PostgreSQL's numbered parameters
    # (``_writing_dialect``), sent by a ``RawCursor`` (``raw``).
    order: tuple[str, ...] | None
    raw: bool
    processors: Mapping[str, Callable[[Any], Any]]
    fixed: Mapping[str, Any]  # the statement's own values (a LIMIT, a literal), not the row's

    def parameters(self, row: Mapping[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        processors = self.processors
        if self.fixed:
            row = {**self.fixed, **row}
        if self.order is not None:
            return tuple(processors[n](row[n]) if n in processors else row[n] for n in self.order)
        return {n: processors[n](v) if n in processors else v for n, v in row.items()}


_COMPILED = "careops_compiled"


def _compiled(statement: ClauseElement, dialect: Dialect, names: tuple[str, ...]) -> _Compiled:
    # Cached on the dialect: bind processors are made for one dialect object (the field keys of
    # one database are attached to its dialect).
    cache: dict[tuple[int, tuple[str, ...]], _Compiled] = dialect.__dict__.setdefault(_COMPILED, {})
    key = (id(statement), names)
    found = cache.get(key)
    if found is not None and found.statement is statement:
        return found
    writing = _writing_dialect(dialect)
    compiled = statement.compile(dialect=writing, column_keys=list(names))
    assert isinstance(compiled, SQLCompiler)  # a DML or text statement
    if getattr(compiled, "insert_prefetch", None):
        raise ValueError("run() needs every column with a Python-side default given a value")
    if "POSTCOMPILE" in compiled.string:
        raise ValueError("run() cannot bind an expanding parameter (IN of a list): give each value a name")
    processors = {}
    fixed = {}
    for name, bind in compiled.binds.items():
        processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if processor is not None:
            processors[name] = processor
        if name not in names and bind.value is not None:
            fixed[name] = bind.value
    order = tuple(compiled.positiontup) if compiled.positiontup is not None else None
    raw = writing is not dialect  # numbered parameters, for a RawCursor
    found = cache[key] = _Compiled(statement, compiled.string, order, raw, processors, fixed)
    return found


_NUMBERED = "careops_numbered"


def _writing_dialect(dialect: Dialect) -> Dialect:
    """The dialect ``run()``'s SQL is written in: on PostgreSQL the same one with PostgreSQL's own
    numbered parameters (``$1``…, SQLAlchemy's ``numeric_dollar``), which a ``RawCursor`` sends as
    they are; psycopg parses SQL with named parameters at every execution once a statement is over
    4 kB or 50 parameters, as the intake's is (a fifth of an HL7 message's CPU)."""
    if dialect.name != "postgresql":
        return dialect
    twin: Dialect | None = dialect.__dict__.get(_NUMBERED)
    if twin is None:
        same_kind: Any = type(dialect)
        twin = dialect.__dict__[_NUMBERED] = same_kind(paramstyle="numeric_dollar")
        twin.server_version_info = dialect.server_version_info
    return twin


def run(
    connection: Connection, statement: ClauseElement, rows: Mapping[str, Any] | Sequence[Mapping[str, Any]]
) -> Any:
    """Execute a statement in ``connection``'s transaction straight on its DBAPI cursor; the cursor.

    For the intake's hot statements: SQLAlchemy's per-execution work (cache key, execution
    context, result set-up) cost about as much as SQLite's own. What it would do for these
    statements is kept: compiled once per dialect and set of parameters, with the columns' bind
    processors (encryption, JSON, time stamps) applied here, and driver errors raised as
    SQLAlchemy's (``IntegrityError``…). Rows come back as plain tuples, without result processing.
    """
    batch = [rows] if isinstance(rows, Mapping) else rows
    compiled = _compiled(statement, connection.dialect, tuple(batch[0]))
    cursor = (
        psycopg.RawCursor(connection.connection.driver_connection)  # type: ignore[arg-type]
        if compiled.raw
        else connection.connection.cursor()
    )
    try:
        if len(batch) == 1:
            cursor.execute(compiled.sql, compiled.parameters(batch[0]))
        else:
            cursor.executemany(compiled.sql, [compiled.parameters(row) for row in batch])  # type: ignore[arg-type]
    except connection.dialect.loaded_dbapi.Error as error:
        raise DBAPIError.instance(
            compiled.sql, None, error, connection.dialect.loaded_dbapi.Error, hide_parameters=True
        ) from error
    return cursor


def values_sql(
    table: Table, columns: tuple[str, ...], rows: int, prefix: str = ""
) -> tuple[str, list[BindParameter[Any]]]:
    """``INSERT INTO table (columns) VALUES (…), …`` for ``rows`` rows, and its typed parameters,
    named ``<prefix><column>_<row>`` (``row_parameters``): one statement for many rows (psycopg's
    ``executemany`` sends one per row). Text with typed parameters, because SQLAlchemy does not
    cache the compilation of a multi-row ``insert().values([...])``; ``_values_insert`` caches it."""
    names = [[f"{prefix}{name}_{i}" for name in columns] for i in range(rows)]
    values = ", ".join("(" + ", ".join(f":{n}" for n in row) + ")" for row in names)
    sql = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES {values}"  # noqa: S608 - constants; values are bound
    parameters = [
        bindparam(n, type_=table.c[name].type) for row in names for n, name in zip(row, columns, strict=True)
    ]
    return sql, parameters


@functools.cache
def _values_insert(table: Table, columns: tuple[str, ...], rows: int) -> TextClause:
    """The multi-row insert of ``values_sql``, compiled once per shape (by ``run``)."""
    sql, parameters = values_sql(table, columns, rows)
    return text(sql).bindparams(*parameters)


def row_parameters(rows: Sequence[Mapping[str, Any]], prefix: str = "") -> dict[str, Any]:
    """The parameters of ``values_sql`` for these rows."""
    return {f"{prefix}{name}_{i}": value for i, row in enumerate(rows) for name, value in row.items()}


_ROWS_PER_INSERT = 16  # bounds the statements compiled (one per row count) and their parameters


def insert_rows(
    connection: Connection, table: Table, columns: tuple[str, ...], rows: Sequence[Mapping[str, Any]]
) -> None:
    """Insert rows (each with exactly ``columns``) in multi-row statements of up to 16 rows."""
    for start in range(0, len(rows), _ROWS_PER_INSERT):
        chunk = rows[start : start + _ROWS_PER_INSERT]
        run(connection, _values_insert(table, columns, len(chunk)), row_parameters(chunk))


class Tail(NamedTuple):
    """A statement that ``insert_together`` can end its own with on PostgreSQL: data-modifying
    CTEs (``name AS (…)``) and a final statement, with their typed parameters, named apart from the
    parts' (``p<k>_…``). ``record_events``' events and their outbox rows are one."""

    ctes: tuple[str, ...]
    final: str
    parameters: tuple[BindParameter[Any], ...]


def insert_together(
    connection: Connection,
    parts: Sequence[tuple[Table, Sequence[Mapping[str, Any]]]],
    then: tuple[Tail, Mapping[str, Any]] | None = None,
) -> None:
    """Insert the rows of each part (a table and rows with the same columns; none is fine), in
    order, then run ``then`` (a ``Tail`` and its parameters' values). On PostgreSQL in one
    statement, every part a data-modifying CTE: foreign keys are checked once the whole statement
    has run, so a row may point at a row of an earlier part. Elsewhere (or with a part of more than
    16 rows), one statement per part (``insert_rows``) and one for ``then``.
    """
    given = [(table, rows) for table, rows in parts if rows]
    if (
        connection.dialect.name != "postgresql"
        or len(given) + (then is not None) < 2
        or any(len(rows) > _ROWS_PER_INSERT for _, rows in given)
    ):
        for table, rows in given:
            insert_rows(connection, table, tuple(rows[0]), rows)
        if then is not None:
            run(connection, _together_insert((), then[0]), then[1])
        return
    shape = tuple((table, tuple(rows[0]), len(rows)) for table, rows in given)
    parameters: dict[str, Any] = {}
    for k, (_, rows) in enumerate(given):
        parameters |= row_parameters(rows, f"p{k}_")
    if then is not None:
        parameters |= then[1]
    run(connection, _together_insert(shape, then[0] if then else None), parameters)


@functools.cache
def _together_insert(shape: tuple[tuple[Table, tuple[str, ...], int], ...], tail: Tail | None) -> TextClause:
    """``insert_together``'s statement for parts of this shape (table, columns, row count), then
    ``tail`` (alone when there are no parts)."""
    inserts = [values_sql(table, columns, rows, f"p{k}_") for k, (table, columns, rows) in enumerate(shape)]
    parameters = [p for _, bound in inserts for p in bound]
    if tail is None:  # the last part is the statement the others lead to
        *inserts, (last, _) = inserts
        tail = Tail((), last, ())
    ctes = [*(f"w{k} AS ({sql})" for k, (sql, _) in enumerate(inserts)), *tail.ctes]
    with_ctes = f"WITH {', '.join(ctes)} " if ctes else ""
    return text(with_ctes + tail.final).bindparams(*parameters, *tail.parameters)


class WriterQueue:
    """Queues SQLite writers: threads on a lock, processes on ``flock`` of ``<database>.writelock``.

    SQLite has one writer at a time, and a writer that finds the database locked polls it with
    back-off sleeps of up to 100 ms (the busy handler); under load that left the database idle
    while writers slept, and made the slowest requests very slow. Blocking locks wake the next
    writer as soon as the current one commits. The kernel drops a killed process's ``flock``.
    Re-entrant within a thread. Without ``fcntl`` (Windows) or a file, threads queue only.
    """

    def __init__(self, database: str | None) -> None:
        self._threads = threading.RLock()
        self._depth = 0
        self._path = f"{database}.writelock" if database and database != ":memory:" and fcntl else None
        self._fd: int | None = None

    def __enter__(self) -> WriterQueue:
        self._threads.acquire()
        self._depth += 1
        if self._depth == 1 and self._path is not None:
            if self._fd is None:
                self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *_exc: object) -> None:
        self._depth -= 1
        if self._depth == 0 and self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._threads.release()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Database:
    """One engine; ``transaction()`` is the unit of work that writes, ``sessions()`` reads.

    ``writer()`` is ``transaction()`` without the ORM, for hot paths written in Core statements;
    ``pipelined_writer()`` is ``writer()`` in as few round trips to PostgreSQL as its reads allow.
    On SQLite both go through ``WriterQueue`` first (see there); as writers then take turns,
    ``writer()`` keeps one connection per process instead of checking one out of the pool each
    time (the check-out cost a fifth of the intake's CPU). ``pinned()`` does the same for one
    thread's pipelined writers on PostgreSQL (an MLLP connection's thread).
    """

    def __init__(self, url: str, pool_size: int = 10) -> None:
        self.url = url
        self.pool_size = pool_size
        self.engine = make_engine(url, pool_size)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._writer_engine = self.engine.execution_options(**{_BEGIN_MODE: "IMMEDIATE"})
        self._writer_sessions = sessionmaker(self._writer_engine, expire_on_commit=False)
        self._write_lock: AbstractContextManager[object] = (
            WriterQueue(self.engine.url.database) if self.engine.dialect.name == "sqlite" else nullcontext()
        )
        self._kept_writer: Connection | None = None
        # psycopg then sends no BEGIN of its own: pipelined_writer() sends it with the first statement.
        self._autocommit_engine = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self._pinned = threading.local()  # its ``connection``: this thread's, while pinned()
        # At most half the pool is pinned, so that pinning threads never starve the others.
        self._pin_slots = threading.BoundedSemaphore(max(1, pool_size // 2))

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with self._write_lock, self._writer_sessions() as session, session.begin():
            yield session

    @contextmanager
    def writer(self) -> Iterator[Connection]:
        with self._write_lock:
            connection = self._turn_connection()
            if connection is None:
                with self._writer_engine.begin() as connection:
                    yield connection
                return
            with connection.begin():
                yield connection

    @contextmanager
    def pipelined_writer(self) -> Iterator[Connection]:
        """``writer()`` whose statements PostgreSQL gets together (psycopg's pipeline mode): every
        write up to the next read in one round trip, the last ones with the pipeline's Sync. Two
        round trips for a transaction with one read, instead of one per statement plus BEGIN and
        COMMIT. In it, a result is read from ``run()``'s cursor (``fetchone()`` sends what is
        queued and waits); a SQLAlchemy result reads nothing in pipeline mode. A driver error is
        raised as SQLAlchemy's, possibly at a later statement than the one that caused it, and the
        transaction rolls back. Elsewhere, ``writer()``.

        The transaction is the pipeline's implicit one, with no BEGIN and COMMIT of its own (two
        statements fewer, a twentieth of an HL7 message's CPU): PostgreSQL runs everything up to a
        Sync as one transaction, a read in the middle flushes without a Sync, and the Sync at the
        end commits it, or rolls it all back after an error. When the caller fails instead, a
        ROLLBACK still inside the pipeline undoes it before that Sync.
        """
        if self.engine.dialect.name != "postgresql":
            with self.writer() as connection:
                yield connection
            return
        error_class = self.engine.dialect.loaded_dbapi.Error
        with self._pipeline_connection() as connection:
            driver = connection.connection.driver_connection
            assert driver is not None  # a connection just checked out
            try:
                with driver.pipeline():
                    try:
                        yield connection
                    except BaseException:
                        # ignored after a failed statement: PostgreSQL rolls back at the Sync anyway
                        driver.cursor().execute("ROLLBACK")
                        raise
            except BaseException as exc:
                if driver.closed or driver.info.transaction_status.name != "IDLE":
                    connection.invalidate()  # lost, or in a state of its own: never back to the pool
                if isinstance(exc, error_class):
                    raise DBAPIError.instance(None, None, exc, error_class, hide_parameters=True) from exc
                raise

    @contextmanager
    def _pipeline_connection(self) -> Iterator[Connection]:
        """This thread's pinned connection (lent to one writer at a time), or one from the pool."""
        kept: Connection | None = getattr(self._pinned, "connection", None)
        if kept is None:
            with self._autocommit_engine.connect() as connection:
                yield connection
            return
        if kept.invalidated:  # its server went away: a new one (in autocommit, as the first was)
            kept.close()
            kept = self._autocommit_engine.connect()
        self._pinned.connection = None  # a writer nested in this one checks out its own
        try:
            yield kept
        finally:
            self._pinned.connection = kept

    @contextmanager
    def pinned(self) -> Iterator[None]:
        """Until the end, this thread's ``pipelined_writer()`` transactions run on one connection,
        checked out once, instead of checking one out and in each time (a tenth of an HL7
        message's CPU). For a thread that writes one transaction after another for a long time (an
        MLLP connection's). Nothing on SQLite (its writer is kept anyway), when this thread is
        pinned already, or when half the pool is pinned by other threads.
        """
        if (
            self.engine.dialect.name != "postgresql"
            or getattr(self._pinned, "connection", None) is not None
            or not self._pin_slots.acquire(blocking=False)
        ):
            yield
            return
        try:
            self._pinned.connection = self._autocommit_engine.connect()
            yield
        finally:
            kept, self._pinned.connection = self._pinned.connection, None
            if kept is not None:
                kept.close()
            self._pin_slots.release()

    def _turn_connection(self) -> Connection | None:
        """SQLite's kept writer connection (the caller holds the writer queue); None elsewhere,
        and for a writer nested in another one of the same thread."""
        if not isinstance(self._write_lock, WriterQueue):
            return None
        kept = self._kept_writer
        if kept is None or kept.closed or kept.invalidated:
            kept = self._kept_writer = self._writer_engine.connect()
        return None if kept.in_transaction() else kept

    def dispose(self) -> None:
        if self._kept_writer is not None:
            self._kept_writer.close()
            self._kept_writer = None
        self.engine.dispose()
        if isinstance(self._write_lock, WriterQueue):
            self._write_lock.close()


class DatabaseThreads:
    """The threads that run blocking database work for the event loop (the API's and pages').

    As many as the pool has connections (``resize``), so that a burst queues for a thread instead
    of opening and closing overflow connections. asyncio's executor hand-off: anyio's
    ``run_in_threadpool`` (cancel scopes, capacity limiter) cost a tenth of the intake route's
    CPU. Context variables go along, as with anyio.
    """

    def __init__(self, count: int = 10) -> None:
        self._count = count
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def resize(self, count: int) -> None:
        with self._lock:
            self._count = count
            if self._executor is not None:
                self._executor.shutdown(wait=False)
                self._executor = None

    async def run(self, work: Callable[..., T], *args: Any) -> T:
        """``work(*args)`` on one of the threads, awaited."""
        executor = self._executor
        if executor is None:
            with self._lock:
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(self._count, thread_name_prefix="careops-db")
                executor = self._executor
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(executor, context.run, work, *args)


DATABASE_THREADS = DatabaseThreads()
in_thread = DATABASE_THREADS.run
