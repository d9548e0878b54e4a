"""Signed button payloads: a button made for one person, about one record, works only for them.

Telegram returns a button's ``callback_data`` verbatim, and a modified client can send any
data it likes. Buttons that name a record (``clients.open|8123…``) are therefore signed:

    <action>|<arg>|<arg>…|<mac>

where ``mac`` is a truncated HMAC-SHA256 over the Telegram user id the button was made for,
the action and the arguments. A payload altered, invented, or pressed by someone else fails
``unpack``. Handlers still check ownership at the moment of use (a therapist may have lost a
client since the button was made); the signature is the second lock, not the only one.

The signing key is derived (HKDF) from the keyring's key-encryption keys: the active one
signs, every key in the keyring verifies, so buttons keep working through a key rotation until
the old key is retired. Payloads stay within Telegram's 64-byte limit.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from bot.crypto.keyring import Keyring

SEPARATOR = "|"
MAC_CHARS = 11  # 11 base64url characters = 66 bits
MAX_BYTES = 64
_ACTION = re.compile(r"^[a-z][a-z0-9_.]{0,31}$")
_ARG = re.compile(r"^[A-Za-z0-9_.:-]{1,24}$")


class InvalidPayload(Exception):
    """A button payload that was not made by this bot for this person (or is malformed)."""


def _derive(key: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"imrs-callback-mac/1").derive(key)


_SIGNED_ACTIONS: dict[str, str] = {}  # pattern source -> action, filled by CallbackCodec.pattern


class CallbackCodec:
    def __init__(self, keyring: Keyring) -> None:
        self._signing = _derive(keyring.active_key)
        self._verifying = [_derive(key) for key in keyring.keys.values()]

    def pack(self, user_id: int, action: str, *args: int | str) -> str:
        if not _ACTION.match(action):
            raise ValueError(f"bad action name {action!r}")
        parts = [action, *(str(a) for a in args)]
        for part in parts[1:]:
            if not _ARG.match(part):
                raise ValueError("callback arguments are ids or short codes, never free text")
        body = SEPARATOR.join(parts)
        data = f"{body}{SEPARATOR}{self._mac(self._signing, user_id, body)}"
        if len(data.encode()) > MAX_BYTES:
            raise ValueError(f"callback data for {action!r} is over {MAX_BYTES} bytes")
        return data

    def unpack(self, user_id: int, data: str | None, action: str | None = None) -> list[str]:
        """The arguments of a payload made for ``user_id`` (and ``action``, if given)."""
        if not data or SEPARATOR not in data:
            raise InvalidPayload("not a signed payload")
        body, _, mac = data.rpartition(SEPARATOR)
        if not any(hmac.compare_digest(mac, self._mac(key, user_id, body)) for key in self._verifying):
            raise InvalidPayload("signature does not match")
        name, *args = body.split(SEPARATOR)
        if action is not None and name != action:
            raise InvalidPayload("payload is for another action")
        return args

    @staticmethod
    def pattern(action: str) -> re.Pattern[str]:
        """For ``CallbackQueryHandler(pattern=...)``: payloads of this action (unverified).
        Every such action is recorded (``signed_action``), so tests can press each one."""
        compiled = re.compile(rf"^{re.escape(action)}(?:\|[^|]*)*\|[A-Za-z0-9_-]{{{MAC_CHARS}}}$")
        _SIGNED_ACTIONS[compiled.pattern] = action
        return compiled

    @staticmethod
    def signed_action(pattern: re.Pattern[str] | str) -> str | None:
        """The action whose signed payloads ``pattern`` matches (made by ``pattern``), if any."""
        return _SIGNED_ACTIONS.get(pattern.pattern if isinstance(pattern, re.Pattern) else pattern)

    @staticmethod
    def _mac(key: bytes, user_id: int, body: str) -> str:
        digest = hmac.new(key, f"{user_id}{SEPARATOR}{body}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode()[:MAC_CHARS]
