"""The pre-appointment check-in's questions and answers: domain logic with no Telegram and no
database in it. handlers/checkin.py asks the questions in this order, bot.services.checkins
stores the answers (encrypted), bot.readiness turns them into GREEN / AMBER / RED with
reasons, and the summary shows them. The words of every question and choice live in
``content/<language>/checkin.yaml`` under the names used here.

An ``Answers`` holds what has been answered so far; a question not yet answered is absent.
It is kept as JSON (:meth:`Answers.to_json` / :meth:`Answers.from_json`) in one encrypted
column. Unknown names or values are refused, never guessed: a damaged or tampered value
raises :class:`InvalidAnswer`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

#: The questions, in the order they are asked.
QUESTIONS = (
    "distress",  # distress now, 0-10
    "stressors",  # main stressors this week: several of STRESSORS, or none
    "sleep",  # how they slept this week: one of SLEEP
    "practice_days",  # on how many of the last 7 days they practised: 0-7 (pre-filled from the log)
    "practice_help",  # how much practising helped: one of PRACTICE_HELP (pre-filled from the log)
    "support",  # support available around the appointment: one of SUPPORT
    "detached",  # feeling detached, numb or spaced out: one of FREQUENCY
    "substances",  # more alcohol or drugs than usual: one of YES_NO
    "unsafe",  # feeling unsafe at home or with someone: one of YES_NO
    "self_harm",  # thoughts of harming themselves: one of YES_NO ("yes": the crisis path at once)
    "ready",  # how ready they feel for the appointment, 0-10
    "note",  # an optional note for the therapist: text (<= NOTE_LIMIT characters) or "" for none
)

STRESSORS = ("work", "relationships", "health", "money", "other")
SLEEP = ("well", "fair", "poorly", "very_poorly")
PRACTICE_HELP = ("not_at_all", "a_little", "somewhat", "a_lot", "did_not_practise")
SUPPORT = ("yes", "partly", "no")
FREQUENCY = ("no", "sometimes", "often")
YES_NO = ("no", "yes")
NOTE_LIMIT = 1000

#: question -> the choices it offers (scales and free text are not listed)
CHOICES: dict[str, tuple[str, ...]] = {
    "stressors": STRESSORS,
    "sleep": SLEEP,
    "practice_help": PRACTICE_HELP,
    "support": SUPPORT,
    "detached": FREQUENCY,
    "substances": YES_NO,
    "unsafe": YES_NO,
    "self_harm": YES_NO,
}
#: question -> (lowest, highest) for the number scales
SCALES: dict[str, tuple[int, int]] = {"distress": (0, 10), "practice_days": (0, 7), "ready": (0, 10)}


class InvalidAnswer(ValueError):
    """Not an answer to that question (``question`` names it; never the value itself)."""

    def __init__(self, question: str) -> None:
        super().__init__(question)
        self.question = question


def check(question: str, value: Any) -> Any:
    """``value`` as stored for ``question``, or InvalidAnswer. Stressors are a sorted tuple
    of distinct choices (empty: none this week); the note is stripped text, "" for none."""
    if question not in QUESTIONS:
        raise InvalidAnswer(question)
    if question in SCALES:
        low, high = SCALES[question]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise InvalidAnswer(question)
        return value
    if question == "stressors":
        if isinstance(value, str) or not all(isinstance(v, str) and v in STRESSORS for v in value):
            raise InvalidAnswer(question)
        return tuple(sorted(set(value), key=STRESSORS.index))
    if question == "note":
        if not isinstance(value, str) or len(value.strip()) > NOTE_LIMIT:
            raise InvalidAnswer(question)
        return value.strip()
    if value not in CHOICES[question]:
        raise InvalidAnswer(question)
    return value


@dataclass(frozen=True)
class Answers:
    """The answers given so far, by question name (see QUESTIONS)."""

    values: dict[str, Any]

    @classmethod
    def empty(cls) -> Answers:
        return cls({})

    def with_answer(self, question: str, value: Any) -> Answers:
        return Answers({**self.values, question: check(question, value)})

    def without(self, question: str) -> Answers:
        return Answers({k: v for k, v in self.values.items() if k != question})

    def get(self, question: str, default: Any = None) -> Any:
        return self.values.get(question, default)

    def __contains__(self, question: str) -> bool:
        return question in self.values

    def next_question(self) -> str | None:
        """The first question not answered yet, in order; None when all are."""
        return next((q for q in QUESTIONS if q not in self.values), None)

    @property
    def complete(self) -> bool:
        return self.next_question() is None

    def to_json(self) -> str:
        return json.dumps(
            {q: list(v) if isinstance(v, tuple) else v for q, v in self.values.items()},
            ensure_ascii=False, separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | None) -> Answers:
        """The answers kept as JSON; InvalidAnswer if a name or value is not one we ask."""
        raw = json.loads(text) if text else {}
        if not isinstance(raw, dict):
            raise InvalidAnswer("answers")
        answers = cls.empty()
        for question, value in raw.items():
            answers = answers.with_answer(question, value)
        return answers


def previous_question(question: str) -> str | None:
    """The question asked before ``question`` (for Back); None for the first."""
    index = QUESTIONS.index(question)
    return QUESTIONS[index - 1] if index else None
