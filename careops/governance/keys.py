"""Encryption keys: the master key, the wrapped data keys, loading them, and rotation.

The master key comes from ``encryption_key_file`` (32 random bytes, base64) or, without one, is
derived from ``secret_key`` (HKDF-SHA256). It only wraps and unwraps data keys; data keys are
kept in ``field_key`` wrapped under it. ``careops keys rotate`` makes a new data key and
re-encrypts every encrypted value under it in batches; older keys stay (retired) so that backups
still decrypt. The blind-index key is made once and does not rotate with the data keys (indexes
would otherwise have to be rebuilt while lookups run).
"""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import Column, Table, func, insert, inspect, select, type_coerce, update
from sqlalchemy.exc import IntegrityError

from careops.db import Database
from careops.domain.encryption import (
    EncryptedBytes,
    EncryptedJSON,
    EncryptedText,
    FieldKeys,
    attach,
    is_sealed_under,
)
from careops.domain.events import Event, EventType, record_events
from careops.domain.models import Base, FieldKey, utcnow
from careops.errors import ConfigurationError
from careops.settings import Settings

INDEX_KEY_ID = "index"
BATCH = 500
_ENCRYPTED_TYPES = (EncryptedText, EncryptedJSON, EncryptedBytes)
_keys_table = Base.metadata.tables[FieldKey.__tablename__]


def master_key(settings: Settings) -> bytes:
    if settings.encryption_key_file:
        return read_key_file(Path(settings.encryption_key_file))
    return derived_master_key(settings.secret_key)


def derived_master_key(secret_key: str) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"careops", info=b"careops master key v1")
    return hkdf.derive(secret_key.encode())


def read_key_file(path: Path) -> bytes:
    try:
        key = base64.b64decode(path.read_text().strip(), validate=True)
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read the encryption key file {path}: {exc}") from exc
    if len(key) != 32:
        raise ConfigurationError(f"{path}: the key must be 32 bytes, base64-encoded (careops keys generate)")
    return key


def generate_key_file(path: Path) -> None:
    """A new master key file, readable by its owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")


def _wrap(master: bytes, key_id: str, key: bytes) -> bytes:
    nonce = os.urandom(12)
    return nonce + AESGCM(master).encrypt(nonce, key, f"careops field key {key_id}".encode())


def _unwrap(master: bytes, key_id: str, wrapped: bytes) -> bytes:
    try:
        return AESGCM(master).decrypt(wrapped[:12], wrapped[12:], f"careops field key {key_id}".encode())
    except Exception as exc:
        raise ConfigurationError(
            "the master key does not open the stored data keys: is this the right secret_key or "
            "encryption_key_file for this database?"
        ) from exc


def _new_key(master: bytes, purpose: str, key_id: str | None = None) -> dict[str, Any]:
    key_id = key_id or secrets.token_hex(4)
    return {
        "id": key_id,
        "purpose": purpose,
        "wrapped": _wrap(master, key_id, os.urandom(32)),
        "created_at": utcnow(),
    }


def load_field_keys(db: Database, settings: Settings) -> FieldKeys:
    """The database's keys, made on first use, attached to the database for its encrypted columns."""
    master = master_key(settings)
    rows = _rows(db)
    if not any(r.purpose == "index" for r in rows) or not any(r.purpose == "data" for r in rows):
        _create_missing(db, master, rows)
        rows = _rows(db)
    data = {r.id: _unwrap(master, r.id, r.wrapped) for r in rows if r.purpose == "data"}
    live = [r for r in rows if r.purpose == "data" and r.retired_at is None]
    active = max(live, key=lambda r: (r.created_at, r.id)).id
    index = next(_unwrap(master, r.id, r.wrapped) for r in rows if r.purpose == "index")
    keys = FieldKeys(data, active, index)
    attach(db.engine.dialect, keys)
    return keys


def key_rows(db: Database) -> list[Any]:
    """The stored keys' ids, purposes and dates (their wrapped values are not for display)."""
    return sorted(_rows(db), key=lambda r: (r.purpose, r.created_at))


def _rows(db: Database) -> list[Any]:
    if not inspect(db.engine).has_table(FieldKey.__tablename__):
        raise ConfigurationError("the database schema is not current: run `careops migrate` first")
    with db.engine.connect() as connection:
        return list(connection.execute(select(_keys_table)))


def _create_missing(db: Database, master: bytes, rows: list[Any]) -> None:
    try:
        with db.writer() as connection:
            if not any(r.purpose == "index" for r in rows):
                connection.execute(insert(_keys_table), _new_key(master, "index", INDEX_KEY_ID))
            if not any(r.purpose == "data" and r.retired_at is None for r in rows):
                connection.execute(insert(_keys_table), _new_key(master, "data"))
    except IntegrityError:
        pass  # another process made them at the same moment: use theirs


@dataclass(frozen=True)
class EncryptedColumn:
    table: Table
    column: Column[Any]

    @property
    def name(self) -> str:
        return f"{self.table.name}.{self.column.name}"


def encrypted_columns() -> list[EncryptedColumn]:
    return [
        EncryptedColumn(table, column)
        for table in Base.metadata.sorted_tables
        for column in table.columns
        if isinstance(column.type, _ENCRYPTED_TYPES)
    ]


Progress = Callable[[str, int, int], None]


def _batches(db: Database, column: EncryptedColumn) -> Iterator[list[Any]]:
    """(primary key, stored value as it is in the database) in primary-key order, a batch at a time."""
    key = next(iter(column.table.primary_key.columns))
    raw = type_coerce(column.column, column.column.type.impl)  # type: ignore[attr-defined]
    last = None
    while True:
        query = select(key, raw).where(column.column.is_not(None)).order_by(key).limit(BATCH)
        if last is not None:
            query = query.where(key > last)
        with db.engine.connect() as connection:
            rows = list(connection.execute(query))
        if not rows:
            return
        yield rows
        last = rows[-1][0]


def _count(db: Database, column: EncryptedColumn) -> int:
    with db.engine.connect() as connection:
        query = select(func.count()).select_from(column.table).where(column.column.is_not(None))
        return int(connection.scalar(query) or 0)


def reencrypt(db: Database, keys: FieldKeys, progress: Progress | None = None) -> int:
    """Every encrypted value not yet under the active data key (or still in clear) re-encrypted
    under it, and every MRN's blind index brought up to date; returns how many values changed.
    ``progress(column, done, total)`` after each batch."""
    changed = 0
    for column in encrypted_columns():
        total, done = _count(db, column), 0
        for rows in _batches(db, column):
            stale = [(pk, _stored_bytes(stored)) for pk, stored in rows]
            stale = [(pk, stored) for pk, stored in stale if not is_sealed_under(stored, keys.active)]
            if stale:
                _rewrite(db, keys, column, stale)
                changed += len(stale)
            done += len(rows)
            if progress:
                progress(column.name, done, total)
    return changed


def _stored_bytes(stored: Any) -> bytes:
    return bytes(stored) if isinstance(stored, bytes | memoryview) else str(stored).encode()


def _rewrite(db: Database, keys: FieldKeys, column: EncryptedColumn, rows: list[tuple[Any, bytes]]) -> None:
    binary = isinstance(column.column.type, EncryptedBytes)
    stored_type = column.column.type.impl  # type: ignore[attr-defined]
    primary_key = next(iter(column.table.primary_key.columns))
    with db.writer() as connection:
        for pk, stored in rows:
            plain = keys.open(stored, column.name)
            sealed = keys.seal(plain, column.name)
            values: dict[str, Any] = {
                column.column.name: type_coerce(sealed if binary else sealed.decode(), stored_type)
            }
            if column.name == "patient.mrn":
                values["mrn_index"] = keys.blind_index(plain.decode())
            connection.execute(update(column.table).where(primary_key == pk).values(values))


def rewrap(db: Database, old_master: bytes, settings: Settings, *, actor: str) -> int:
    """Every stored key unwrapped with the old master key and wrapped with the current one (from
    ``settings``), in one transaction: the step after changing ``encryption_key_file`` or
    ``secret_key``. Values are not touched. Returns how many keys were rewrapped."""
    new_master = master_key(settings)
    rows = _rows(db)
    with db.writer() as connection:
        for row in rows:
            key = _unwrap(old_master, row.id, row.wrapped)
            connection.execute(
                update(_keys_table)
                .where(_keys_table.c.id == row.id)
                .values(wrapped=_wrap(new_master, row.id, key))
            )
        rewrapped = Event(
            EventType.KEYS_REWRAPPED, "field_key", "master", actor=actor, payload={"keys": len(rows)}
        )
        record_events(connection, rewrapped)
    load_field_keys(db, settings)
    return len(rows)


def rotate(
    db: Database, settings: Settings, progress: Progress | None = None, *, actor: str = "system"
) -> tuple[str, int]:
    """A new active data key; every value re-encrypted under it; older keys retired (kept to read
    backups). Returns the new key's id and how many values were re-encrypted."""
    master = master_key(settings)
    load_field_keys(db, settings)  # the master key must open the existing keys first
    new = _new_key(master, "data")
    with db.writer() as connection:
        connection.execute(insert(_keys_table), new)
    keys = load_field_keys(db, settings)
    count = reencrypt(db, keys, progress)
    retired = Event(
        EventType.KEYS_ROTATED, "field_key", new["id"], actor=actor, payload={"reencrypted": count}
    )
    with db.writer() as connection:
        record_events(connection, retired)
        connection.execute(
            update(_keys_table)
            .where(
                _keys_table.c.purpose == "data",
                _keys_table.c.id != new["id"],
                _keys_table.c.retired_at.is_(None),
            )
            .values(retired_at=utcnow())
        )
    return new["id"], count
