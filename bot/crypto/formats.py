"""The two byte formats of envelope encryption. Pure functions, no IO.

Data keys (in the key store, table ``data_keys``)
    ``wrapped = nonce (12) | AES-256-GCM(KEK, data key (32)) + tag (16)``, 60 bytes, with
    associated data ``b"imrs-dk|" + person_id (8, signed big-endian) + key_version (4,
    big-endian) + kek_id (UTF-8)``. The KEK id is the only variable-length part and comes
    last, so the encoding is unambiguous. A wrapped key moved to another person, version
    or KEK id does not unwrap.

Encrypted fields (in the clinical database, a ``LargeBinary`` column)
    ``0x01 | data-key version (4, big-endian) | nonce (12) | AES-256-GCM ciphertext + tag (16)``,
    i.e. 33 bytes of overhead. Associated data::

        b"imrs-field|" + 0x01
        + len(table) (2) + table + len(column) (2) + column       (UTF-8, length-prefixed)
        + row id (8, signed big-endian) + owner person id (8, signed big-endian)
        + data-key version (4, big-endian)

    so a value copied into another row, another column, another table, or presented
    under another owner or key version fails authentication. The nonce is random
    (96 bits); a data key belongs to one person and encrypts at most a few thousand
    values in its life, far below the 2**32 messages per key that random GCM nonces allow.
"""

from __future__ import annotations

import os
import struct
from functools import lru_cache
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bot.crypto.errors import DecryptionError

DATA_KEY_BYTES: Final = 32
NONCE_BYTES: Final = 12
TAG_BYTES: Final = 16

FIELD_VERSION: Final = 1
_FIELD_HEADER = struct.Struct(">BI")  # format version, data-key version
FIELD_HEADER_BYTES: Final = _FIELD_HEADER.size + NONCE_BYTES  # 17
FIELD_OVERHEAD: Final = FIELD_HEADER_BYTES + TAG_BYTES  # 33
WRAPPED_KEY_BYTES: Final = NONCE_BYTES + DATA_KEY_BYTES + TAG_BYTES  # 60

_INT64 = struct.Struct(">q")
_UINT32 = struct.Struct(">I")
_AAD_IDS = struct.Struct(">qqI")  # row id, owner person id, data-key version
_MAX_VERSION = 2**32 - 1


def new_data_key() -> bytes:
    return os.urandom(DATA_KEY_BYTES)


# -- data keys -----------------------------------------------------------------------------


def data_key_aad(person_id: int, key_version: int, kek_id: str) -> bytes:
    return (
        b"imrs-dk|"
        + _INT64.pack(person_id)
        + _UINT32.pack(key_version)
        + kek_id.encode("utf-8")
    )


def wrap_data_key(
    kek: bytes, kek_id: str, person_id: int, key_version: int, data_key: bytes
) -> bytes:
    if len(data_key) != DATA_KEY_BYTES:
        raise ValueError("a data key is 32 bytes")
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(kek).encrypt(
        nonce, data_key, data_key_aad(person_id, key_version, kek_id)
    )


def unwrap_data_key(
    kek: bytes, kek_id: str, person_id: int, key_version: int, wrapped: bytes
) -> bytes:
    if len(wrapped) != WRAPPED_KEY_BYTES:
        raise DecryptionError(
            f"The data key {key_version} of person {person_id} is malformed in the key store."
        )
    try:
        return AESGCM(kek).decrypt(
            wrapped[:NONCE_BYTES],
            wrapped[NONCE_BYTES:],
            data_key_aad(person_id, key_version, kek_id),
        )
    except InvalidTag:
        raise DecryptionError(
            f"The data key {key_version} of person {person_id} does not unwrap under "
            f"key-encryption key {kek_id!r}: the key store row was altered or moved, or the "
            f"keyring's key {kek_id!r} is not the one it was wrapped with."
        ) from None


# -- fields --------------------------------------------------------------------------------


@lru_cache(maxsize=1024)
def _field_aad_prefix(table: str, column: str) -> bytes:
    t = table.encode("utf-8")
    c = column.encode("utf-8")
    if len(t) > 0xFFFF or len(c) > 0xFFFF:
        raise ValueError("table and column names are at most 65535 bytes")
    return b"".join(
        (b"imrs-field|", bytes((FIELD_VERSION,)), len(t).to_bytes(2, "big"), t, len(c).to_bytes(2, "big"), c)
    )


def field_aad(table: str, column: str, row_id: int, owner_id: int, key_version: int) -> bytes:
    return _field_aad_prefix(table, column) + _AAD_IDS.pack(row_id, owner_id, key_version)


def seal(
    aead: AESGCM,
    key_version: int,
    plaintext: bytes,
    *,
    table: str,
    column: str,
    row_id: int,
    owner_id: int,
) -> bytes:
    """Encrypt ``plaintext`` for one field of one row (``aead`` holds the owner's data key)."""
    if not 1 <= key_version <= _MAX_VERSION:
        raise ValueError("data-key versions are 1 .. 2**32-1")
    nonce = os.urandom(NONCE_BYTES)
    aad = field_aad(table, column, row_id, owner_id, key_version)
    return _FIELD_HEADER.pack(FIELD_VERSION, key_version) + nonce + aead.encrypt(nonce, plaintext, aad)


def key_version_of(value: bytes, *, table: str, column: str, row_id: int) -> int:
    """The data-key version a stored value names (checked again by authentication)."""
    if len(value) < FIELD_OVERHEAD:
        raise DecryptionError(f"{table}.{column} of row {row_id} is too short to be encrypted.")
    version, key_version = _FIELD_HEADER.unpack_from(value)
    if version != FIELD_VERSION:
        raise DecryptionError(
            f"{table}.{column} of row {row_id} has unknown format version {version}."
        )
    return int(key_version)


def open_sealed(
    aead: AESGCM,
    value: bytes,
    *,
    table: str,
    column: str,
    row_id: int,
    owner_id: int,
) -> bytes:
    """Decrypt a value made by :func:`seal`; any change to it or to its context raises."""
    key_version = key_version_of(value, table=table, column=column, row_id=row_id)
    nonce = value[_FIELD_HEADER.size : FIELD_HEADER_BYTES]
    aad = field_aad(table, column, row_id, owner_id, key_version)
    try:
        return aead.decrypt(nonce, value[FIELD_HEADER_BYTES:], aad)
    except InvalidTag:
        raise DecryptionError(
            f"{table}.{column} of row {row_id} (owner {owner_id}) does not decrypt: it was "
            "altered, copied from another row or column, or its owner was changed."
        ) from None
