"""Crisis resources as data (content/crisis_lines.yaml, bot.safety.resources): a person's
country from their time zone, their lines in their language, the tested default for an
unknown country, a malformed file refused with one line (also by `imrs-bot run`), a clinic's
override file; and, through the emulator, the lines a Belgian client sees and the support
note after an exercise with a high distress rating.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.content import Content
from bot.safety.resources import (
    CRISIS_LINES_FILE,
    CrisisLinesError,
    country_of_zone,
    load_crisis_lines,
    parse_file,
)
from bot.sandbox.emulator import BotApiEmulator
from bot.sandbox.emulator.people import SimUser
from tests.fixtures_bot import RunningBot
from tests.join_support import labels, plain, says
from tests.test_practice_exercises import choose, enrolled_client

CONTENT = Content()
RESOURCES = load_crisis_lines()


def shown(zone: str | None, language: str) -> str:
    return plain(RESOURCES.render(CONTENT, language, zone))


# -- time zone -> country -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "country"),
    [
        ("Europe/Brussels", "BE"),
        ("Europe/Amsterdam", "NL"),  # in zone.tab itself, though a link to Brussels in tzdata.zi
        ("America/Kralendijk", "BQ"),
        ("US/Eastern", "US"),  # a backward link, followed
        ("Europe/Kiev", "UA"),
        ("Australia/Sydney", "AU"),
        ("UTC", None),
        ("Etc/GMT+3", None),
        ("Mars/Olympus", None),
        (None, None),
    ],
)
def test_a_zone_gives_its_country(zone, country):
    assert country_of_zone(zone) == country


# -- what a person sees ---------------------------------------------------------------------------


def test_a_belgian_zone_gets_1813_and_112():
    dutch = shown("Europe/Brussels", "nl")
    assert "1813" in dutch and "112" in dutch
    assert "0800 32 123" not in dutch, "a Dutch reader sees the Dutch-speaking line"
    assert "113" not in dutch.replace("1813", ""), "no Dutch (NL) numbers for Belgium"
    english = shown("Europe/Brussels", "en")
    assert "1813" in english and "0800 32 123" in english, "no line in English: every Belgian line"


@pytest.mark.parametrize(
    ("zone", "numbers"),
    [
        ("Europe/Amsterdam", ["112", "113", "0800-0113"]),
        ("Europe/London", ["999", "116 123", "85258"]),
        ("Europe/Dublin", ["112", "116 123"]),
        ("America/Chicago", ["911", "988"]),
        ("Australia/Sydney", ["000", "13 11 14", "0477 13 11 14"]),
        ("Europe/Paris", ["112", "3114"]),
        ("Europe/Madrid", ["112", "024"]),
        ("Europe/Berlin", ["112", "0800 111 0 111"]),
    ],
)
def test_each_country_gets_its_own_numbers(zone, numbers):
    text = shown(zone, "en")
    assert all(number in text for number in numbers), text
    assert "findahelpline" not in text


@pytest.mark.parametrize("zone", ["UTC", "Asia/Tokyo", "America/Aruba", None])
@pytest.mark.parametrize("language", ["en", "nl"])
def test_an_unknown_or_unverified_country_gets_the_tested_default(zone, language):
    text = RESOURCES.render(CONTENT, language, zone)
    assert text == CONTENT.text("crisis.short", language)
    assert 'href="https://findahelpline.com"' in text, "an international directory of helplines"
    assert "112" in text and "911" in text, "the local emergency services"
    assert "113" not in text, "no country's crisis line is guessed"


def test_a_country_with_only_its_emergency_number_gets_the_directory_too():
    text = shown("America/Paramaribo", "nl")
    assert "115" in text and "findahelpline.com" in text


def test_every_country_in_the_file_has_a_source_and_a_date():
    for code, country in RESOURCES.countries.items():
        assert country.source and country.checked, code
        assert country.verified == bool(country.emergency)


# -- a malformed file stops the bot with one line -----------------------------------------------


def broken(tmp_path: Path, old: str, new: str) -> Path:
    path = tmp_path / "crisis_lines.yaml"
    text = CRISIS_LINES_FILE.read_text(encoding="utf-8")
    assert old in text, old
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("old", "new", "country", "field"),
    [
        ('emergency: "000"', "emergency: 000", "AU", "emergency"),  # YAML would read 0
        ("      - name: Zelfmoordlijn 1813\n", "      - name: Zelfmoordlijn 1813\n        fax: \"1\"\n", "BE", "lines[1].fax"),
        ("        web: https://www.113.nl", "        web: http://www.113.nl", "NL", "lines[1].web"),
        ("        languages: [nl]\n        phone: [\"113\"", "        languages: nl\n        phone: [\"113\"", "NL", "lines[1].languages"),
        ("    checked: 2026-12-02\n  BE:", "    checked: last week\n  BE:", "NL", "checked"),
        ('      - "3114, free, 24/7 since 1 October 2021: https://www.service-public.fr/particuliers/actualites/A15206"\n'
         '      - "112: the European emergency number"\n', "", "FR", "source"),
        ("  DE:\n    name: Germany\n", "  DE:\n    name: Germany\n    name: Deutschland\n", "DE", "name"),
        ('  US:\n    name: United States\n    emergency: "911"\n', "  US:\n    name: United States\n", "US", "emergency"),
        ("  SR:", "  Suriname:", "Suriname", ""),
    ],
)
def test_a_malformed_entry_is_one_line_naming_file_country_and_field(tmp_path, old, new, country, field):
    path = broken(tmp_path, old, new)
    with pytest.raises(CrisisLinesError) as raised:
        load_crisis_lines(path)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: country {country}")
    if field:
        assert f", {field}:" in message, message


def test_a_file_that_is_not_yaml_or_missing_is_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("countries: [unclosed\n", encoding="utf-8")
    with pytest.raises(CrisisLinesError, match="not valid YAML"):
        parse_file(bad)
    with pytest.raises(CrisisLinesError, match="cannot read"):
        load_crisis_lines(override=tmp_path / "missing.yaml")


def test_a_clinic_override_replaces_a_country_and_adds_one(tmp_path):
    override = tmp_path / "ours.yaml"
    override.write_text(
        "countries:\n"
        "  BE:\n"
        "    name: Belgium\n"
        '    emergency: "112"\n'
        "    lines:\n"
        "      - name: Our own night line\n"
        "        languages: [nl]\n"
        '        phone: "0800 00 000"\n'
        "    source: the clinic's protocol\n"
        "    checked: 2026-12-01\n"
        "  JP:\n"
        "    name: Japan\n"
        '    emergency: "110"\n'
        "    source: the clinic's protocol\n"
        "    checked: 2026-12-01\n",
        encoding="utf-8",
    )
    resources = load_crisis_lines(override=override)
    belgian = plain(resources.render(CONTENT, "nl", "Europe/Brussels"))
    assert "0800 00 000" in belgian and "1813" not in belgian
    assert "110" in plain(resources.render(CONTENT, "en", "Asia/Tokyo"))
    assert "113" in plain(resources.render(CONTENT, "nl", "Europe/Amsterdam")), "the rest is kept"


@pytest.mark.slow
async def test_imrs_bot_run_stops_with_one_line_on_a_malformed_crisis_file(tmp_path):
    from tests.test_cli import assert_one_clear_line, run_cli

    path = broken(tmp_path, 'emergency: "000"', "emergency: 000")
    code, _, err = await run_cli(
        "run", cwd=tmp_path,
        TELEGRAM_BOT_TOKEN="123456789:" + "A" * 35,
        DATABASE_URL=f"sqlite:///{tmp_path / 'imrs.sqlite3'}",
        CRISIS_LINES_FILE=str(path),
    )
    assert_one_clear_line(code, err, str(path), "country AU", "emergency")


# -- through the bot --------------------------------------------------------------------------------


async def test_a_client_in_brussels_sees_belgian_lines_and_in_utc_the_default(
    bot: RunningBot, emulator: BotApiEmulator
):
    client = await enrolled_client(bot, emulator)
    await client.send("/timezone")
    await client.next_message()
    await client.send("Brussels")
    assert "Europe/Brussels" in (await client.next_message()).content
    await client.send("/help")
    help_text = (await client.next_message()).content
    assert "1813" in help_text and "0800 32 123" in help_text and "0800-0113" not in help_text

    await client.send("/timezone")
    await client.next_message()
    await client.send("UTC")
    await client.next_message()
    await client.send("/about")
    about = (await client.next_message()).content
    assert "findahelpline.com" in about and "1813" not in about


# -- support after a high rating in an exercise ------------------------------------------------------


SUPPORT = plain(CONTENT.text("exercises.support.high", "en", crisis="")).strip()


async def grounding_to_rating_after(client: SimUser, before: int):
    question = await choose(client, "Grounding 5-4-3-2-1")
    await client.press(str(before), question)
    step = await client.next_message()
    for n in range(6):
        await client.press("Next ›", step)
        if n < 5:
            await client.wait_for_edit(step)
    assert says(await client.next_message(), "exercises.grounding.finished")
    after = await client.next_message()
    assert says(after, "exercises.rating.after")
    return after


@pytest.mark.parametrize(("before", "after", "supported"), [(9, 9, True), (9, 8, True), (7, 7, False), (3, 2, False)])
async def test_a_high_rating_after_shows_the_therapist_and_the_crisis_lines(
    bot: RunningBot, emulator: BotApiEmulator, before: int, after: int, supported: bool
):
    client = await enrolled_client(bot, emulator)
    question = await grounding_to_rating_after(client, before)
    await client.press(str(after), question)
    reply = (await client.next_message()).content
    assert reply.startswith(f"From {before} to {after}")
    assert (SUPPORT.splitlines()[0] in reply) is supported
    assert ("0800-0113" in reply) is supported, "the crisis lines of the client's country (NL)"


async def test_a_rise_to_a_high_rating_keeps_one_set_of_crisis_lines(bot: RunningBot, emulator: BotApiEmulator):
    client = await enrolled_client(bot, emulator)
    question = await grounding_to_rating_after(client, 5)
    await client.press("9", question)
    reply = (await client.next_message()).content
    assert "more tense than before" in reply and "please contact your therapist" in reply
    assert reply.count("0800-0113") == 1


@pytest.mark.parametrize(("before", "supported"), [(8, True), (10, True), (7, False)])
async def test_stop_after_a_high_rating_before_shows_support_kindly(
    bot: RunningBot, emulator: BotApiEmulator, before: int, supported: bool
):
    client = await enrolled_client(bot, emulator)
    question = await choose(client, "Grounding 5-4-3-2-1")
    await client.press(str(before), question)
    step = await client.next_message()
    await client.press("✋ Stop", step)
    reply = await client.next_message()
    assert reply.content.startswith("Stopped. That's completely fine")
    assert (SUPPORT.splitlines()[0] in reply.content) is supported
    assert ("0800-0113" in reply.content) is supported
    assert reply.content.rstrip().endswith(plain(CONTENT.text("exercises.stop.grounding_offer", "en")))
    assert labels(reply) == ["Yes, a grounding step", "No, thank you"]


async def test_stop_before_any_rating_shows_no_support(bot: RunningBot, emulator: BotApiEmulator):
    client = await enrolled_client(bot, emulator)
    question = await choose(client, "Grounding 5-4-3-2-1")
    await client.press("✋ Stop", question)
    reply = (await client.next_message()).content
    assert SUPPORT.splitlines()[0] not in reply and "0800-0113" not in reply
