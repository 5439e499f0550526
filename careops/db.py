"""Engines and sessions for the system of record (SQLite in WAL mode, or PostgreSQL via psycopg 3)."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: writers then queue per process only
    fcntl = None  # type: ignore[assignment]

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

_BEGIN_MODE = "sqlite_begin"


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
    connection.exec_driver_sql(f"BEGIN {connection.get_execution_options().get(_BEGIN_MODE, 'DEFERRED')}")


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

    ``writer()`` is ``transaction()`` without the ORM, for hot paths written in Core statements.
    On SQLite both go through ``WriterQueue`` first (see there).
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

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with self._write_lock, self._writer_sessions() as session, session.begin():
            yield session

    @contextmanager
    def writer(self) -> Iterator[Connection]:
        with self._write_lock, self._writer_engine.begin() as connection:
            yield connection

    def dispose(self) -> None:
        self.engine.dispose()
        if isinstance(self._write_lock, WriterQueue):
            self._write_lock.close()
