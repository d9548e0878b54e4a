"""The crypto layer's exceptions.

Every message is safe to log: it may name a table, a column, a (pseudonymous) row or
person id, a data-key version or a key-encryption-key id, never a key, a plaintext or
a ciphertext.
"""

from __future__ import annotations

from bot.errors import KeyringError


class CryptoError(Exception):
    """Base class of the crypto layer's own errors."""


class DecryptionError(CryptoError):
    """A stored value does not decrypt: it was altered, copied into another row or column,
    its owner changed behind the ORM's back, or its data key is wrong."""


class DataKeyMissing(DecryptionError):
    """The data key a value was encrypted with does not exist (any more): the person was
    erased (crypto-shredding), or the key store is not the one this database belongs to."""


class MissingKek(KeyringError, CryptoError):
    """A data key is wrapped under a key-encryption key that is not in the keyring."""


class CryptoNotConfigured(CryptoError):
    """An encrypted column was read or written through a session without field crypto
    (build sessions with ``FieldCrypto.attach(session_factory(engine))``)."""


class PlaintextRefused(CryptoError, TypeError):
    """Something tried to store a value in an encrypted column without encrypting it
    (a Core insert/update, a bulk ``update()``, a comparison in a WHERE clause, or
    ciphertext copied from another attribute)."""


class KeyNotPrepared(CryptoError):
    """Data keys were needed outside an async SQLAlchemy context and are not cached:
    ``await crypto.prepare(...)`` / ``await crypto.ensure_writable(...)`` first."""
