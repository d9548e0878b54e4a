"""The safety rules: ``content/safety_rules.<language>.yaml``, read, checked and compiled.

The files are data a clinician reviews (content/README.md, "Safety rules"). Loading checks
their shape and every phrase; a mistake stops loading with one :class:`SafetyRulesError`
naming the file and the rule. Whether each rule matches its own examples is checked by
:func:`example_problems` (run by ``imrs-bot content check`` and the tests), not at load.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from bot.content import ContentError, safe_load
from bot.safety.normalise import BOUNDARY, LanguageNormaliser, base_tokens
from bot.safety.phrases import Anchor, PhraseError, compile_phrase, either

RULE_FILE_GLOB = "safety_rules.*.yaml"
ROUTES = ("risk", "boundary")  # in order of precedence: risk wins
_FILE_KEYS = {"stopwords", "fuzzy", "variants", "words", "rules"}
_RULE_KEYS = {"id", "route", "description", "patterns", "unless", "examples"}
_ID = re.compile(r"[a-z][a-z0-9_.-]*")
_LIST_NAME = re.compile(r"[a-z0-9_]+")
# How far from a match an ``unless`` phrase still excuses it, in words: near enough to be about
# the same thing, so that a stray word in a long message cannot hide a risk phrase.
UNLESS_REACH = 10


class SafetyRulesError(ContentError):
    """A safety rule file is malformed; the message names the file and the rule."""


@dataclass
class Rule:
    id: str
    route: str
    description: str
    language: str
    patterns: tuple[tuple[re.Pattern[str], Anchor], ...]  # (regex, anchor: see phrases.py)
    unless: tuple[re.Pattern[str], ...]
    match_examples: tuple[str, ...]
    must_not_match: tuple[str, ...]
    file: Path
    line: int
    # Filled by the RuleSet: per pattern, the ids of its anchor's sets (see Prepared).
    anchor_ids: tuple[tuple[int, ...], ...] = ()

    def matches(self, text: str) -> bool:
        """Does this rule match the normalised ``text`` (``" | ... | "``)? Every sentence tried."""
        return any(self.matches_sentence(w, None, s, o) for w, s, o in sentences(text))

    def matches_sentence(self, window: str, only: tuple[int, ...] | None = None,
                         sentence: str | None = None, offset: int = 0) -> bool:
        """Does a pattern (of those numbered in ``only``, else any) match this window of a
        framed sentence (``" | ... | "``; the window is the sentence unless given) where none
        of ``unless`` matches near it (``UNLESS_REACH`` words either side, in the sentence)?"""
        patterns = self.patterns if only is None else [self.patterns[i] for i in only]
        if sentence is None:
            sentence = window
        tokens: list[str] | None = None
        for pattern, _ in patterns:
            for match in pattern.finditer(window):
                if not self.unless:
                    return True
                if tokens is None:
                    tokens = _words(sentence)
                if not self._excused(sentence, tokens, match.start() + offset, match.end() + offset):
                    return True
        return False

    def _excused(self, sentence: str, tokens: list[str], start: int, end: int) -> bool:
        # Every token has one space before it: spaces up to a position count the tokens.
        first = sentence.count(" ", 0, start + 1) - 1
        last = sentence.count(" ", 0, end) - 1
        window = " " + " ".join(tokens[max(0, first - UNLESS_REACH): last + UNLESS_REACH]) + " "
        return any(u.search(window) for u in self.unless)

    def matches_prepared(self, prepared: Prepared) -> bool:
        """Like ``matches``, trying each pattern only on the sentences that have its anchor."""
        candidates: dict[int, list[int]] = {}
        for index, ids in enumerate(self.anchor_ids):
            mask = prepared.everywhere
            for set_id in ids:
                mask &= prepared.set_masks.get(set_id, 0)
                if not mask:
                    break
            while mask:
                bit = mask & -mask
                candidates.setdefault(bit.bit_length() - 1, []).append(index)
                mask ^= bit
        return any(self.matches_sentence(prepared.sentences[i][0], tuple(found), prepared.sentences[i][1], prepared.sentences[i][2])
                   for i, found in sorted(candidates.items()))


@lru_cache(maxsize=256)
def _words(sentence: str) -> list[str]:
    """A sentence's words (cached: the windows of a long sentence share it)."""
    return sentence.split()


#: ``re.compile`` remembering every pattern it made: re's own cache (512) is smaller than the
#: rules' patterns, and `imrs-bot content check` (and its tests) load the same rules again.
_compile_regex = lru_cache(maxsize=4096)(re.compile)


WINDOW = 60  # words: a long sentence is matched in overlapping windows of this many words


def sentences(text: str) -> list[tuple[str, str, int]]:
    """The framed sentences (``" | words | "``) of a normalised text, as (window, sentence,
    where the window starts in the sentence).

    A sentence longer than ``WINDOW`` words is cut into windows of that many words, each
    overlapping the next by half (no phrase spans more than half a window), so that a long
    message without punctuation costs about as much as one with it. A window is a slice of its
    sentence: one that does not start or end the sentence has no ``|`` on that side, so ``^``
    and ``$`` do not match there; ``unless`` is still read in the whole sentence.
    """
    framed = []
    half = WINDOW // 2
    for part in text.split(f" {BOUNDARY} "):
        words = [w for w in part.split() if w != BOUNDARY]
        if not words:
            continue
        sentence = f" {BOUNDARY} {' '.join(words)} {BOUNDARY} "
        if len(words) <= WINDOW:
            framed.append((sentence, sentence, 0))
            continue
        starts = [2]  # where each word's leading space is
        for word in words[:-1]:
            starts.append(starts[-1] + len(word) + 1)
        for first in range(0, len(words) - half, half):
            last = min(first + WINDOW, len(words))
            begin = 0 if first == 0 else starts[first]
            end = len(sentence) if last == len(words) else starts[last] + 1
            framed.append((sentence[begin:end], sentence, begin))
    return framed


@dataclass
class Prepared:
    """A normalised message, cut into sentences, with which anchor sets each sentence meets."""

    text: str
    sentences: list[tuple[str, str, int]]  # (window, sentence, offset): see sentences()
    set_masks: dict[int, int]  # anchor set id -> bit i set when sentence i has a word of it
    everywhere: int  # all sentences' bits


@dataclass
class RuleSet:
    """One language's rules, normaliser and stopwords."""

    language: str
    file: Path
    normaliser: LanguageNormaliser
    stopwords: frozenset[str]
    rules: list[Rule] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Each pattern is pre-checked on its two most selective anchor sets (fewest and
        # longest words): enough to skip almost every sentence, cheap for common words.
        set_ids: dict[frozenset[str], int] = {}
        for rule in self.rules:
            rule.anchor_ids = tuple(
                tuple(set_ids.setdefault(s, len(set_ids))
                      for s in sorted(anchor, key=lambda a: (len(a), -min(map(len, a))))[:2])
                for _, anchor in rule.patterns
            )
        self._sets_of: dict[str, list[int]] = {}  # a word or stem* -> the anchor sets it meets
        for words, set_id in set_ids.items():
            for word in words:
                self._sets_of.setdefault(word, []).append(set_id)
        stems = {w[:-1] for w in self._sets_of if w.endswith("*")}
        self._stems = frozenset(stems)
        self._stem_lengths = sorted({len(s) for s in stems})
        self._word_sets: dict[str, tuple[int, ...]] = {}  # a cache: word -> the sets it meets

    def _sets_for(self, word: str) -> tuple[int, ...]:
        found = self._word_sets.get(word)
        if found is None:
            keys = [word, *(word[:n] + "*" for n in self._stem_lengths if word[:n] in self._stems)]
            found = tuple(set_id for key in keys for set_id in self._sets_of.get(key, ()))
            if len(self._word_sets) < 100_000:
                self._word_sets[word] = found
        return found

    def prepare(self, text: str) -> Prepared:
        """Cut a normalised message into sentences and note which anchor sets each one meets."""
        framed = sentences(text)
        word_masks: dict[str, int] = {}
        get = word_masks.get
        for index, (window, _, _) in enumerate(framed):
            bit = 1 << index
            for word in window.split():
                word_masks[word] = get(word, 0) | bit
        set_masks: dict[int, int] = {}
        cache, sets_for = self._word_sets, self._sets_for
        for word, mask in word_masks.items():
            for set_id in cache[word] if word in cache else sets_for(word):
                set_masks[set_id] = set_masks.get(set_id, 0) | mask
        return Prepared(text, framed, set_masks, (1 << len(framed)) - 1)

    def by_route(self, route: str) -> list[Rule]:
        return [r for r in self.rules if r.route == route]


def rule_files(content_root: Path) -> dict[str, Path]:
    """The rule files by language: ``safety_rules.en.yaml`` → ``{"en": path}``."""
    found = {}
    for path in sorted(content_root.glob(RULE_FILE_GLOB)):
        language = path.name.split(".")[1]
        found[language] = path
    return found


def _shown(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def _line_of(lines: list[str], rule_id: str) -> int:
    pattern = re.compile(rf"^\s*-?\s*id:\s*['\"]?{re.escape(rule_id)}['\"]?\s*(?:#.*)?$")
    return next((i for i, line in enumerate(lines, 1) if pattern.match(line)), 1)


def _string_list(value: Any, what: str, fail, *, allow_empty: bool = False) -> list[str]:
    if value is None and allow_empty:
        return []
    if not isinstance(value, list):
        fail(f"{what} must be a list of texts")
    for item in value:
        if not isinstance(item, str) or not item.strip():
            fail(f"{what}: {item!r} is not a text (YAML reads on/off/yes/no and numbers otherwise: "
                 "put it in quotes)")
    if not value and not allow_empty:
        fail(f"{what} must not be empty")
    return value


def load_rule_file(path: Path, language: str) -> RuleSet:
    """Read, check and compile one language's rule file."""
    shown = _shown(path)

    def fail(message: str, rule: str | None = None) -> None:
        where = f"{shown}: rule {rule!r}" if rule else shown
        raise SafetyRulesError(f"{where}: {message}")

    try:
        raw = path.read_text(encoding="utf-8")
        data = safe_load(raw)
    except OSError as exc:
        raise SafetyRulesError(f"{shown}: cannot be read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise SafetyRulesError(f"{shown}: not valid YAML{at} ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict):
        fail("must be a mapping with 'rules:' (see content/README.md, 'Safety rules')")
    unknown = set(data) - _FILE_KEYS
    if unknown:
        fail(f"unknown section(s) {', '.join(sorted(map(str, unknown)))} (known: {', '.join(sorted(_FILE_KEYS))})")
    lines = raw.splitlines()

    stopwords = _string_list(data.get("stopwords"), "stopwords", fail)
    fuzzy = _string_list(data.get("fuzzy"), "fuzzy", fail, allow_empty=True)
    variants = data.get("variants") or {}
    if not isinstance(variants, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and base_tokens(k) and base_tokens(v) for k, v in variants.items()
    ):
        fail("variants must map a text to a text (kms: kill myself)")
    for word in fuzzy:
        if len(base_tokens(word)) != 1:
            fail(f"fuzzy: {word!r} must be one word")

    # Phrases are normalised without the spelling step; the known words come from them.
    plain = LanguageNormaliser((), variants, ())
    words_section = data.get("words") or {}
    if not isinstance(words_section, dict):
        fail("words must map a list name to a list of phrases")
    lists: dict[str, tuple[str, Anchor]] = {}
    known: set[str] = set()
    for name, phrases in words_section.items():
        if not isinstance(name, str) or not _LIST_NAME.fullmatch(name):
            fail(f"words: {name!r} is not a list name (lower-case letters, digits, _)")
        phrases = _string_list(phrases, f"words: {name}", fail)
        options, anchors = [], []
        for phrase in phrases:
            try:
                compiled = compile_phrase(phrase, plain.phrase_words, in_list=True)
            except PhraseError as exc:
                fail(f"words: {name}: {phrase!r}: {exc}")
            options.append(compiled.regex)
            anchors.append(compiled.anchor)
            known |= compiled.words
        lists[name] = ("(?:" + "|".join(options) + ")", either(anchors))

    rules_data = data.get("rules")
    if not isinstance(rules_data, list) or not rules_data:
        fail("needs 'rules:', a list of rules")
    pending: list[tuple[dict, list[str], list[str]]] = []
    seen: set[str] = set()
    for index, item in enumerate(rules_data, 1):
        if not isinstance(item, dict):
            fail(f"rule {index} must be a mapping with id, route, description, patterns, examples")
        rule_id = item.get("id")
        if not isinstance(rule_id, str) or not _ID.fullmatch(rule_id):
            fail(f"rule {index} needs an 'id' of lower-case letters, digits, '.', '_' or '-' (got {rule_id!r})")

        def rule_fail(message: str, rule_id: str = rule_id) -> None:
            fail(message, rule_id)

        if rule_id in seen:
            rule_fail("the id is used twice in this file")
        seen.add(rule_id)
        unknown = set(item) - _RULE_KEYS
        if unknown:
            rule_fail(f"unknown field(s) {', '.join(sorted(map(str, unknown)))} (known: {', '.join(sorted(_RULE_KEYS))})")
        if item.get("route") not in ROUTES:
            rule_fail(f"route must be one of {', '.join(ROUTES)} (got {item.get('route')!r})")
        if not isinstance(item.get("description"), str) or not item["description"].strip():
            rule_fail("needs a 'description' saying in words what it catches")
        patterns = _string_list(item.get("patterns"), "patterns", rule_fail)
        unless = _string_list(item.get("unless"), "unless", rule_fail, allow_empty=True)
        examples = item.get("examples")
        if not isinstance(examples, dict) or set(examples) - {"match", "must_not_match"}:
            rule_fail("needs 'examples:' with 'match:' (and optionally 'must_not_match:')")
        _string_list(examples.get("match"), "examples: match", rule_fail)
        _string_list(examples.get("must_not_match"), "examples: must_not_match", rule_fail, allow_empty=True)
        pending.append((item, patterns, unless))

    compiled_rules = []
    for item, patterns, unless in pending:
        regexes: dict[str, list[tuple[re.Pattern[str], Anchor]]] = {"patterns": [], "unless": []}
        for kind, phrases in (("patterns", patterns), ("unless", unless)):
            for phrase in phrases:
                try:
                    compiled = compile_phrase(phrase, plain.phrase_words, lists)
                    regexes[kind].append((_compile_regex(compiled.regex), compiled.anchor))
                except PhraseError as exc:
                    fail(f"{kind}: {phrase!r}: {exc}", item["id"])
                except re.error as exc:  # a bug in the compiler rather than in the rule
                    fail(f"{kind}: {phrase!r}: cannot be compiled ({exc})", item["id"])
                known |= compiled.words
        compiled_rules.append(Rule(
            id=item["id"], route=item["route"], description=item["description"].strip(), language=language,
            patterns=tuple(regexes["patterns"]), unless=tuple(p for p, _ in regexes["unless"]),
            match_examples=tuple(item["examples"]["match"]),
            must_not_match=tuple(item["examples"].get("must_not_match") or ()),
            file=path, line=_line_of(lines, item["id"]),
        ))
    stop = frozenset(t for w in stopwords for t in base_tokens(w))
    normaliser = LanguageNormaliser(fuzzy, variants, known | stop)
    return RuleSet(language, path, normaliser, stop, compiled_rules)


def load_rules(content_root: Path) -> dict[str, RuleSet]:
    """Every language's rule set; raises SafetyRulesError naming the file and rule at fault."""
    files = rule_files(content_root)
    if not files:
        raise SafetyRulesError(f"{content_root}: no safety rule files ({RULE_FILE_GLOB})")
    return {language: load_rule_file(path, language) for language, path in files.items()}


def example_problems(rule_sets: dict[str, RuleSet]) -> Iterator[tuple[Path, int, str]]:
    """(file, line, problem) for every example a rule does not treat as its file says."""
    for rule_set in rule_sets.values():
        for rule in rule_set.rules:
            for example in rule.match_examples:
                if not rule.matches(rule_set.normaliser(example)):
                    yield rule.file, rule.line, f"rule {rule.id!r} does not match its example {example!r}"
            for example in rule.must_not_match:
                if rule.matches(rule_set.normaliser(example)):
                    yield rule.file, rule.line, f"rule {rule.id!r} matches {example!r}, listed under must_not_match"
