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
from pathlib import Path
from typing import Any

import yaml

from bot.content import ContentError
from bot.safety.normalise import BOUNDARY, LanguageNormaliser, base_tokens
from bot.safety.phrases import Anchor, PhraseError, compile_phrase

RULE_FILE_GLOB = "safety_rules.*.yaml"
ROUTES = ("risk", "boundary")  # in order of precedence: risk wins
_FILE_KEYS = {"stopwords", "fuzzy", "variants", "words", "rules"}
_RULE_KEYS = {"id", "route", "description", "patterns", "unless", "examples"}
_ID = re.compile(r"[a-z][a-z0-9_.-]*")
_LIST_NAME = re.compile(r"[a-z0-9_]+")


class SafetyRulesError(ContentError):
    """A safety rule file is malformed; the message names the file and the rule."""


@dataclass
class Rule:
    id: str
    route: str
    description: str
    language: str
    patterns: tuple[tuple[re.Pattern[str], Anchor], ...]  # (regex, words one of which it needs)
    unless: tuple[re.Pattern[str], ...]
    match_examples: tuple[str, ...]
    must_not_match: tuple[str, ...]
    file: Path
    line: int

    def matches(self, text: str, keys: frozenset[str] | set[str] | None = None) -> bool:
        """Does this rule match the normalised ``text`` (``" | ... | "``)?

        ``keys`` (the message's words and matched ``stem*``, from the detector) lets patterns
        whose anchor words are absent be skipped. A pattern's match is set aside when one of
        ``unless`` matches the same sentence.
        """
        for pattern, anchor in self.patterns:
            if keys is not None and anchor is not None and anchor.isdisjoint(keys):
                continue
            pos = 0
            while (m := pattern.search(text, pos)) is not None:
                if not self.unless or not self._excused(text, m.start(), m.end()):
                    return True
                pos = m.start() + 1
        return False

    def _excused(self, text: str, start: int, end: int) -> bool:
        first = text.rfind(BOUNDARY, 0, start + 2)
        last = text.find(BOUNDARY, max(start + 2, end - 2))
        sentence = text[max(first - 1, 0): (last + 2) if last >= 0 else len(text)]
        return any(u.search(sentence) for u in self.unless)


@dataclass
class RuleSet:
    """One language's rules, normaliser and stopwords."""

    language: str
    file: Path
    normaliser: LanguageNormaliser
    stopwords: frozenset[str]
    rules: list[Rule] = field(default_factory=list)

    def __post_init__(self) -> None:
        stems = {w[:-1] for r in self.rules for _, a in r.patterns if a for w in a if w.endswith("*")}
        self._stems = frozenset(stems)
        self._stem_lengths = sorted({len(s) for s in stems})

    def keys(self, text: str) -> set[str]:
        """The message's words, and ``stem*`` for every rule stem one of them starts with."""
        words = set(text.split())
        found = {w[:n] + "*" for w in words for n in self._stem_lengths if w[:n] in self._stems}
        return words | found

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
        data = yaml.safe_load(raw)
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
        anchor = frozenset().union(*anchors) if all(a is not None for a in anchors) else None
        lists[name] = ("(?:" + "|".join(options) + ")", anchor)

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
                    regexes[kind].append((re.compile(compiled.regex), compiled.anchor))
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
