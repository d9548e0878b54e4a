"""Key-encryption-key rotation: ``imrs-bot keys add | rotate | retire``.

* ``add``: a new KEK is added to the keyring and made active. The keyring FILE is replaced
  atomically (0600); with ``IMRS_KEYS`` the new keyring JSON is printed for the operator
  to put into the environment. Running bots that read the file switch to the new KEK for
  data keys they create from then on (bot.crypto.keystore re-reads a changed file).
* ``rotate``: ``add``, then re-wrap every data key that is not under the active KEK, in
  batches (500 per transaction). Each batch selects ``kek_id <> active``, so an
  interrupted rotation resumes where it stopped (``keys rotate --resume`` re-wraps
  without adding another KEK). Safe while the bot runs: the bot reads data keys by
  (person, version) and unwraps with the KEK the row names (both KEKs are in the keyring
  during the rotation); the unwrapped data keys, and so all field ciphertext, never
  change. A batch updates rows only where they still name the old KEK, so a key erased
  meanwhile is never resurrected; on PostgreSQL rows locked by someone else are skipped
  (``FOR UPDATE SKIP LOCKED``) and picked up by the next run.
* ``retire <kek-id>``: removes a KEK from the keyring, refused while it is the active one
  or any data key is still wrapped under it.

With ``IMRS_KEYS`` the running processes cannot see a new keyring: restart them with the
printed keyring (``keys add``) before ``keys rotate --resume``.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from bot.config import Settings
from bot.crypto.formats import wrap_data_key
from bot.crypto.keyring import (
    EMBEDDED_KEYS_FILE,
    KEY_BYTES,
    Keyring,
    load_keyring,
    new_key_id,
    read_keyring,
)
from bot.crypto.keystore import (
    KeyStore,
    WrappedKey,
    data_keys,
    replace_keyring_file,
    resolve_keystore_url,
)
from bot.db.types import utcnow
from bot.errors import KeyringError, OperatorError

_log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 500


# -- the keyring ---------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyringSource:
    """Where the configured keyring comes from: a file (``path``) or ``IMRS_KEYS`` (None)."""

    keyring: Keyring
    path: Path | None

    @property
    def from_environment(self) -> bool:
        return self.path is None


def configured_keyring(settings: Settings, *, embedded_file: Path = EMBEDDED_KEYS_FILE) -> KeyringSource:
    """The keyring as the bot would load it (never creating one: there is nothing to rotate)."""
    if settings.imrs_keys:
        keyring = load_keyring(
            keys_json=settings.imrs_keys.get_secret_value(), keys_file=None, embedded=False
        )
        return KeyringSource(keyring, None)
    path = settings.imrs_keys_file or (embedded_file if settings.embedded else None)
    if path is None:
        raise KeyringError(
            "No encryption keyring: run `imrs-bot keys init --file keys.json` and set "
            "IMRS_KEYS_FILE=keys.json (or put the file's contents in IMRS_KEYS)."
        )
    return KeyringSource(read_keyring(path), path)


def with_new_key(keyring: Keyring) -> tuple[Keyring, str]:
    """``keyring`` plus a fresh random KEK, which becomes the active one."""
    key_id = new_key_id()
    while key_id in keyring.keys:
        key_id = new_key_id()
    keys = dict(keyring.keys)
    keys[key_id] = secrets.token_bytes(KEY_BYTES)
    return Keyring(active=key_id, keys=keys), key_id


def without_key(keyring: Keyring, kek_id: str) -> Keyring:
    if kek_id not in keyring.keys:
        raise KeyringError(f"The keyring has no key {kek_id!r} (it has: {', '.join(sorted(keyring.keys))}).")
    if kek_id == keyring.active:
        raise KeyringError(
            f"{kek_id} is the active key: add a new one and rotate first (`imrs-bot keys rotate`)."
        )
    return Keyring(active=keyring.active, keys={k: v for k, v in keyring.keys.items() if k != kek_id})


def save_keyring(source: KeyringSource, keyring: Keyring) -> KeyringSource:
    """Write ``keyring`` where ``source`` came from (a file); an environment keyring is
    returned unchanged in place for the caller to print."""
    if source.path is not None:
        replace_keyring_file(source.path, keyring)
    return KeyringSource(keyring, source.path)


# -- re-wrapping ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RotationProgress:
    kek_id: str
    rewrapped: int
    batches: int


@dataclass(frozen=True)
class RotationResult:
    kek_id: str
    rewrapped: int
    batches: int
    #: data keys still not under ``kek_id`` (0 when the rotation is complete)
    remaining: int

    @property
    def complete(self) -> bool:
        return self.remaining == 0


async def rewrap_data_keys(
    keystore: KeyStore,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_batches: int | None = None,
    on_batch: Callable[[RotationProgress], Awaitable[None]] | None = None,
) -> RotationResult:
    """Re-wrap every data key not under the keyring's active KEK, ``batch_size`` per
    transaction (at most ``max_batches`` batches). Resumable: run it again."""
    if batch_size < 1:
        raise ValueError("batch_size must be positive")
    keyring = keystore.keyring
    active, active_key = keyring.active, keyring.active_key
    postgresql = keystore.engine.dialect.name == "postgresql"
    update = (
        data_keys.update()
        .where(
            data_keys.c.person_id == sa.bindparam("b_person_id"),
            data_keys.c.key_version == sa.bindparam("b_key_version"),
            data_keys.c.kek_id == sa.bindparam("b_old_kek_id"),
        )
        .values(
            kek_id=sa.bindparam("b_kek_id"),
            wrapped=sa.bindparam("b_wrapped"),
            rewrapped_at=sa.bindparam("b_rewrapped_at"),
        )
    )
    rewrapped = batches = 0
    while max_batches is None or batches < max_batches:
        query = (
            sa.select(
                data_keys.c.person_id, data_keys.c.key_version, data_keys.c.kek_id, data_keys.c.wrapped
            )
            .where(data_keys.c.kek_id != active)
            .order_by(data_keys.c.person_id, data_keys.c.key_version)
            .limit(batch_size)
        )
        if postgresql:
            query = query.with_for_update(skip_locked=True)
        async with keystore.engine.begin() as connection:
            rows = [WrappedKey(r[0], r[1], r[2], bytes(r[3])) for r in await connection.execute(query)]
            if not rows:
                break
            now = utcnow()
            params = []
            for row in rows:
                data_key = keystore.unwrap(row)
                params.append(
                    {
                        "b_person_id": row.person_id,
                        "b_key_version": row.key_version,
                        "b_old_kek_id": row.kek_id,
                        "b_kek_id": active,
                        "b_wrapped": wrap_data_key(
                            active_key, active, row.person_id, row.key_version, data_key
                        ),
                        "b_rewrapped_at": now,
                    }
                )
            await connection.execute(update, params)
        batches += 1
        rewrapped += len(rows)
        _log.info("Re-wrapped %d data keys under %s (batch %d)", len(rows), active, batches)
        if on_batch is not None:
            await on_batch(RotationProgress(active, rewrapped, batches))
    remaining = await keystore.count_not_under(active)
    return RotationResult(active, rewrapped, batches, remaining)


# -- the commands --------------------------------------------------------------------------


async def _open_keystore(settings: Settings, source: KeyringSource) -> KeyStore:
    location = resolve_keystore_url(settings.database_url, settings.imrs_keystore_url)
    return await KeyStore.open(location.url, source.keyring, keyring_file=source.path)


def add_key(settings: Settings, *, embedded_file: Path = EMBEDDED_KEYS_FILE) -> tuple[KeyringSource, str]:
    """``keys add``: returns the new keyring (written to its file, if it has one) and the new id."""
    source = configured_keyring(settings, embedded_file=embedded_file)
    keyring, key_id = with_new_key(source.keyring)
    return save_keyring(source, keyring), key_id


async def rotate_keys(
    settings: Settings,
    *,
    resume: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_batches: int | None = None,
    embedded_file: Path = EMBEDDED_KEYS_FILE,
    on_batch: Callable[[RotationProgress], Awaitable[None]] | None = None,
) -> tuple[str | None, RotationResult]:
    """``keys rotate``: add a KEK (unless ``resume``), then re-wrap every data key under the
    active KEK. Returns the added KEK id (None with ``resume``) and the result."""
    if batch_size < 1:
        raise OperatorError("The batch size must be at least 1.")
    source = configured_keyring(settings, embedded_file=embedded_file)
    added: str | None = None
    if not resume:
        if source.from_environment:
            raise OperatorError(
                "The keyring comes from IMRS_KEYS, which this command cannot change: run "
                "`imrs-bot keys add`, put the printed keyring into IMRS_KEYS, restart the bot, "
                "then run `imrs-bot keys rotate --resume`."
            )
        keyring, added = with_new_key(source.keyring)
        source = save_keyring(source, keyring)  # durable before any key is re-wrapped
    keystore = await _open_keystore(settings, source)
    try:
        result = await rewrap_data_keys(
            keystore, batch_size=batch_size, max_batches=max_batches, on_batch=on_batch
        )
    finally:
        await keystore.close()
    return added, result


async def retire_key(
    settings: Settings, kek_id: str, *, embedded_file: Path = EMBEDDED_KEYS_FILE
) -> KeyringSource:
    """``keys retire``: the keyring without ``kek_id`` (written to its file, if any);
    refused while any data key is still wrapped under it."""
    source = configured_keyring(settings, embedded_file=embedded_file)
    smaller = without_key(source.keyring, kek_id)
    keystore = await _open_keystore(settings, source)
    try:
        still = (await keystore.counts_by_kek()).get(kek_id, 0)
    finally:
        await keystore.close()
    if still:
        raise OperatorError(
            f"{still} data key(s) are still wrapped under {kek_id}: finish the rotation first "
            "(`imrs-bot keys rotate --resume`)."
        )
    return save_keyring(source, smaller)
