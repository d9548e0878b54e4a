"""The check-in's answers as a domain value (bot.checkins): what is accepted, what is refused,
and that the stored JSON reads back the same."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.checkins import CHOICES, NOTE_LIMIT, QUESTIONS, SCALES, Answers, InvalidAnswer, check, previous_question


def a_full_set() -> Answers:
    answers = Answers.empty()
    for question, value in {
        "distress": 4, "stressors": ["money", "work", "work"], "sleep": "fair", "practice_days": 5,
        "practice_help": "somewhat", "support": "yes", "detached": "no", "substances": "no",
        "unsafe": "no", "self_harm": "no", "ready": 7, "note": "  Talk about the train  ",
    }.items():
        answers = answers.with_answer(question, value)
    return answers


def test_questions_are_asked_in_order_and_back_goes_one_step() -> None:
    answers = Answers.empty()
    assert answers.next_question() == "distress"
    answers = answers.with_answer("distress", 3)
    assert answers.next_question() == "stressors"
    assert previous_question("stressors") == "distress"
    assert previous_question("distress") is None
    assert answers.without("distress").next_question() == "distress"


def test_values_are_normalised() -> None:
    answers = a_full_set()
    assert answers.complete
    assert answers.get("stressors") == ("work", "money")  # distinct, in the order offered
    assert answers.get("note") == "Talk about the train"


@pytest.mark.parametrize(
    "question, value",
    [
        ("distress", 11), ("distress", -1), ("distress", True), ("distress", "5"), ("ready", 10.5),
        ("practice_days", 8), ("stressors", "work"), ("stressors", ["bills"]), ("sleep", "ok"),
        ("self_harm", "maybe"), ("note", "x" * (NOTE_LIMIT + 1)), ("note", None), ("memory", "x"),
    ],
)
def test_what_is_not_an_answer_is_refused_without_echoing_it(question: str, value: object) -> None:
    with pytest.raises(InvalidAnswer) as caught:
        check(question, value)
    assert str(caught.value) == question  # the question's name, never the value


def test_stored_answers_read_back_the_same() -> None:
    answers = a_full_set()
    assert Answers.from_json(answers.to_json()) == answers
    assert Answers.from_json(None) == Answers.empty()


def test_tampered_json_is_refused() -> None:
    with pytest.raises(InvalidAnswer):
        Answers.from_json('{"distress": 99}')
    with pytest.raises(InvalidAnswer):
        Answers.from_json("[1, 2]")


@given(st.data())
def test_any_valid_answer_round_trips(data: st.DataObject) -> None:
    answers = Answers.empty()
    for question in QUESTIONS:
        if question in SCALES:
            value = data.draw(st.integers(*SCALES[question]))
        elif question == "stressors":
            value = data.draw(st.lists(st.sampled_from(CHOICES["stressors"])))
        elif question == "note":
            value = data.draw(st.text(max_size=NOTE_LIMIT))
        else:
            value = data.draw(st.sampled_from(CHOICES[question]))
        answers = answers.with_answer(question, value)
    assert Answers.from_json(answers.to_json()) == answers
