"""The phrase syntax of the safety rules, compiled to regular expressions over normalised text.

A phrase is words in order, as a client would type them; a few signs widen it:

    word        that word (after normalisation: case, accents, repeated letters do not matter)
    word*       any word that starts with it: ``kill*`` is kill, kills, killing, killed
    (a|b c)     one of the alternatives; an alternative may be several words
    [a|b]       optional: one of the alternatives, or nothing
    ...         up to five other words in between (never across the end of a sentence)
    {name}      one of the phrases listed under ``words: name:`` in the same file
    #           a number (``when i was #``)
    ^  $        the start, the end of a sentence

The normalised text looks like ``" | i want to die | "``: a space before and after every
token. A compiled phrase starts with that space, and each element consumes its tokens with
the space after them.

Each phrase also gets an *anchor*: sets of words such that a sentence the phrase matches
contains at least one word of every set (``"stem*"`` stands for a word*); an empty anchor
requires nothing. A match never crosses the end of a sentence, so the detector tries a phrase
only on the sentences that have its anchor, which keeps it fast on long messages.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

GAP_WORDS = 5
_TOKEN = re.compile(r"\s*(\.\.\.|\(|\)|\[|\]|\||\{[a-z0-9_]+\}|\^|\$|#|[^\s()\[\]|{}]+)")
_WORD = "[a-z0-9]+"


class PhraseError(ValueError):
    """A phrase that does not follow the syntax; the message says where."""


Anchor = tuple[frozenset[str], ...]  # every set must be met; () requires nothing


@dataclass
class Compiled:
    regex: str
    words: set[str] = field(default_factory=set)  # the literal words, for the spelling step
    anchor: Anchor = ()


def _best(anchor: Anchor) -> frozenset[str]:
    """The most selective set of an anchor: fewest words, then the longest shortest word."""
    return min(anchor, key=lambda a: (len(a), -min(len(w) for w in a)))


def either(anchors: list[Anchor]) -> Anchor:
    """The anchor of one-of several alternatives: one set, the union of each one's best set."""
    if not anchors or any(not a for a in anchors):
        return ()
    return (frozenset().union(*(_best(a) for a in anchors)),)


class _Parser:
    def __init__(self, phrase: str, normalise_words: Callable[[str], list[str]],
                 lists: Mapping[str, tuple[str, Anchor]] | None, in_list: bool):
        self.phrase = phrase
        self.normalise_words = normalise_words
        self.lists = lists or {}
        self.in_list = in_list
        self.tokens = self._tokenise(phrase)
        self.pos = 0
        self.words: set[str] = set()

    def _tokenise(self, phrase: str) -> list[str]:
        tokens, pos = [], 0
        phrase = phrase.strip()
        while pos < len(phrase):
            m = _TOKEN.match(phrase, pos)
            if not m:
                raise PhraseError(f"cannot read {phrase[pos:]!r}")
            tokens.append(m.group(1))
            pos = m.end()
        if not tokens:
            raise PhraseError("the phrase is empty")
        return tokens

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def parse(self) -> tuple[str, Anchor]:
        regex, has_word, anchor = self.sequence(top=True)
        if self.peek() is not None:
            raise PhraseError(f"unexpected {self.peek()!r} (a ')' or ']' without its partner?)")
        if not has_word:
            raise PhraseError("a phrase needs at least one word")
        return regex, anchor

    def alternatives(self, closing: str) -> tuple[str, bool, Anchor]:
        options, all_have_words = [], True
        anchors: list[Anchor] = []
        while True:
            regex, has_word, anchor = self.sequence(top=False)
            if not regex:
                raise PhraseError("an empty alternative (two | in a row, or '()')")
            options.append(regex)
            anchors.append(anchor)
            all_have_words &= has_word
            token = self.peek()
            if token == "|":  # a phrase token, not a password  # nosec B105
                self.pos += 1
                continue
            if token != closing:
                raise PhraseError(f"{'(' if closing == ')' else '['} without its closing {closing}")
            self.pos += 1
            return "(?:" + "|".join(options) + ")", all_have_words, either(anchors)

    def sequence(self, top: bool) -> tuple[str, bool, Anchor]:
        parts: list[str] = []
        literal: list[str] = []
        anchors: list[frozenset[str]] = []  # one set per element that must be there
        has_word = False

        def flush() -> None:
            if literal:
                for word in self.normalise_words(" ".join(literal)):
                    parts.append(re.escape(word) + " ")
                    self.words.add(word)
                    anchors.append(frozenset({word}))
                literal.clear()

        while (token := self.peek()) is not None:
            if token in (")", "]", "|"):
                if top:
                    raise PhraseError(f"{token!r} outside brackets")
                break
            self.pos += 1
            if token == "(":  # a phrase token, not a password  # nosec B105
                flush()
                regex, words, anchor = self.alternatives(")")
                parts.append(regex)
                has_word |= words
                anchors.extend(anchor)
            elif token == "[":  # a phrase token, not a password  # nosec B105
                flush()
                regex, _, _ = self.alternatives("]")
                gap = f"(?:(?:{_WORD} ){{0,{GAP_WORDS}}})"
                # "[...]" is "..." (which may already be empty): an optional gap would make the
                # regex engine try every split twice.
                parts.append(gap[3:-1] if regex == gap else regex + "?")
            elif token == "...":  # a phrase token, not a password  # nosec B105
                flush()
                parts.append(f"(?:{_WORD} ){{0,{GAP_WORDS}}}")
            elif token == "#":  # a phrase token, not a password  # nosec B105
                flush()
                parts.append("[0-9]+ ")
                has_word = True
            elif token in ("^", "$"):
                flush()
                parts.append(r"\| ")
            elif token.startswith("{"):
                flush()
                name = token[1:-1]
                if self.in_list:
                    raise PhraseError(f"{token}: a word list cannot use another list")
                if name not in self.lists:
                    raise PhraseError(f"{token}: no such list under 'words:'")
                regex, anchor = self.lists[name]
                parts.append(regex)
                anchors.extend(anchor)
                has_word = True
            elif token.endswith("*"):
                flush()
                stem = self.normalise_words(token.rstrip("*"))
                if len(stem) != 1 or len(stem[0]) < 3:
                    raise PhraseError(f"{token!r}: a word* needs a word of at least 3 letters before the *")
                parts.append(re.escape(stem[0]) + f"{_WORD[:-1]}* ")
                self.words.add(stem[0])
                anchors.append(frozenset({stem[0] + "*"}))
                has_word = True
            elif "*" in token or not re.search(r"\w", token):
                raise PhraseError(f"{token!r} is not a word (only letters and digits, or word*)")
            else:
                literal.append(token)
                has_word = True
        flush()
        return "".join(parts), has_word, tuple(dict.fromkeys(anchors))


def compile_phrase(phrase: str, normalise_words: Callable[[str], list[str]],
                   lists: Mapping[str, tuple[str, Anchor]] | None = None, *, in_list: bool = False) -> Compiled:
    """The regex (a string, not yet compiled) for one phrase, and its literal words.

    ``normalise_words`` turns literal words into normalised tokens (the same steps as
    messages); ``lists`` maps a word list's name to its compiled alternative and anchor.
    """
    parser = _Parser(phrase, normalise_words, lists, in_list)
    regex, anchor = parser.parse()
    return Compiled(regex if in_list else " " + regex, parser.words, anchor)
