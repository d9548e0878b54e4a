"""Readiness: GREEN, AMBER or RED for a completed check-in, with every reason that made it so.

The rules are data, ``content/readiness.yaml`` (read its header: a clinician edits it), one
condition on one answer each. This module loads and checks them (:func:`load_rules`,
:func:`rule_problems`) and applies them (:func:`evaluate`); pure functions, no database and
no Telegram. The colour is the worst colour of the rules that apply (GREEN when none does);
the reasons are those rules' names, in the file's order. The words for a reason are
``readiness.reasons.<reason>`` in each language (content/<language>/summary.yaml), checked by
``imrs-bot content check``.

A readiness is stored encrypted with the check-in (``CheckIn.readiness``) as the JSON of
:meth:`Readiness.to_json`.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeGuard

import yaml

from bot.checkins import CHOICES, QUESTIONS, SCALES, Answers
from bot.content import CONTENT_DIR

RULES_FILE = "readiness.yaml"
_REASON = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_CONDITIONS = ("at_least", "at_most", "is", "includes")
_FIELDS = frozenset({"reason", "colour", "question", *_CONDITIONS})


class Colour(enum.StrEnum):
    GREEN = "green"
    AMBER = "amber"
    RED = "red"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Colour.GREEN: 0, Colour.AMBER: 1, Colour.RED: 2}


class ReadinessRulesError(ValueError):
    """The rules file cannot be used; ``problems`` lists (line, what) for each problem."""

    def __init__(self, problems: Sequence[tuple[int | None, str]]) -> None:
        super().__init__("; ".join(message for _, message in problems))
        self.problems = list(problems)


@dataclass(frozen=True)
class Rule:
    reason: str
    colour: Colour
    question: str
    at_least: int | None = None
    at_most: int | None = None
    is_: frozenset[str] | None = None
    includes: str | None = None

    def applies(self, answers: Answers) -> bool:
        if self.question not in answers:
            return False
        value = answers.get(self.question)
        if self.includes is not None:
            return self.includes in (value or ())
        if self.is_ is not None:
            return value in self.is_
        if self.at_least is not None and value < self.at_least:
            return False
        if self.at_most is not None and value > self.at_most:
            return False
        return True


@dataclass(frozen=True)
class Readiness:
    colour: Colour
    reasons: tuple[str, ...]

    def to_json(self) -> str:
        return json.dumps({"colour": self.colour.value, "reasons": list(self.reasons)}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Readiness:
        raw = json.loads(text)
        return cls(Colour(raw["colour"]), tuple(str(r) for r in raw.get("reasons", ())))

    def __repr__(self) -> str:  # clinical: never in logs
        return "<Readiness>"


def evaluate(rules: Iterable[Rule], answers: Answers) -> Readiness:
    """The readiness of ``answers``: the worst colour of the rules that apply, and their reasons."""
    fired = [rule for rule in rules if rule.applies(answers)]
    colour = max((rule.colour for rule in fired), key=lambda c: c.rank, default=Colour.GREEN)
    reasons: list[str] = []
    for rule in fired:
        if rule.reason not in reasons:
            reasons.append(rule.reason)
    return Readiness(colour, tuple(reasons))


# -- loading and checking -----------------------------------------------------------------------


class _LineLoader(yaml.SafeLoader):
    """A safe loader that remembers the line of every mapping (``__line__``, 1-based)."""


def _mapping_with_line(loader: _LineLoader, node: yaml.MappingNode) -> dict[Hashable, Any]:
    mapping = loader.construct_mapping(node, deep=True)
    mapping["__line__"] = node.start_mark.line + 1
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_with_line)


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _rule(entry: Any, index: int) -> tuple[Rule | None, list[tuple[int | None, str]]]:
    """One entry of ``rules:``, checked: the rule, or None and its problems."""
    if not isinstance(entry, dict):
        return None, [(None, f"rule {index + 1} is not a mapping of reason, colour, question and a condition")]
    line = entry.get("__line__")
    problems: list[tuple[int | None, str]] = []

    def problem(message: str) -> None:
        problems.append((line, message))

    reason = entry.get("reason")
    name = f"rule {reason!r}" if isinstance(reason, str) else f"rule {index + 1}"
    if not isinstance(reason, str) or not _REASON.match(reason):
        problem(f"{name}: 'reason' must be a short name of lower-case letters, digits and _")
    for unknown in sorted(set(entry) - _FIELDS - {"__line__"}):
        problem(f"{name}: unknown field {unknown!r} (fields: reason, colour, question, at_least, at_most, is, includes)")
    colour = entry.get("colour")
    if colour not in (Colour.AMBER.value, Colour.RED.value):
        problem(f"{name}: unknown colour {colour!r} (a rule is amber or red; green is when none applies)")
    question = entry.get("question")
    if question not in QUESTIONS or question == "note":
        problem(f"{name}: unknown question {question!r} (one of {', '.join(q for q in QUESTIONS if q != 'note')})")
        return None, problems
    given = [c for c in _CONDITIONS if c in entry]
    at_least, at_most, is_, includes = (entry.get(c) for c in _CONDITIONS)
    if question in SCALES:
        low, high = SCALES[question]
        if not {"at_least", "at_most"} & set(given) or {"is", "includes"} & set(given):
            problem(f"{name}: {question} is a number from {low} to {high}: give at_least and/or at_most")
        for field_name, value in (("at_least", at_least), ("at_most", at_most)):
            if field_name in given and (not _is_int(value) or not low <= value <= high):
                problem(f"{name}: {field_name} {value!r} is outside the scale of {question} ({low} to {high})")
        if _is_int(at_least) and _is_int(at_most) and at_least > at_most:
            problem(f"{name}: at_least {at_least} is above at_most {at_most}: the rule can never apply")
    else:
        choices = CHOICES[question]
        wanted = "includes" if question == "stressors" else "is"
        if given != [wanted]:
            problem(f"{name}: {question} is a choice: give exactly '{wanted}' (and no number)")
        values = includes if wanted == "includes" else is_
        listed = values if isinstance(values, list) else [values]
        if wanted == "includes" and isinstance(values, list):
            problem(f"{name}: 'includes' names one choice")
        for value in listed:
            if value is not None and value not in choices:
                shown = "yes/no (write them in quotes)" if isinstance(value, bool) else repr(value)
                problem(f"{name}: unknown choice {shown} for {question} (one of {', '.join(choices)})")
    if problems:
        return None, problems
    assert isinstance(reason, str) and isinstance(colour, str)  # checked above
    return (
        Rule(
            reason=reason,
            colour=Colour(colour),
            question=question,
            at_least=at_least,
            at_most=at_most,
            is_=frozenset(v for v in (is_ if isinstance(is_, list) else [is_]) if isinstance(v, str)) if "is" in given else None,
            includes=includes if "includes" in given else None,
        ),
        [],
    )


def parse_rules(text: str) -> tuple[Rule, ...]:
    """The rules in the text of a rules file; ReadinessRulesError listing every problem."""
    try:
        data = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - a SafeLoader subclass  # nosec B506
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ReadinessRulesError([(mark.line + 1 if mark else None, "not valid YAML")]) from None
    entries = data.get("rules") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ReadinessRulesError([(None, "needs 'rules:', a list of rules")])
    rules: list[Rule] = []
    problems: list[tuple[int | None, str]] = []
    for index, entry in enumerate(entries):
        rule, found = _rule(entry, index)
        problems.extend(found)
        if rule is not None:
            rules.append(rule)  # one reason may have several rules (e.g. two ranges)
    if problems:
        raise ReadinessRulesError(problems)
    return tuple(rules)


def load_rules(path: Path | None = None) -> tuple[Rule, ...]:
    """The rules of ``path`` (default: content/readiness.yaml)."""
    path = path or CONTENT_DIR / RULES_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        raise ReadinessRulesError([(None, f"cannot read {path.name}")]) from None
    return parse_rules(text)


@lru_cache(maxsize=4)
def default_rules(path: Path = CONTENT_DIR / RULES_FILE) -> tuple[Rule, ...]:
    """The rules of the content folder, read once per process."""
    return load_rules(path)


def reasons_of(rules: Iterable[Rule]) -> list[str]:
    """Every reason the rules can give, once each, in order."""
    found: list[str] = []
    for rule in rules:
        if rule.reason not in found:
            found.append(rule.reason)
    return found


def label_problems(rules: Iterable[Rule], labels: Mapping[str, Any]) -> list[str]:
    """The reasons without words in one language's ``readiness.reasons`` table."""
    return [reason for reason in reasons_of(rules) if not isinstance(labels.get(reason), str)]
