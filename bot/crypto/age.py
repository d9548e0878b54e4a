"""The age file format (https://age-encryption.org/v1) for what only a therapist may read.

A therapist makes a key pair on their own computer (``imrs-bot keygen`` or the stock
``age-keygen``) and gives the bot only the public half, the *recipient* (``age1…``), with
``/setkey``. Whatever the bot encrypts to it (the readiness summaries, once the check-in
exists) opens with ``age -d -i key.txt`` or ``imrs-bot decrypt``; the bot, its operator and
its database cannot read it. The private half (``AGE-SECRET-KEY-1…``) never goes to the bot.

The cryptography is pyrage's (Python bindings of the Rust ``age`` crate); this module only
tells people clearly what is wrong with what they pasted, computes the fingerprint, and
reads and writes key files in ``age-keygen``'s format.

Fingerprint (shown by the bot and the CLI, to compare in person; the browser reader of
issue 14 computes the same)::

    canonical = the recipient in lower case, no whitespace   ("age1…", 62 ASCII characters)
    digest    = SHA-256(canonical as ASCII bytes)
    fingerprint = the first 8 bytes of digest, as upper-case hex, in 4 groups of 4
                  characters separated by one space            e.g. "3F9A 12BC 7D01 E4A2"

In a browser: ``crypto.subtle.digest("SHA-256", new TextEncoder().encode(canonical))``,
then the first 8 bytes as hex. 64 bits: enough to notice a swapped key when comparing
by eye; an attacker would need about 2^64 tries to make a key with a chosen fingerprint.

Messages of the exceptions here never contain a key (public or secret) or plaintext.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyrage
from pyrage import x25519

RECIPIENT_PREFIX = "age1"
SECRET_PREFIX = "AGE-SECRET-KEY-1"  # the format's marker, not a key  # nosec B105
RECIPIENT_LENGTH = 62  # "age1" + 52 characters of key + 6 of checksum (Bech32)
FINGERPRINT_BYTES = 8
# A fingerprint as shown: 4 groups of 4 upper-case hex digits.
FINGERPRINT_PATTERN = re.compile(r"^[0-9A-F]{4}( [0-9A-F]{4}){3}$")

_BECH32_DATA = set("qpzry9x8gf2tvdw0s3jn54khce6mua7l")  # the characters after "age1"
#: A private key anywhere in a text: an age identity (also a plugin's) or any PEM private key.
SECRET_KEY_PATTERN = re.compile(r"AGE-SECRET-KEY-1|AGE-PLUGIN-[A-Z0-9-]*1|-----BEGIN [A-Z ]*PRIVATE KEY-----", re.IGNORECASE)
_SSH = re.compile(r"^(ssh-(rsa|ed25519|dss)|ecdsa-sha2-|sk-(ssh|ecdsa)-)", re.IGNORECASE)
# What age-keygen prints around the key: "# public key: age1…" (in key.txt), "Public key: age1…".
_LABEL = re.compile(r"^#?\s*public key:\s*", re.IGNORECASE)
AGE_HEADER = b"age-encryption.org/v1\n"
AGE_ARMOR = b"-----BEGIN AGE ENCRYPTED FILE-----"


class AgeKeyError(ValueError):
    """What was given is not a usable age recipient. ``reason`` names what is wrong (the bot
    picks its words by it): ``empty``, ``secret_key``, ``ssh_key``, ``plugin``, ``length``,
    ``characters``, ``checksum``, ``not_age``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class AgeDecryptError(Exception):
    """A file did not decrypt. ``reason``: ``not_age`` (not an age file), ``not_for_you`` (made
    for another key), ``damaged`` (altered or cut short), ``identity`` (the key file is unusable)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class AgeRecipient:
    """A validated X25519 recipient, in canonical (lower-case) form."""

    text: str

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.text)

    def __str__(self) -> str:
        return self.text


def fingerprint(recipient: str) -> str:
    """The short fingerprint of a canonical recipient (see the module's docstring)."""
    digest = hashlib.sha256(recipient.strip().lower().encode("ascii")).digest()[:FINGERPRINT_BYTES]
    hexed = digest.hex().upper()
    return " ".join(hexed[i : i + 4] for i in range(0, len(hexed), 4))


def contains_secret_key(text: str) -> bool:
    """Whether ``text`` holds a private key (an age identity, or any PEM private key)."""
    return SECRET_KEY_PATTERN.search(text or "") is not None


def parse_recipient(text: str | None) -> AgeRecipient:
    """A pasted age public key, validated; whitespace and line breaks around or inside it
    and age-keygen's "public key:" label are tolerated. Raises :class:`AgeKeyError`."""
    raw = (text or "").strip()
    if not raw:
        raise AgeKeyError("empty", "no key was given")
    if contains_secret_key(raw):
        raise AgeKeyError("secret_key", "this is a private key (an age identity), not a public key")
    if _SSH.match(raw):
        raise AgeKeyError("ssh_key", "this is an SSH key; an age public key starts with age1")
    candidate = "".join(_LABEL.sub("", raw).split())
    lowered = candidate.lower()
    if candidate != lowered and candidate != candidate.upper():
        raise AgeKeyError("characters", "mixed upper and lower case: not an age key as age-keygen writes it")
    if not lowered.startswith(RECIPIENT_PREFIX):
        raise AgeKeyError("not_age", "not an age public key (those start with age1)")
    body = lowered[len(RECIPIENT_PREFIX) :]
    if "1" in body:  # Bech32 data has no "1": a longer prefix such as age1yubikey1…, age1pq1…
        raise AgeKeyError("plugin", "an age key for a plugin or another key type, not a standard X25519 key")
    if not set(body) <= _BECH32_DATA:
        raise AgeKeyError("characters", "contains characters an age key cannot contain")
    if len(lowered) != RECIPIENT_LENGTH:
        raise AgeKeyError("length", f"an age public key has {RECIPIENT_LENGTH} characters, this has {len(lowered)}")
    try:
        x25519.Recipient.from_str(lowered)
    except pyrage.RecipientError:
        # Right shape, right characters: the Bech32 checksum does not match (a typo).
        raise AgeKeyError("checksum", "the key's checksum does not match: a character is wrong") from None
    return AgeRecipient(lowered)


def encrypt(data: bytes, recipient: AgeRecipient | str) -> bytes:
    """``data`` encrypted to one recipient, as a binary age file."""
    checked = recipient if isinstance(recipient, AgeRecipient) else parse_recipient(recipient)
    return pyrage.encrypt(data, [x25519.Recipient.from_str(checked.text)])


def parse_identities(text: str) -> list[x25519.Identity]:
    """The identities in an age key file (``age-keygen``'s format: ``#`` comments, blank
    lines, one ``AGE-SECRET-KEY-1…`` per line), or one pasted key. Raises AgeDecryptError."""
    identities: list[x25519.Identity] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not line.upper().startswith(SECRET_PREFIX):
            raise AgeDecryptError(
                "identity", "the identity file holds a line that is not an age secret key (AGE-SECRET-KEY-1…)"
            )
        try:
            identities.append(x25519.Identity.from_str(line.upper()))
        except pyrage.IdentityError:
            raise AgeDecryptError("identity", "the identity file holds a damaged age secret key") from None
    if not identities:
        raise AgeDecryptError("identity", "the identity file holds no age secret key (AGE-SECRET-KEY-1…)")
    return identities


def decrypt(data: bytes, identities: str | list[x25519.Identity]) -> bytes:
    """Decrypt an age file (binary or ASCII-armored) with an identity file's text, a pasted
    secret key, or parsed identities. Raises :class:`AgeDecryptError`."""
    keys = parse_identities(identities) if isinstance(identities, str) else identities
    if not (data.startswith(AGE_HEADER) or data.lstrip().startswith(AGE_ARMOR)):
        raise AgeDecryptError("not_age", "this is not an age-encrypted file")
    try:
        return pyrage.decrypt(data, keys)
    except pyrage.DecryptError as error:
        if "no matching keys" in str(error).lower():
            raise AgeDecryptError(
                "not_for_you", "this file was not encrypted to this key (wrong identity file)"
            ) from None
        raise AgeDecryptError("damaged", "the file is damaged or incomplete (it does not decrypt)") from None


@dataclass(frozen=True)
class KeyPair:
    """A new key pair; ``identity_file`` is the text of a key file as age-keygen writes it."""

    recipient: AgeRecipient
    identity_file: str

    @property
    def fingerprint(self) -> str:
        return self.recipient.fingerprint


def generate(now: datetime | None = None) -> KeyPair:
    identity = x25519.Identity.generate()
    recipient = AgeRecipient(str(identity.to_public()))
    created = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    text = (
        f"# created: {created.isoformat().replace('+00:00', 'Z')}\n"
        f"# public key: {recipient.text}\n"
        f"{identity}\n"
    )
    return KeyPair(recipient, text)


def write_private(path: Path, data: bytes) -> None:
    """Create ``path`` readable only by its owner (0600), refusing to overwrite a file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
