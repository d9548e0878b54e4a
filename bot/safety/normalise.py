"""Text normalisation for the safety detector: the same steps for a client's message and for
the words in the rules, so that a rule written once matches the many ways a message is typed.

``base_tokens(text)`` does what every language shares:

1. Unicode compatibility form (NFKD), combining marks dropped: ``suïcide`` → ``suicide``,
   ``ĳ`` → ``ij``; then case folded.
2. Apostrophes removed (``I'm`` → ``im``, ``don't`` → ``dont``); every other character that is
   not a letter or digit (punctuation, emoji, symbols) is a space, except that ``. ! ? ;`` and
   a line break end a sentence (a ``|`` token). An ellipsis (``...``, ``…``) and commas do
   not: chat messages use them as pauses ("I want to... die").
3. Digits inside a word read as letters (``su1c1de`` → ``suicide``, ``k1ll`` → ``kill``).
4. A letter repeated is one letter (``diieeee`` → ``die``, ``zelfmoord`` → ``zelfmord``).
   Rules are read through the same step, so they are written normally ("kill", "zelfmoord").

A :class:`LanguageNormaliser` then adds a language's own steps, from its rule file:
misspellings of the words listed under ``fuzzy:`` are corrected (one edit, or two for long
words; rapidfuzz's optimal-string-alignment distance, which counts a swap of two letters as
one edit), and ``variants:`` (``kms`` → ``kill myself``, ``wanna`` → ``want to``) are replaced.

The result is one string: tokens joined by single spaces, starting and ending with the
sentence mark ``|``, with a space before and after every token (``" | i want to die | "``),
which the compiled
patterns in :mod:`bot.safety.phrases` expect.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from functools import lru_cache

from rapidfuzz import process
from rapidfuzz.distance import OSA

BOUNDARY = "|"
_APOSTROPHES = re.compile(r"['’‘`´ʼ]")
_ELLIPSIS = re.compile(r"\.{2,}|…")
_SENTENCE_END = re.compile(r"[.!?;\n\r]+")
_NOT_WORD = re.compile(r"[^a-z0-9|]+")
_REPEATS = re.compile(r"([a-z])\1+")
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b"})
_MIXED = re.compile(r"\b(?=[a-z]*[0-9])(?=[0-9]*[a-z])[a-z0-9]+\b")  # letters and digits in one word
_BOUNDARIES = re.compile(r"(?:\s*\|)+\s*")
# Combining marks (accents) after NFKD; the unicodedata test below is the fallback for others.
_COMBINING = re.compile(r"[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")


def fold(text: str) -> str:
    """Case folded, accents and other combining marks removed, compatibility forms resolved."""
    if text.isascii():
        return text.lower()
    decomposed = _COMBINING.sub("", unicodedata.normalize("NFKD", text))
    if not decomposed.isascii():
        decomposed = "".join(c for c in decomposed if not unicodedata.combining(c))
    return decomposed.casefold()


def normalise_token(token: str) -> str:
    """One word: digits inside a word read as letters, repeated letters once."""
    tokens = base_tokens(token)
    return tokens[0] if tokens else ""


def base_tokens(text: str) -> list[str]:
    """The tokens every language shares (steps 1-4), with sentence marks between sentences."""
    text = _APOSTROPHES.sub("", fold(text))
    text = _ELLIPSIS.sub(" ", text)
    text = _SENTENCE_END.sub(" | ", text)
    text = _MIXED.sub(lambda m: m.group(0).translate(_LEET), text)
    text = _REPEATS.sub(r"\1", text)
    text = _BOUNDARIES.sub(" | ", _NOT_WORD.sub(" ", text))
    tokens = text.split()
    while tokens and tokens[0] == BOUNDARY:
        tokens.pop(0)
    while tokens and tokens[-1] == BOUNDARY:
        tokens.pop()
    return tokens


class LanguageNormaliser:
    """Base tokens, then one language's spelling corrections and variants."""

    FUZZY_MIN_LENGTH = 5  # shorter words are left alone: too many real words are one edit apart

    def __init__(self, fuzzy_words: Iterable[str], variants: Mapping[str, str], known_words: Iterable[str]):
        self.fuzzy_words = sorted({" ".join(base_tokens(w)) for w in fuzzy_words})
        self.known = frozenset(known_words) | frozenset(self.fuzzy_words)
        pairs = {" ".join(base_tokens(k)): " ".join(base_tokens(v)) for k, v in variants.items()}
        self.variants = {k: v for k, v in pairs.items() if k}
        if self.variants:
            alternatives = "|".join(re.escape(k) for k in sorted(self.variants, key=len, reverse=True))
            self._variant_re: re.Pattern[str] | None = re.compile(rf"(?<= )(?:{alternatives})(?= )")
        else:
            self._variant_re = None
        self._correct = lru_cache(maxsize=65536)(self._correct_uncached)

    def _correct_uncached(self, token: str) -> str:
        if len(token) < self.FUZZY_MIN_LENGTH or token in self.known or not self.fuzzy_words:
            return token
        limit = 2 if len(token) >= 9 else 1
        found = process.extractOne(token, self.fuzzy_words, scorer=OSA.distance, score_cutoff=limit)
        return found[0] if found else token

    def tokens(self, base: list[str]) -> list[str]:
        return [self._correct(t) for t in base]

    def text(self, base: list[str]) -> str:
        """The matchable form: ``" | tok tok | tok | "``."""
        joined = " | " + " ".join(self.tokens(base)) + " | "
        if self._variant_re is not None:
            joined = self._variant_re.sub(lambda m: self.variants[m.group(0)], joined)
        return joined

    def __call__(self, text: str) -> str:
        return self.text(base_tokens(text))

    def phrase_words(self, words: str) -> list[str]:
        """The literal words of a rule, as tokens: the same steps as a message, except the
        spelling correction (a rule's words are spelled as meant)."""
        joined = " | " + " ".join(base_tokens(words)) + " | "
        if self._variant_re is not None:
            joined = self._variant_re.sub(lambda m: self.variants[m.group(0)], joined)
        return [t for t in joined.split() if t != BOUNDARY]
