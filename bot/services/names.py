"""Checking the names people type: a client's alias (pseudonym) and a display name.

Both are personal free text: they are stored encrypted and never logged. These functions
only tidy and check them; they return None for anything unusable, so that the handler can
say what is wrong and ask again.
"""

from __future__ import annotations

import unicodedata

ALIAS_MIN, ALIAS_MAX = 1, 64
DISPLAY_NAME_MIN, DISPLAY_NAME_MAX = 2, 64


class InvalidAlias(Exception):
    """A typed alias (pseudonym) that ``clean_alias`` cannot use: the person is asked again."""


class InvalidDisplayName(Exception):
    """A typed display name that ``clean_display_name`` cannot use: the person is asked again."""


def _clean(text: str | None, low: int, high: int) -> str | None:
    if text is None:
        return None
    # One line, single spaces; no control or format characters (e.g. right-to-left overrides).
    tidy = " ".join(text.split())
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Co", "Cs") for ch in tidy):
        return None
    if not low <= len(tidy) <= high:
        return None
    if not any(ch.isalnum() for ch in tidy):
        return None
    return tidy


def clean_alias(text: str | None) -> str | None:
    """A pseudonym for a client: 1-64 characters, at least one letter or digit."""
    return _clean(text, ALIAS_MIN, ALIAS_MAX)


def clean_display_name(text: str | None) -> str | None:
    """The name a therapist or staff member is shown by: 2-64 characters."""
    return _clean(text, DISPLAY_NAME_MIN, DISPLAY_NAME_MAX)
