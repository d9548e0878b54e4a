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
_ELLIPSIS = re.compile(r"\.{2,}|…")
_NOT_ASCII = re.compile(r"[^\x00-\x7f]+")
_REPEATS = re.compile(r"([a-z])\1+")
_DIGIT = re.compile(r"[0-9]")
_LETTER = re.compile(r"[a-z]")
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b"})
# Combining marks (accents) after NFKD; the unicodedata test below is the fallback for others.
_COMBINING = re.compile(r"[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")
_APOSTROPHES = "'`’‘´ʼ"


def _ascii_table() -> dict[int, str | None]:
    """One pass over the folded text: apostrophes vanish, sentence ends become a mark, every
    other character that is not a letter or digit becomes a space."""
    table: dict[int, str | None] = {}
    for code in range(128):
        char = chr(code)
        if char.isascii() and (char.isdigit() or "a" <= char <= "z"):
            continue
        table[code] = " "
    for char in ".!?;\n\r":
        table[ord(char)] = " | "
    table[ord("|")] = " | "
    for char in _APOSTROPHES:
        table[ord(char)] = None
    return table


_TABLE = _ascii_table()


def fold(text: str) -> str:
    """Case folded, accents and other combining marks removed, compatibility forms resolved."""
    if text.isascii():
        return text.lower()
    decomposed = _COMBINING.sub("", unicodedata.normalize("NFKD", text))
    if not decomposed.isascii():
        decomposed = "".join(c for c in decomposed if not unicodedata.combining(c))
    return decomposed.casefold()


@lru_cache(maxsize=65536)
def normalise_token(token: str) -> str:
    """One word: digits inside a word read as letters, repeated letters once."""
    if _DIGIT.search(token) and _LETTER.search(token):
        token = token.translate(_LEET)
    return _REPEATS.sub(r"\1", token)


_RUNS_OF_MARKS = re.compile(r"\|(?:\s+\|)+")
_TOKEN_CACHE: dict[str, str] = {}


def _token(token: str) -> str:
    found = _TOKEN_CACHE.get(token)
    if found is None:
        found = normalise_token(token)
        if len(_TOKEN_CACHE) < 200_000:
            _TOKEN_CACHE[token] = found
    return found


def base_tokens(text: str) -> list[str]:
    """The tokens every language shares (steps 1-4), with sentence marks between sentences."""
    text = fold(text)
    if ".." in text or "…" in text:
        text = _ELLIPSIS.sub(" ", text)
    text = text.translate(_TABLE)
    if not text.isascii():
        text = _NOT_ASCII.sub(" ", text)
    if "|" in text:
        text = _RUNS_OF_MARKS.sub("|", text).strip(" |")
    cache = _TOKEN_CACHE
    return [cache[t] if t in cache else _token(t) for t in text.split()]


class LanguageNormaliser:
    """Base tokens, then one language's spelling corrections and variants."""

    FUZZY_MIN_LENGTH = 5  # shorter words are left alone: too many real words are one edit apart

    def __init__(self, fuzzy_words: Iterable[str], variants: Mapping[str, str], known_words: Iterable[str]):
        self.fuzzy_words = sorted({" ".join(base_tokens(w)) for w in fuzzy_words})
        self.known = frozenset(known_words) | frozenset(self.fuzzy_words)
        self.variants = {
            tuple(base_tokens(k)): tuple(base_tokens(v)) for k, v in variants.items() if base_tokens(k)
        }
        # One-word variants by word; longer ones as " key " -> " value " over the joined text,
        # the longest first ("can not" before "not").
        self._single = {k[0]: " ".join(v) for k, v in self.variants.items() if len(k) == 1}
        self._multi = [(f" {' '.join(k)} ", f" {' '.join(v)} ")
                       for k, v in sorted(self.variants.items(), key=lambda kv: -len(kv[0])) if len(k) > 1]
        self._corrected: dict[str, str] = {}  # a cache of _correct_uncached

    def _correct(self, token: str) -> str:
        found = self._corrected.get(token)
        if found is None:
            found = self._correct_uncached(token)
            if len(self._corrected) < 200_000:
                self._corrected[token] = found
        return found

    def _correct_uncached(self, token: str) -> str:
        if len(token) < self.FUZZY_MIN_LENGTH or token in self.known or not self.fuzzy_words:
            return token
        limit = 2 if len(token) >= 9 else 1
        found = process.extractOne(token, self.fuzzy_words, scorer=OSA.distance, score_cutoff=limit)
        return found[0] if found else token

    def _replace_variants(self, tokens: list[str]) -> list[str]:
        joined = f" {' '.join(tokens)} "
        changed = False
        for key, value in self._multi:
            while key in joined:
                joined = joined.replace(key, value)
                changed = True
        words = joined.split() if changed else tokens
        single = self._single
        if single.keys().isdisjoint(words):
            return words
        return " ".join([single.get(w, w) for w in words]).split()

    def tokens(self, base: list[str]) -> list[str]:
        """Spelling corrected, then variants replaced."""
        cache, correct = self._corrected, self._correct
        return self._replace_variants([cache[t] if t in cache else correct(t) for t in base])

    def text(self, base: list[str]) -> str:
        """The matchable form: ``" | tok tok | tok | "``."""
        return " | " + " ".join(self.tokens(base)) + " | "

    def __call__(self, text: str) -> str:
        return self.text(base_tokens(text))

    def phrase_words(self, words: str) -> list[str]:
        """The literal words of a rule, as tokens: the same steps as a message, except the
        spelling correction (a rule's words are spelled as meant)."""
        return [t for t in self._replace_variants(base_tokens(words)) if t != BOUNDARY]
