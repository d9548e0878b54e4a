"""The timeline of the paced exercises (bot.exercises): which step is when, skipping a muscle
group, and where an exercise stands after a restart or a pause."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.content import Content
from bot.exercises import EXERCISES, PACED, Step, Timeline

content = Content()


@pytest.mark.parametrize("lang", ["en", "nl"])
def test_breathing_alternates_in_and_out_for_every_round(lang):
    timeline = Timeline.of(content, lang, "breathing")
    phases = content.raw("exercises.breathing.phases", lang)
    rounds = int(content.raw("exercises.breathing.cycles", lang))
    assert len(timeline) == rounds * len(phases)
    assert [s.seconds for s in timeline.steps[: len(phases)]] == [float(p["seconds"]) for p in phases]
    assert [s.group for s in timeline.steps] == [r for r in range(rounds) for _ in phases]


@pytest.mark.parametrize("lang", ["en", "nl"])
def test_muscle_relaxation_tenses_then_releases_each_group(lang):
    timeline = Timeline.of(content, lang, "pmr")
    groups = content.raw("exercises.pmr.groups", lang)
    tense = float(content.raw("exercises.pmr.tense_seconds", lang))
    release = float(content.raw("exercises.pmr.release_seconds", lang))
    assert len(timeline) == 2 * len(groups)
    assert [s.seconds for s in timeline.steps[:2]] == [tense, release]
    assert groups[0]["name"] in timeline[0].text


def test_only_the_paced_exercises_have_a_timeline():
    assert set(PACED) < set(EXERCISES)
    with pytest.raises(KeyError):
        Timeline.of(content, "en", "grounding")


def test_position_walks_through_steps_and_ends():
    timeline = Timeline([Step("a", 4, 0), Step("b", 6, 0), Step("c", 4, 1), Step("d", 6, 1)])
    assert timeline.position(0, 0) == (0, 0)
    assert timeline.position(0, 3.5) == (0, 3.5)
    assert timeline.position(0, 4) == (1, 0)
    assert timeline.position(0, 11) == (2, 1)
    assert timeline.position(2, 5) == (3, 1)
    assert timeline.position(0, 20) == (4, 0.0)
    assert timeline.position(1, 1000) == (4, 0.0)
    assert timeline.position(1, -3) == (1, 0.0), "a clock a little behind is no step back"


def test_skipping_goes_to_the_next_group_or_the_end():
    timeline = Timeline([Step("a", 1, 0), Step("b", 1, 0), Step("c", 1, 1), Step("d", 1, 1)])
    assert timeline.next_group(0) == 2 and timeline.next_group(1) == 2
    assert timeline.next_group(2) == 4 and timeline.next_group(3) == 4


@given(st.lists(st.floats(min_value=0.5, max_value=20), min_size=1, max_size=30), st.floats(min_value=0, max_value=700))
def test_position_agrees_with_the_sum_of_step_times(seconds, elapsed):
    timeline = Timeline([Step(str(i), s, i) for i, s in enumerate(seconds)])
    step, into = timeline.position(0, elapsed)
    if step == len(timeline):
        assert elapsed >= sum(seconds) - 1e-9
    else:
        start = sum(seconds[:step])
        assert start - 1e-9 <= elapsed < start + seconds[step] + 1e-9
        assert abs((start + into) - elapsed) < 1e-6
