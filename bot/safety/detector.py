"""The safety detector: which route a client's free-text message takes.

    detector = SafetyDetector.from_content()          # once; rules compiled
    verdict = detector.classify(text, language="nl")  # Verdict(route, rule, language)

``risk`` (suicidal thoughts or plans, self-harm, being harmed or in danger now, wanting to
hurt someone, acute crisis) wins over ``boundary`` (asking for rescripting or memory imagery,
the start of a detailed trauma narrative); anything else is ``none``. Every language's rules
are tried on every message (clients mix languages); a language hint only decides which
language is tried first and which language a ``none`` is reported in.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from bot.content import CONTENT_DIR
from bot.safety.normalise import base_tokens
from bot.safety.rules import ROUTES, Rule, RuleSet, load_rules

NONE = "none"


@dataclass(frozen=True)
class Verdict:
    route: str  # "risk" | "boundary" | "none"
    rule: str | None  # the id of the rule that matched (None for "none")
    language: str  # the language of that rule; for "none", the hint or the best guess

    @property
    def diverted(self) -> bool:
        return self.route != NONE

    def as_dict(self) -> dict[str, str | None]:
        return {"route": self.route, "rule": self.rule, "language": self.language}


class SafetyDetector:
    """Compiled rules of every language; ``classify`` is pure and thread-safe."""

    def __init__(self, rule_sets: dict[str, RuleSet], default_language: str = "en"):
        self.rule_sets = rule_sets
        self.languages = tuple(rule_sets)
        self.default_language = default_language if default_language in rule_sets else self.languages[0]
        self._rules: dict[tuple[str, str], list[Rule]] = {
            (language, route): rule_set.by_route(route)
            for language, rule_set in rule_sets.items() for route in ROUTES
        }

    @classmethod
    def from_content(cls, content_root: Path = CONTENT_DIR, default_language: str = "en") -> SafetyDetector:
        """Load and compile ``content_root/safety_rules.*.yaml`` (SafetyRulesError if malformed)."""
        return cls(load_rules(Path(content_root)), default_language)

    def _order(self, hint: str | None) -> list[str]:
        if hint in self.rule_sets:
            return [hint, *(lang for lang in self.languages if lang != hint)]
        return list(self.languages)

    def guess_language(self, tokens: list[str], hint: str | None = None) -> str:
        """The language whose stopwords the message uses most; ties go to the hint, else the default."""
        counts = {lang: sum(map(rs.stopwords.__contains__, tokens)) for lang, rs in self.rule_sets.items()}
        best = max(counts.values(), default=0)
        leaders = [lang for lang, n in counts.items() if n == best]
        if hint in leaders:
            return hint
        if len(leaders) == 1:
            return leaders[0]
        return self.default_language if self.default_language in leaders else leaders[0]

    def classify(self, text: str, language: str | None = None) -> Verdict:
        """The route for one message. ``language`` is a hint ("nl", "nl-BE"), never a filter."""
        hint = language.split("-")[0].split("_")[0].lower() if language else None
        base = base_tokens(text or "")
        if not any(t != "|" for t in base):
            return Verdict(NONE, None, hint if hint in self.rule_sets else self.default_language)
        order = self._order(hint)
        prepared = {}
        for lang in order:
            rule_set = self.rule_sets[lang]
            prepared[lang] = rule_set.prepare(rule_set.normaliser.text(base))
        for route in ROUTES:
            for lang in order:
                for rule in self._rules[lang, route]:
                    if rule.matches_prepared(prepared[lang]):
                        return Verdict(route, rule.id, lang)
        return Verdict(NONE, None, self.guess_language(base, hint))

    def rule(self, language: str, rule_id: str) -> Rule:
        return next(r for r in self.rule_sets[language].rules if r.id == rule_id)


@lru_cache(maxsize=4)
def default_detector(content_root: Path = CONTENT_DIR) -> SafetyDetector:
    """One detector per content folder for the process (loading compiles every rule)."""
    return SafetyDetector.from_content(content_root)
