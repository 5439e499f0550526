"""Engines and sessions for the system of record (SQLite in WAL mode, or PostgreSQL via psycopg 3)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

_BEGIN_MODE = "sqlite_begin"


def make_engine(url: str, pool_size: int = 10) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size)


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


class Database:
    """One engine; ``transaction()`` is the unit of work that writes, ``sessions()`` reads.

    ``writer()`` is ``transaction()`` without the ORM, for hot paths written in Core statements.
    """

    def __init__(self, url: str, pool_size: int = 10) -> None:
        self.url = url
        self.engine = make_engine(url, pool_size)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._writer_engine = self.engine.execution_options(**{_BEGIN_MODE: "IMMEDIATE"})
        self._writer_sessions = sessionmaker(self._writer_engine, expire_on_commit=False)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with self._writer_sessions() as session, session.begin():
            yield session

    @contextmanager
    def writer(self) -> Iterator[Connection]:
        with self._writer_engine.begin() as connection:
            yield connection

    def dispose(self) -> None:
        self.engine.dispose()
