"""The calming exercises of /practice, and the timeline of the paced ones: domain logic with
no Telegram in it (handlers/exercises shows the steps; this says which step is when).

A paced exercise (slow breathing, muscle relaxation) is a list of steps, each shown for some
seconds: breathing one step per phase (in, out) for N rounds; muscle relaxation a tense and a
release step per muscle group. Texts and timings come from content (``exercises.yaml``).
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.content import Content

EXERCISES = ("breathing", "pmr", "safe_place", "grounding")  # in the order the menu shows them
PACED = ("breathing", "pmr")  # shown step by step, on a timer


@dataclass(frozen=True)
class Step:
    text: str  # Telegram HTML, as shown
    seconds: float  # how long the step is shown (before any speed factor)
    group: int  # breathing: the round; muscle relaxation: the muscle group


class Timeline:
    """The steps of one paced exercise in one language."""

    def __init__(self, steps: list[Step]) -> None:
        if not steps:
            raise ValueError("a paced exercise has at least one step")
        self.steps = steps

    def __len__(self) -> int:
        return len(self.steps)

    def __getitem__(self, index: int) -> Step:
        return self.steps[index]

    @classmethod
    def of(cls, content: Content, lang: str, exercise: str) -> Timeline:
        if exercise == "breathing":
            return cls(_breathing(content, lang))
        if exercise == "pmr":
            return cls(_muscle_relaxation(content, lang))
        raise KeyError(f"{exercise!r} is not a paced exercise")

    def position(self, step: int, elapsed: float) -> tuple[int, float]:
        """Where an exercise is that began showing ``step`` ``elapsed`` seconds ago (in
        content seconds): the step it shows now and how far into it, or ``(len(self), 0.0)``
        when it has ended."""
        into = max(0.0, elapsed)
        while step < len(self.steps) and into >= self.steps[step].seconds:
            into -= self.steps[step].seconds
            step += 1
        return (step, into) if step < len(self.steps) else (len(self.steps), 0.0)

    def next_group(self, step: int) -> int:
        """The first step of the group after ``step``'s (Skip this one), or ``len(self)``."""
        group = self.steps[min(step, len(self.steps) - 1)].group
        return next((i for i, s in enumerate(self.steps) if s.group > group), len(self.steps))


def _breathing(content: Content, lang: str) -> list[Step]:
    phases = content.raw("exercises.breathing.phases", lang)
    rounds = int(content.raw("exercises.breathing.cycles", lang))
    steps = []
    for round_ in range(rounds):
        progress = content.text("exercises.breathing.progress", lang, cycle=round_ + 1, cycles=rounds)
        for phase in phases:
            body = phase["text"].replace("{seconds}", str(phase["seconds"]))
            steps.append(Step(f"<i>{progress}</i>\n\n{body}", float(phase["seconds"]), round_))
    return steps


def _muscle_relaxation(content: Content, lang: str) -> list[Step]:
    groups = content.raw("exercises.pmr.groups", lang)
    tense = int(content.raw("exercises.pmr.tense_seconds", lang))
    release = int(content.raw("exercises.pmr.release_seconds", lang))
    steps = []
    for n, group in enumerate(groups):
        progress = content.text("exercises.pmr.progress", lang, step=n + 1, steps=len(groups))
        for key, seconds in (("tense", tense), ("release", release)):
            body = content.text(f"exercises.pmr.{key}_step", lang, name=group["name"], seconds=seconds, text=group[key])
            steps.append(Step(f"<i>{progress}</i>\n\n{body}", float(seconds), n))
    return steps
