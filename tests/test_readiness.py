"""Readiness (bot.readiness, content/readiness.yaml): the rules as a table (tests/data/
readiness.tsv), and `imrs-bot content check` refusing broken rules with the file, the line and
what is wrong."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from bot.checkins import QUESTIONS, SCALES, Answers
from bot.content import CONTENT_DIR
from bot.content_check import check_content
from bot.readiness import Colour, Readiness, ReadinessRulesError, default_rules, evaluate, parse_rules

TABLE = Path(__file__).parent / "data" / "readiness.tsv"


def _answers(text: str) -> Answers:
    answers = Answers.empty()
    for pair in filter(None, text.split(";")):
        question, _, value = pair.partition("=")
        if question == "stressors":
            parsed: object = [v for v in value.split(",") if v]
        elif question in SCALES:
            parsed = int(value)
        else:
            parsed = value
        answers = answers.with_answer(question, parsed)
    return answers


def _cases() -> list:
    with TABLE.open(encoding="utf-8") as handle:
        rows = csv.DictReader((line for line in handle if not line.startswith("#")), delimiter="\t")
        return [
            pytest.param(row["answers"] or "", row["colour"], row["reasons"] or "", id=row["answers"] or "nothing")
            for row in rows
        ]


@pytest.mark.parametrize(("answers", "colour", "reasons"), _cases())
def test_the_readiness_table(answers: str, colour: str, reasons: str):
    found = evaluate(default_rules(), _answers(answers))
    assert found.colour is Colour(colour)
    assert ",".join(found.reasons) == reasons


def test_the_table_covers_every_rule_and_colour():
    fired = set()
    for param in _cases():
        fired.update(evaluate(default_rules(), _answers(param.values[0])).reasons)
    assert fired == {rule.reason for rule in default_rules()}


def test_a_readiness_round_trips_as_json_and_hides_in_logs():
    readiness = Readiness(Colour.AMBER, ("conflict", "low_readiness"))
    assert Readiness.from_json(readiness.to_json()) == readiness
    assert "conflict" not in repr(readiness)


def test_an_unanswered_question_never_applies():
    assert evaluate(default_rules(), Answers.empty()) == Readiness(Colour.GREEN, ())
    assert "note" in QUESTIONS  # the note is never a condition


@pytest.mark.parametrize(
    ("rule", "needle"),
    [
        ("question: mood\n    at_least: 3", "unknown question 'mood'"),
        ("question: note\n    is: x", "unknown question 'note'"),
        ("question: distress\n    at_least: 11", "at_least 11 is outside the scale of distress (0 to 10)"),
        ("question: practice_days\n    at_most: 8", "outside the scale of practice_days (0 to 7)"),
        ("question: distress\n    at_least: 7\n    at_most: 5", "can never apply"),
        ("question: distress\n    is: high", "give at_least and/or at_most"),
        ("question: detached\n    is: always", "unknown choice 'always' for detached"),
        ("question: stressors\n    includes: family", "unknown choice 'family' for stressors"),
        ("question: stressors\n    is: work", "give exactly 'includes'"),
        ("question: self_harm\n    is: yes", "yes/no (write them in quotes)"),
        ("question: sleep\n    is: poorly\n    when: always", "unknown field 'when'"),
    ],
)
def test_broken_rules_are_refused_with_the_reason(rule: str, needle: str):
    text = f"rules:\n  - reason: example\n    colour: amber\n    {rule}\n"
    with pytest.raises(ReadinessRulesError) as refused:
        parse_rules(text)
    assert any(needle in message and line == 2 for line, message in refused.value.problems), refused.value.problems


def test_an_unknown_colour_is_refused():
    with pytest.raises(ReadinessRulesError, match="unknown colour 'purple'"):
        parse_rules("rules:\n  - reason: x\n    colour: purple\n    question: ready\n    at_most: 3\n")
    with pytest.raises(ReadinessRulesError, match="unknown colour 'green'"):
        parse_rules("rules:\n  - reason: x\n    colour: green\n    question: ready\n    at_most: 3\n")


@pytest.fixture
def copy(tmp_path) -> Path:
    root = tmp_path / "content"
    shutil.copytree(CONTENT_DIR, root)
    return root


def _problems(root: Path) -> list[str]:
    report = check_content(root)
    assert not report.ok
    return [str(p) for p in report.problems]


def test_content_check_reports_a_broken_rule_at_its_line(copy: Path):
    path = copy / "readiness.yaml"
    text = path.read_text(encoding="utf-8")
    broken = text.replace("    question: distress\n    at_least: 7\n", "    question: distress\n    at_least: 12\n", 1)
    assert broken != text
    path.write_text(broken, encoding="utf-8")
    line = broken.splitlines().index("  - reason: high_distress") + 1
    assert any(
        p.startswith(f"content/readiness.yaml:{line}:") and "outside the scale of distress" in p
        for p in _problems(copy)
    ), _problems(copy)


def test_content_check_reports_a_reason_without_words_in_a_language(copy: Path):
    path = copy / "nl" / "summary.yaml"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("    little_support: Geen steun beschikbaar rond de afspraak\n", ""), encoding="utf-8")
    found = _problems(copy)
    assert any(
        p.startswith("content/nl/summary.yaml:") and "'little_support'" in p and "no words in nl" in p for p in found
    ), found


def test_content_check_reports_a_new_reason_without_words(copy: Path):
    path = copy / "readiness.yaml"
    path.write_text(
        path.read_text(encoding="utf-8")
        + "\n  - reason: poor_sleep\n    colour: amber\n    question: sleep\n    is: very_poorly\n",
        encoding="utf-8",
    )
    found = _problems(copy)
    assert any("'poor_sleep'" in p and "no words in en" in p for p in found), found
    assert any("'poor_sleep'" in p and "no words in nl" in p for p in found), found
