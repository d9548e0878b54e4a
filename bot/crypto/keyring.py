"""The keyring: key-encryption keys (KEKs) that protect every client's data key.

A keyring is a small JSON document::

    {"format": "imrs-keyring/1", "active": "k20261126-3f9a", "keys": {"k20261126-3f9a": "<base64 of 32 bytes>"}}

It comes from ``IMRS_KEYS`` (the JSON itself, for platforms that only offer environment
variables) or from the file named by ``IMRS_KEYS_FILE`` (preferred; ``imrs-bot keys init``
writes it with mode 0600). The embedded SQLite default creates ``var/keys.json`` on first
run so that a newcomer never runs unencrypted; a PostgreSQL deployment must configure one.
The keys never appear in logs or error messages.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import secrets
import stat
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bot.errors import KeyringError

FORMAT = "imrs-keyring/1"
KEY_BYTES = 32  # AES-256
EMBEDDED_KEYS_FILE = Path("var/keys.json")

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Keyring:
    active: str
    keys: dict[str, bytes] = field(repr=False)

    def __post_init__(self) -> None:
        if self.active not in self.keys:
            raise KeyringError("The keyring's active key id is not among its keys.")
        for key_id, key in self.keys.items():
            if len(key) != KEY_BYTES:
                raise KeyringError(f"Key {key_id!r} in the keyring is not {KEY_BYTES} bytes long.")

    @property
    def active_key(self) -> bytes:
        return self.keys[self.active]

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": FORMAT,
                "active": self.active,
                "keys": {k: base64.b64encode(v).decode("ascii") for k, v in self.keys.items()},
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str, *, source: str) -> Keyring:
        try:
            data = json.loads(text)
            if data.get("format") != FORMAT:
                raise KeyringError(f"{source} is not an imrs keyring (format {FORMAT!r} expected).")
            keys = {str(k): base64.b64decode(v, validate=True) for k, v in data["keys"].items()}
            return cls(active=str(data["active"]), keys=keys)
        except KeyringError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
            raise KeyringError(
                f"{source} is not a valid keyring: create one with `imrs-bot keys init`."
            ) from None


def new_key_id(now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    return f"k{now:%Y%m%d}-{secrets.token_hex(2)}"


def generate_keyring() -> Keyring:
    key_id = new_key_id()
    return Keyring(active=key_id, keys={key_id: secrets.token_bytes(KEY_BYTES)})


def write_keyring(path: Path, keyring: Keyring) -> None:
    """Write a new keyring file readable by its owner only; never overwrite an existing one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyringError(f"{path} already exists; refusing to overwrite a keyring.") from None
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(keyring.to_json() + "\n")


def read_keyring(path: Path) -> Keyring:
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KeyringError(
            f"IMRS_KEYS_FILE {path} does not exist: create it with `imrs-bot keys init --file {path}`."
        ) from None
    except OSError as exc:
        raise KeyringError(f"Cannot read the keyring {path}: {exc.strerror}.") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        _log.warning("The keyring file %s is readable by others; run `chmod 600 %s`.", path, path)
    return Keyring.from_json(text, source=str(path))


def load_keyring(
    *,
    keys_json: str | None,
    keys_file: Path | None,
    embedded: bool,
    embedded_file: Path = EMBEDDED_KEYS_FILE,
) -> Keyring:
    """Find the keyring as configured; create the embedded default's on first run."""
    if keys_json:
        return Keyring.from_json(keys_json, source="IMRS_KEYS")
    if keys_file:
        return read_keyring(keys_file)
    if embedded:
        if embedded_file.exists():
            return read_keyring(embedded_file)
        keyring = generate_keyring()
        write_keyring(embedded_file, keyring)
        _log.warning(
            "Created a new encryption keyring at %s. Back it up: without it the data cannot be read.",
            embedded_file,
        )
        return keyring
    raise KeyringError(
        "No encryption keyring: run `imrs-bot keys init --file keys.json` and set "
        "IMRS_KEYS_FILE=keys.json (or put the file's contents in IMRS_KEYS)."
    )
