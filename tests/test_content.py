"""content/ is complete, within Telegram's limits, and every key the handlers use exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bot.content import REFERENCE_LANGUAGE, Content, ContentError
from bot.db.models import Role
from bot.sandbox.emulator.markup import MarkupError, parse_html

ROOT = Path(__file__).resolve().parent.parent
content = Content()
LANGUAGES = content.languages


def test_english_and_dutch_exist():
    assert {"en", "nl"} <= set(LANGUAGES)


@pytest.mark.parametrize("lang", [lang for lang in LANGUAGES if lang != REFERENCE_LANGUAGE])
def test_every_language_is_complete_with_the_same_placeholders(lang):
    reference = content.keys(REFERENCE_LANGUAGE)
    assert reference - content.keys(lang) == set(), f"missing in {lang}/"
    assert content.keys(lang) - reference == set(), f"only in {lang}/ (typo?)"
    for key in reference:
        assert content.placeholders(key, lang) == content.placeholders(key, REFERENCE_LANGUAGE), key


@pytest.mark.parametrize("lang", LANGUAGES)
def test_texts_fit_telegram(lang):
    for key in content.keys(lang):
        value = content.raw(key, lang)
        if isinstance(value, str):
            assert len(value) <= 4096, key
            assert value.strip(), f"{key} is empty"
    for label_key in ("start.tour_button", "start.skip_button", "tour.next", "tour.back", "tour.done"):
        assert len(content.text(label_key, lang)) <= 32
    assert len(content.text("profile.description", lang)) <= 512
    assert len(content.text("profile.short_description", lang)) <= 120
    assert len(content.text("fallback.stale_button", lang)) <= 200  # callback answer limit


@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_text_is_valid_telegram_html(lang):
    """The emulator's HTML parser follows Telegram's rules; a stray '<' or an unclosed tag
    would make Telegram refuse the whole message."""
    for key in content.keys(lang):
        value = content.raw(key, lang)
        texts = value if isinstance(value, list) else [value]
        for text in texts:
            if isinstance(text, str):
                try:
                    plain, _ = parse_html(text.replace("{", "").replace("}", ""))
                except MarkupError as exc:
                    raise AssertionError(f"{lang}/{key}: {exc}") from None
                assert len(plain) <= 4096, key


@pytest.mark.parametrize("lang", LANGUAGES)
def test_command_menus_exist_for_every_role(lang):
    for menu in ["everyone", *(role.value for role in Role)]:
        commands = content.commands(menu, lang)
        assert commands, menu
        for command in commands:
            assert re.fullmatch(r"[a-z0-9_]{1,32}", command.command)
            assert 1 <= len(command.description) <= 256
        assert f"help.{menu}" in content.keys(lang)


def test_every_content_key_the_handlers_name_exists():
    keys = content.keys(REFERENCE_LANGUAGE)
    sections = {key.split(".")[0] for key in keys}
    named = set()
    for path in (ROOT / "handlers").glob("*.py"):
        for literal in re.findall(r'"([a-z_]+\.[a-z_.]+)"', path.read_text()):
            if literal.split(".")[0] in sections:
                named.add(literal)
    assert named, "the scan found no content keys at all"
    assert named - keys == set()


def test_missing_keys_fall_back_to_english_and_values_are_escaped(tmp_path):
    (tmp_path / "en").mkdir()
    (tmp_path / "xx").mkdir()
    (tmp_path / "en" / "a.yaml").write_text("greet: 'Hi {name}'\nonly_en: English\n")
    (tmp_path / "xx" / "a.yaml").write_text("greet: 'Hoi {name}'\n")
    local = Content(tmp_path)
    assert local.text("greet", "xx", name="<b>Bo</b>") == "Hoi &lt;b&gt;Bo&lt;/b&gt;"
    assert local.text("only_en", "xx") == "English"
    assert local.resolve_language("xx-YY") == "xx"
    assert local.resolve_language("fr") == "en"
    with pytest.raises(ContentError):
        local.text("nowhere", "xx")


def test_a_broken_content_file_is_reported(tmp_path):
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "a.yaml").write_text("greet: [unclosed\n")
    with pytest.raises(ContentError, match="not valid YAML"):
        Content(tmp_path)


def test_a_second_content_of_the_same_folder_reuses_the_parse_and_an_edit_is_read_afresh(tmp_path):
    """Content() keeps parsed folders per process (a bot restarted in one process, the tests),
    keyed by a digest of every file: an edited, added or removed file is read again."""
    (tmp_path / "en").mkdir()
    texts = tmp_path / "en" / "a.yaml"
    texts.write_text("greet: Hello\n")
    first, second = Content(tmp_path), Content(tmp_path)
    assert first.text("greet") == second.text("greet") == "Hello"
    assert first._tables is second._tables  # one parse, shared (nothing writes it)

    texts.write_text("greet: Hallo\n")  # the same size, possibly the same change time
    assert Content(tmp_path).text("greet") == "Hallo"
    assert first.text("greet") == "Hello"  # an object already made keeps what it read

    (tmp_path / "en" / "b.yaml").write_text("farewell: Bye\n")
    assert Content(tmp_path).text("farewell") == "Bye"
    (tmp_path / "en" / "b.yaml").unlink()
    with pytest.raises(ContentError):
        Content(tmp_path).text("farewell")

    texts.write_text("greet: [unclosed\n")  # a broken edit is reported, not hidden by the cache
    with pytest.raises(ContentError, match="not valid YAML"):
        Content(tmp_path)
