"""The safety detector: the table of client messages, normalisation, the rule files.

The table (tests/data/safety_table.tsv) holds messages written for this project with the route
each must take. Rows were written in batches, each before the rule changes that followed it:
``d`` rows (dev) and ``h`` rows (holdout) before the first rules; then ``k``, ``m``, ``p``,
``q`` and ``r`` batches, each written as holdout before the next round of rule changes. After
a batch was measured once, the rules were broadened on what it missed and its rows moved to
``dev`` (and so did the four ``h`` rows missed at the first look). The rows still marked
``holdout`` (the rest of ``h``, and ``r``) were never tuned on: their figures estimate how the
rules meet a clinic's own messages. The test prints the rates per route and split and
asserts the goals on dev.
"""

from __future__ import annotations

import csv
import shutil
from collections import Counter
from pathlib import Path

import pytest

from bot.content import CONTENT_DIR
from bot.content_check import check_content
from bot.safety import SafetyDetector, SafetyRulesError, Verdict, base_tokens, fold
from bot.safety.rules import example_problems, load_rules

TABLE = Path(__file__).parent / "data" / "safety_table.tsv"
ROUTES = ("risk", "boundary", "none")


@pytest.fixture(scope="module")
def detector() -> SafetyDetector:
    return SafetyDetector.from_content()


def read_table() -> list[dict[str, str]]:
    with TABLE.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


# -- the table ----------------------------------------------------------------------------------


def test_the_table_is_large_balanced_and_well_formed():
    rows = read_table()
    assert len(rows) >= 240
    assert len({r["id"] for r in rows}) == len(rows), "ids are unique"
    for row in rows:
        assert row["language"] in ("en", "nl"), row
        assert row["expected_route"] in ROUTES, row
        assert row["split"] in ("dev", "holdout"), row
        assert row["text"].strip(), row
    holdout = sum(r["split"] == "holdout" for r in rows)
    # About a third was written as holdout; rows of holdout batches that were looked at and then
    # tuned on moved to dev (see the module docstring), so at least a fifth stays clean.
    assert 0.2 <= holdout / len(rows) <= 0.45
    for split in ("dev", "holdout"):
        for language in ("en", "nl"):
            counts = Counter(r["expected_route"] for r in rows if r["split"] == split and r["language"] == language)
            assert all(counts[route] >= 8 for route in ROUTES), (split, language, counts)


def rates(detector: SafetyDetector, rows: list[dict[str, str]]) -> tuple[dict[str, tuple[int, int]], list[str]]:
    """Per expected route: (messages given the expected route, messages); and the misses."""
    result: dict[str, list[int]] = {route: [0, 0] for route in ROUTES}
    misses = []
    for row in rows:
        verdict = detector.classify(row["text"])
        expected = row["expected_route"]
        result[expected][1] += 1
        if verdict.route == expected:
            result[expected][0] += 1
        else:
            misses.append(f"  {row['id']} {expected} -> {verdict.route} ({verdict.rule}): {row['text']}")
    return {route: (ok, n) for route, (ok, n) in result.items()}, misses


def report(split: str, figures: dict[str, tuple[int, int]], misses: list[str]) -> None:
    risk, boundary, none = figures["risk"], figures["boundary"], figures["none"]
    print(f"\n{split}: risk caught {risk[0]}/{risk[1]} ({100 * risk[0] / risk[1]:.1f} %), "
          f"boundary caught {boundary[0]}/{boundary[1]} ({100 * boundary[0] / boundary[1]:.1f} %), "
          f"benign diverted {none[1] - none[0]}/{none[1]} ({100 * (none[1] - none[0]) / none[1]:.1f} %)")
    for miss in misses:
        print(miss)


def test_the_goals_on_the_dev_rows(detector):
    figures, misses = rates(detector, [r for r in read_table() if r["split"] == "dev"])
    report("dev", figures, misses)
    risk, boundary, none = figures["risk"], figures["boundary"], figures["none"]
    assert risk[0] == risk[1], "every risk phrase is caught\n" + "\n".join(misses)
    assert boundary[0] >= 0.97 * boundary[1], "\n".join(misses)
    assert none[1] - none[0] <= 0.03 * none[1], "\n".join(misses)


# What the rules reached on the holdout rows when they were last measured (rows caught with
# the expected route, of the rows). Not a goal: a floor, so that a rule change that loses
# holdout messages is noticed. Raise it when the rules improve, never tune rules to it.
HOLDOUT_FLOOR = {"risk": 37, "boundary": 34, "none": 44}


def test_the_holdout_rows_are_reported_and_do_not_get_worse(detector):
    """The holdout figures are printed: they estimate what the rules do with a clinic's own
    messages (every risk message caught is the goal on dev, not reached on holdout)."""
    rows = [r for r in read_table() if r["split"] == "holdout"]
    figures, misses = rates(detector, rows)
    report("holdout", figures, misses)
    for route, floor in HOLDOUT_FLOOR.items():
        assert figures[route][0] >= floor, (route, figures[route], floor)


# -- precedence and language --------------------------------------------------------------------


def test_risk_wins_over_boundary(detector):
    text = "my uncle abused me when I was little and now I want to kill myself"
    assert detector.rule("en", "trauma_narrative").matches(detector.rule_sets["en"].normaliser(text))
    assert detector.classify(text) == Verdict("risk", "suicide", "en")
    text_nl = "mijn oom heeft me misbruikt en ik wil dood"
    assert detector.classify(text_nl).route == "risk"
    # Also when the boundary phrase is in the hinted language and the risk phrase is not.
    assert detector.classify("help me mijn trauma te verwerken, I want to die", language="nl").route == "risk"


def test_the_language_is_the_matching_rule_s_or_the_hint_or_a_guess(detector):
    assert detector.classify("ik wil dood").language == "nl"
    assert detector.classify("I want to die", language="nl") == Verdict("risk", "wish_to_die", "en")
    assert detector.classify("wanneer is mijn volgende afspraak?") == Verdict("none", None, "nl")
    assert detector.classify("when is my next appointment?") == Verdict("none", None, "en")
    assert detector.classify("ok", language="nl").language == "nl"
    assert detector.classify("ok", language="nl-BE").language == "nl"
    assert detector.classify("ok", language="fr").language == "en"
    assert detector.classify("").route == "none"
    assert detector.classify("🙂🙂 ...").route == "none"


@pytest.mark.parametrize("text", [
    "I paused the muscle exercise because my shoulder hurt",
    "what should I expect at my next appointment?",
    "this traffic is killing me",
    "ik schrok me dood",
    "I could kill for a coffee",
    "zet mijn herinnering op 9 uur",
    "what is rescripting?",
    "hoe werkt imaginaire rescripting?",
])
def test_the_benign_look_alikes_of_the_issue_stay_none(detector, text):
    assert detector.classify(text).route == "none"


@pytest.mark.parametrize("text, route", [
    ("suicde", "risk"),
    ("I'm thinking about SUICIDE!!!", "risk"),
    ("kill my self", "risk"),
    ("kms", "risk"),
    ("zelfmoord", "risk"),
    ("zelf moord", "risk"),
    ("ik wil dooood 😭😭", "risk"),
    ("su1c1de", "risk"),
    ("I want to... die", "risk"),
    ("can you help me rescipt my memory", "boundary"),
])
def test_spelling_variants_are_caught(detector, text, route):
    assert detector.classify(text).route == route


# -- normalisation --------------------------------------------------------------------------------


def test_normalisation_folds_case_accents_apostrophes_repeats_and_digits():
    assert fold("Suïcidaal ÉÉN ĳs") == "suicidaal een ijs"
    assert base_tokens("I’m SOOOO tired!!! 😴 Don't") == ["im", "so", "tired", "|", "dont"]
    assert base_tokens("k1ll m3 at 10 pm") == ["kil", "me", "at", "10", "pm"]
    assert base_tokens("zelfmoord. Wait... what") == ["zelfmord", "|", "wait", "what"]
    assert base_tokens("one\n\ntwo?! three") == ["one", "|", "two", "|", "thre"]
    assert base_tokens("…!!  ") == []


def test_the_language_step_corrects_listed_words_and_replaces_variants(detector):
    en = detector.rule_sets["en"].normaliser
    assert en("suicde") == " | suicide | "
    assert en("sucidal") == " | suicidal | "
    assert en("I'm gonna kms") == " | im going to kil myself | "
    assert en("amused") == " | amused | ", "words not listed under fuzzy are left alone"
    nl = detector.rule_sets["nl"].normaliser
    assert nl("zelfmord") == " | zelfmord | "
    assert nl("ik wil m'n herinering verzetten") == " | ik wil mijn herinering verzeten | "


# -- the rule files -------------------------------------------------------------------------------


def test_every_rule_matches_its_examples():
    problems = list(example_problems(load_rules(CONTENT_DIR)))
    assert problems == []


def test_every_rule_has_examples_both_ways_in_both_languages():
    rule_sets = load_rules(CONTENT_DIR)
    assert set(rule_sets) == {"en", "nl"}
    for rule_set in rule_sets.values():
        assert {r.route for r in rule_set.rules} == {"risk", "boundary"}
        for rule in rule_set.rules:
            assert rule.match_examples and rule.description, rule.id


@pytest.fixture
def rules_copy(tmp_path) -> Path:
    root = tmp_path / "content"
    root.mkdir()
    for path in CONTENT_DIR.glob("safety_rules.*.yaml"):
        shutil.copy(path, root / path.name)
    return root


def break_file(root: Path, old: str, new: str, language: str = "en") -> None:
    path = root / f"safety_rules.{language}.yaml"
    text = path.read_text(encoding="utf-8")
    assert old in text, old
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


@pytest.mark.parametrize("old, new, message", [
    ("  - id: burden\n    route: risk\n", "  - id: burden\n    route: danger\n",
     "content/safety_rules.en.yaml: rule 'burden': route must be one of risk, boundary (got 'danger')"),
    ("      - better [off] without me\n", "      - better [off] (without me\n",
     "content/safety_rules.en.yaml: rule 'burden': patterns: 'better [off] (without me': ( without its closing )"),
    ("      - better [off] without me\n", "      - better off {nobody}\n",
     "content/safety_rules.en.yaml: rule 'burden': patterns: 'better off {nobody}': {nobody}: no such list under 'words:'"),
    ("      - better [off] without me\n", "      - better off with|out me\n",
     "content/safety_rules.en.yaml: rule 'burden': patterns: 'better off with|out me': '|' outside brackets"),
    ("  - id: farewell\n", "  - id: burden\n",
     "content/safety_rules.en.yaml: rule 'burden': the id is used twice in this file"),
    ("  - id: farewell\n", "  - id: Farewell!\n",
     "content/safety_rules.en.yaml: rule 5 needs an 'id' of lower-case letters, digits, '.', '_' or '-' (got 'Farewell!')"),
    ("    description: >-\n      Feeling a burden;", "    descr: >-\n      Feeling a burden;",
     "content/safety_rules.en.yaml: rule 'burden': unknown field(s) descr"),
    ("stopwords: [", "stopwords: [yes, ",
     "content/safety_rules.en.yaml: stopwords: True is not a text"),
    ("rules:\n", "rules: [\n", "content/safety_rules.en.yaml: not valid YAML at line"),
])
def test_a_malformed_rule_file_stops_loading_with_one_clear_error(rules_copy, old, new, message):
    break_file(rules_copy, old, new)
    with pytest.raises(SafetyRulesError) as caught:
        SafetyDetector.from_content(rules_copy)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_rule_without_examples_is_refused(rules_copy):
    break_file(rules_copy, "    examples:\n      match:\n        - ik ben een last voor iedereen\n",
               "    voorbeelden:\n      match:\n        - ik ben een last voor iedereen\n", language="nl")
    with pytest.raises(SafetyRulesError, match=r"safety_rules.nl.yaml: rule 'burden': unknown field\(s\) voorbeelden"):
        load_rules(rules_copy)


def test_missing_rule_files_are_an_error(tmp_path):
    with pytest.raises(SafetyRulesError, match="no safety rule files"):
        load_rules(tmp_path)


# -- imrs-bot content check -----------------------------------------------------------------------


@pytest.fixture
def content_copy(tmp_path) -> Path:
    root = tmp_path / "content"
    shutil.copytree(CONTENT_DIR, root)
    return root


def test_content_check_reports_an_example_a_rule_does_not_match(content_copy):
    break_file(content_copy, "        - im just a burden\n", "        - im just a burden\n        - I feel heavy today\n")
    report = check_content(content_copy)
    line = next(i for i, text in enumerate((content_copy / "safety_rules.en.yaml").read_text().splitlines(), 1)
                if text.strip() == "- id: burden")
    assert [str(p) for p in report.problems] == [
        f"content/safety_rules.en.yaml:{line}: rule 'burden' does not match its example 'I feel heavy today'"
    ]


def test_content_check_reports_a_must_not_match_example_that_matches(content_copy):
    break_file(content_copy, "        - die rugzak is een last om te dragen\n",
               "        - die rugzak is een last om te dragen\n        - ik ben echt een last\n", language="nl")
    problems = [str(p) for p in check_content(content_copy).problems]
    assert len(problems) == 1 and "rule 'burden' matches 'ik ben echt een last', listed under must_not_match" in problems[0]
    assert problems[0].startswith("content/safety_rules.nl.yaml:")


def test_content_check_reports_a_malformed_rule_file(content_copy):
    break_file(content_copy, "  - id: burden\n    route: risk\n", "  - id: burden\n    route: maybe\n")
    problems = [str(p) for p in check_content(content_copy).problems]
    assert problems == ["content/safety_rules.en.yaml: rule 'burden': route must be one of risk, boundary (got 'maybe')"]
