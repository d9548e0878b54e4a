"""/progress (issue 6): a client's own practice as a PNG chart with a one-line caption.

Through the emulator: no practice gives a friendly word and no photo; seeded practice gives
a PNG of the expected size whose bytes change with the data, and a caption with the right
numbers; other clients' practice never shows; therapists and strangers are refused. On the
service: weeks are local (Monday-based, in the client's time zone), and five years of
practice render (timing belongs in bench/progress_chart.py).
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta

from PIL import Image
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.models import Person, ExerciseRun, Role
from bot.db.repositories import PeopleRepository
from bot.db.types import utcnow
from bot.sandbox.emulator import BotApiEmulator
from bot.sandbox.emulator.people import SimUser
from bot.sandbox.emulator.records import BotMessage
from bot.services.people import Identity
from bot.services.progress import CHART_SIZE, ProgressService
from bot.services.progress_chart import render_chart
from handlers.progress import chart_labels
from tests.fixtures_bot import RunningBot
from tests.join_support import (
    add_person,
    client_token,
    content,
    open_chat,
    join,
    person_by_telegram_id,
    plain,
    says,
    services,
)

Practice = tuple[datetime, int | None, int | None]  # started at, rating before, rating after


async def seed(sessions: async_sessionmaker[AsyncSession], client_id: int, practices: Iterable[Practice]) -> None:
    async with sessions.begin() as session:
        session.add_all(
            ExerciseRun(
                client_id=client_id,
                exercise="breathing",
                started_at=started,
                ended_at=started + timedelta(minutes=5),
                stopped_early=after is None,
                distress_before=None if before is None else str(before),
                distress_after=None if after is None else str(after),
            )
            for started, before, after in practices
        )


async def client_with_therapist(
    bot: RunningBot, emulator: BotApiEmulator, therapist: Identity, telegram_id: int
) -> tuple[SimUser, int]:
    token = await client_token(bot, therapist)
    client = emulator.user(telegram_id, first_name="Sam", language_code="en")
    await join(client, token)
    person = await person_by_telegram_id(bot, telegram_id)
    assert person is not None
    return client, person.id


async def ask(client: SimUser) -> BotMessage:
    await client.send("/progress")
    return await client.next_message()


def png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        image.load()  # decodes the whole image: a truncated PNG fails here
        return image.size


def days_ago(days: float) -> datetime:
    return utcnow() - timedelta(days=days)


# -- through the bot ------------------------------------------------------------------------------


async def test_without_practice_a_friendly_word_and_no_chart(bot: RunningBot, emulator: BotApiEmulator):
    therapist = await add_person(bot, 8001, Role.THERAPIST, display_name="Dr. Jansen")
    client, _ = await client_with_therapist(bot, emulator, therapist, 8101)
    reply = await ask(client)
    assert says(reply, "progress.empty")
    assert "/practice" in reply.content
    assert reply.photo is None
    assert all(m.photo is None for m in client.messages)


async def test_the_chart_and_its_summary_for_seeded_practice(bot: RunningBot, emulator: BotApiEmulator):
    therapist = await add_person(bot, 8001, Role.THERAPIST, display_name="Dr. Jansen")
    client, client_id = await client_with_therapist(bot, emulator, therapist, 8101)
    await seed(
        services(bot).sessions,
        client_id,
        [
            (days_ago(1), 7, 3),
            (days_ago(2), 6, 4),
            (days_ago(3), 5, None),  # stopped early: counted, not in the average
            (days_ago(40), 8, 2),  # more than 4 weeks ago: in all, and in the chart's year
        ],
    )
    chart = await ask(client)
    assert chart.photo is not None and chart.text is None
    assert "upload_photo" in client.actions
    assert png_size(chart.photo.data) == CHART_SIZE == (chart.photo.width, chart.photo.height)
    expected = content.text(
        "progress.summary_change", "en", recent=3, total=4, before="7.0", after="3.0"
    )
    assert chart.content == plain(expected)
    assert len(chart.content) < 1024

    # More practice: another picture, another line.
    await seed(services(bot).sessions, client_id, [(days_ago(0.1), 9, 1), (days_ago(400), 4, 4)])
    again = await ask(client)
    assert again.photo is not None and png_size(again.photo.data) == CHART_SIZE
    assert again.photo.data != chart.photo.data
    assert again.content.splitlines() == [
        plain(content.text("progress.summary_change", "en", recent=4, total=6, before="7.5", after="2.5")),
        plain(content.text("progress.window_note", "en")),
    ]


async def test_practice_older_than_a_year_alone_gives_no_chart(bot: RunningBot, emulator: BotApiEmulator):
    therapist = await add_person(bot, 8001, Role.THERAPIST, display_name="Dr. Jansen")
    client, client_id = await client_with_therapist(bot, emulator, therapist, 8101)
    await seed(services(bot).sessions, client_id, [(days_ago(500), 6, 3)])
    reply = await ask(client)
    assert says(reply, "progress.none_recent") and reply.photo is None


async def test_each_client_sees_only_their_own_practice(bot: RunningBot, emulator: BotApiEmulator):
    therapist = await add_person(bot, 8001, Role.THERAPIST, display_name="Dr. Jansen")
    first, first_id = await client_with_therapist(bot, emulator, therapist, 8101)
    second, second_id = await client_with_therapist(bot, emulator, therapist, 8102)
    await seed(services(bot).sessions, first_id, [(days_ago(n + 1), 5, 4) for n in range(2)])
    await seed(services(bot).sessions, second_id, [(days_ago(n + 1), 9, 2) for n in range(5)])
    mine, theirs = await ask(first), await ask(second)
    assert mine.content == plain(
        content.text("progress.summary_change", "en", recent=2, total=2, before="5.0", after="4.0")
    )
    assert theirs.content == plain(
        content.text("progress.summary_change", "en", recent=5, total=5, before="9.0", after="2.0")
    )
    assert mine.photo.data != theirs.photo.data


async def test_therapists_and_strangers_are_refused(bot: RunningBot, emulator: BotApiEmulator):
    therapist = await add_person(bot, 8001, Role.THERAPIST, display_name="Dr. Jansen")
    jansen = await open_chat(emulator.user(8001, first_name="Jansen"))
    client, client_id = await client_with_therapist(bot, emulator, therapist, 8101)
    await seed(services(bot).sessions, client_id, [(days_ago(1), 7, 3)])
    refusal = content.text("access.denied", "en")
    # The joined notice comes through the outbox; read it first, so it cannot pass for the reply.
    await jansen.wait_for(lambda m: "accepted your invite" in m.content)
    for user in (jansen, emulator.user(8999, first_name="Stranger")):
        reply = await ask(user)
        assert reply.content == plain(refusal) and reply.photo is None


# -- the service ----------------------------------------------------------------------------------

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)  # a Friday


async def enrolled(sessions: async_sessionmaker[AsyncSession], telegram_id: int, zone: str) -> Identity:
    async with sessions.begin() as session:
        person = await PeopleRepository(session).add(
            Person(telegram_id=telegram_id, role=Role.CLIENT, language="en", timezone=zone)
        )
    return Identity(telegram_id, "x", Role.CLIENT, person.id, "en", zone)


async def test_weeks_are_local_monday_weeks_in_the_clients_time_zone(
    session_factory: async_sessionmaker[AsyncSession],
):
    sunday_late = datetime(2026, 11, 22, 23, 30, tzinfo=UTC)  # Monday 12:30 in Auckland (UTC+13)
    auckland = await enrolled(session_factory, 9001, "Pacific/Auckland")
    london = await enrolled(session_factory, 9002, "Europe/London")  # UTC+0 in November
    for who in (auckland, london):
        await seed(session_factory, who.person_id, [(sunday_late, 6, 3)])
    service = ProgressService(session_factory, clock=lambda: NOW)

    there = await service.summary(auckland)
    assert [(w.start, w.count) for w in there.weeks][-2:] == [(date(2026, 11, 16), 0), (date(2026, 11, 23), 1)]
    assert [d.day for d in there.days] == [date(2026, 11, 23)]
    here = await service.summary(london)  # still Sunday 22 November: the week before
    assert [(w.start, w.count) for w in here.weeks][-2:] == [(date(2026, 11, 16), 1), (date(2026, 11, 23), 0)]
    assert [d.day for d in here.days] == [date(2026, 11, 22)]


async def test_the_service_refuses_anyone_but_a_client(session_factory: async_sessionmaker[AsyncSession]):
    service = ProgressService(session_factory, clock=lambda: NOW)
    for identity in (
        Identity(1, "x", Role.THERAPIST, 1, "en", "UTC"),
        Identity(2, "x", None, None, "en", "UTC"),
    ):
        try:
            await service.summary(identity)
        except PermissionError:
            continue
        raise AssertionError(f"{identity.role} was not refused")


async def test_five_years_of_practice_render(session_factory: async_sessionmaker[AsyncSession]):
    client = await enrolled(session_factory, 9003, "Europe/Amsterdam")
    first = datetime(2021, 11, 28, tzinfo=UTC)
    days = (NOW.date() - first.date()).days + 1  # five years, to today
    await seed(
        session_factory,
        client.person_id,
        [  # three a day, at 6, 9 and 11 UTC: the same local day in Amsterdam, before NOW
            (first + timedelta(days=d, hours=h), (d + h) % 11, (d * h) % 11 if d % 7 else None)
            for d in range(days)
            for h in (6, 9, 11)
        ],
    )
    progress = await ProgressService(session_factory, clock=lambda: NOW).summary(client)
    assert progress.total == days * 3 > 5_000 and progress.older
    assert len(progress.weeks) == 52 and progress.shown < progress.total
    assert progress.recent == 28 * 3
    for lang in ("en", "nl"):
        png = render_chart(progress, chart_labels(content, lang))
        assert png_size(png) == CHART_SIZE


def test_the_chart_changes_with_the_data():
    from bot.services.progress import _Row, aggregate

    today = NOW.date()
    labels = chart_labels(content, "en")
    one = aggregate([_Row(today, 7, 3)], today=today, total=1)
    other = aggregate([_Row(today, 7, 4)], today=today, total=1)
    assert render_chart(one, labels) != render_chart(other, labels)
    assert render_chart(one, labels) == render_chart(one, labels)  # deterministic
    assert png_size(render_chart(one, labels)) == CHART_SIZE
    # No rating on the chart is hidden in a repr (they are clinical).
    assert not any(word in repr(one) for word in ("before", "after", "rated"))


def test_every_language_has_every_chart_word():
    for lang in content.languages:
        labels = chart_labels(content, lang)
        assert len(labels["months"]) == 12 and all(isinstance(m, str) and m for m in labels["months"])
        assert "$" not in str(labels)  # matplotlib would read it as mathematics


def test_the_bot_does_not_carry_matplotlib_until_a_chart_is_drawn():
    """matplotlib (with numpy and Pillow) is ~40 MB resident: handlers/progress.py imports
    the chart module on first use, so a process that never draws a chart stays small."""
    import subprocess
    import sys

    probe = "import sys, handlers, bot.runtime, bot.cli; print(sorted(m for m in ('matplotlib', 'numpy', 'PIL') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
