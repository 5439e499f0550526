"""Field encryption: the most sensitive columns are AES-256-GCM ciphertext in the database.

Envelope encryption: each value is encrypted under a data key; data keys are stored wrapped
(encrypted) under the master key, which never touches the database (``governance.keys``). A
value reads ``enc1:<key id>:<base64 of nonce + ciphertext>``; the column's name is the
authenticated data, so a value moved to another column does not decrypt. Values written before
encryption was switched on (no ``enc1:`` prefix) are read as they are until ``careops keys
rotate`` (or ``careops migrate``) encrypts them.

A blind index (HMAC-SHA256 under its own key) keeps exact lookups working, e.g. by MRN.

The keys of a database travel on its SQLAlchemy dialect (``attach``), so that these column
types find them in the middle of any statement without a global.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import LargeBinary, Text, TypeDecorator
from sqlalchemy.engine import Dialect

PREFIX = "enc1:"
_BYTES_PREFIX = PREFIX.encode()
_NONCE = 12
_ATTRIBUTE = "careops_field_keys"


class KeysUnavailable(RuntimeError):
    """Encrypted columns were used before the database's keys were loaded, or with the wrong keys."""


@dataclass
class FieldKeys:
    """The unwrapped data keys of one database (id → key), the one new values use, the index key."""

    data_keys: dict[str, bytes]
    active: str
    index_key: bytes
    _ciphers: dict[str, AESGCM] = field(default_factory=dict, repr=False)

    def _cipher(self, key_id: str) -> AESGCM | None:
        cipher = self._ciphers.get(key_id)
        if cipher is None and key_id in self.data_keys:
            cipher = self._ciphers[key_id] = AESGCM(self.data_keys[key_id])
        return cipher

    def seal(self, plaintext: bytes, column: str) -> bytes:
        nonce = os.urandom(_NONCE)
        sealed = self._cipher(self.active).encrypt(nonce, plaintext, column.encode())  # type: ignore[union-attr]
        return _BYTES_PREFIX + self.active.encode() + b":" + base64.b64encode(nonce + sealed)

    def open(self, stored: bytes, column: str) -> bytes:
        if not stored.startswith(_BYTES_PREFIX):
            return stored  # written before encryption was switched on
        key_id, _, body = stored[len(_BYTES_PREFIX) :].partition(b":")
        key = self.data_keys.get(key_id.decode())
        if key is None:
            raise KeysUnavailable(
                f"{column}: encrypted under data key {key_id.decode()!r}, which is not loaded"
            )
        raw = base64.b64decode(body)
        try:
            return AESGCM(key).decrypt(raw[:_NONCE], raw[_NONCE:], column.encode())
        except InvalidTag as exc:
            raise KeysUnavailable(f"{column}: a value failed its integrity check") from exc

    def blind_index(self, value: str) -> str:
        """The same text (case and spaces aside) gives the same index; the index reveals nothing else."""
        normalised = "".join(value.split()).upper()
        return hmac.digest(self.index_key, normalised.encode(), "sha256").hex()


def attach(dialect: Dialect, keys: FieldKeys) -> None:
    setattr(dialect, _ATTRIBUTE, keys)


def keys_of(dialect: Dialect) -> FieldKeys:
    keys: FieldKeys | None = getattr(dialect, _ATTRIBUTE, None)
    if keys is None:
        raise KeysUnavailable(
            "the field encryption keys of this database are not loaded (careops.governance.keys)"
        )
    return keys


def is_sealed_under(stored: bytes, key_id: str) -> bool:
    return stored.startswith(_BYTES_PREFIX + key_id.encode() + b":")


class _Encrypted(TypeDecorator[Any]):
    """A column stored as ciphertext: subclasses say how values become bytes and are stored."""

    impl: Any = Text
    cache_ok = True

    def __init__(self, column: str) -> None:
        super().__init__()
        self.column = column

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        return self.stored(keys_of(dialect).seal(self.to_bytes(value), self.column))

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        return self.from_bytes(
            keys_of(dialect).open(bytes(value) if self.binary else value.encode(), self.column)
        )

    binary = False

    def stored(self, sealed: bytes) -> Any:
        return sealed if self.binary else sealed.decode()

    def to_bytes(self, value: Any) -> bytes:
        return bytes(value)

    def from_bytes(self, plain: bytes) -> Any:
        return plain


class EncryptedText(_Encrypted):
    """A text column stored as ciphertext."""

    cache_ok = True  # SQLAlchemy asks each class itself

    def to_bytes(self, value: Any) -> bytes:
        return str(value).encode()

    def from_bytes(self, plain: bytes) -> Any:
        return plain.decode()


class EncryptedJSON(_Encrypted):
    """A JSON document stored as ciphertext (it is never queried inside)."""

    cache_ok = True  # SQLAlchemy asks each class itself

    def to_bytes(self, value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()

    def from_bytes(self, plain: bytes) -> Any:
        return json.loads(plain)


class EncryptedBytes(_Encrypted):
    """A binary column (a file) stored as ciphertext."""

    cache_ok = True  # SQLAlchemy asks each class itself

    impl = LargeBinary
    binary = True
