"""`imrs-bot content check`, the learn modules and the memory-imagery lint.

The real content passes; a copy of it, broken in one way at a time, fails with the file, the
line and the problem; the lint tells instructions about memories from descriptions of the
session, in English and in Dutch.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bot.content import CONTENT_DIR, Content, ContentError, split_module
from bot.content_check import check_content, load_lint_rules, lint_text
from bot.sandbox.emulator.markup import parse_html

IMRS_BOT = str(Path(sys.executable).parent / "imrs-bot")
RULES = load_lint_rules(CONTENT_DIR / "lint.yaml")
TOPICS = [
    "what-is-imrs", "what-it-helps", "how-it-is-done", "safety", "core-needs",
    "common-worries", "after-session", "when-to-wait", "further-reading",
]


@pytest.fixture
def copy(tmp_path) -> Path:
    """A copy of the real content folder, to break."""
    root = tmp_path / "content"
    shutil.copytree(CONTENT_DIR, root)
    return root


def problems(root: Path) -> list[str]:
    report = check_content(root)
    assert not report.ok, "the broken content passed the check"
    return [str(p) for p in report.problems]


def assert_reported(root: Path, where: str, *needles: str) -> None:
    """Exactly the problem(s) at ``where`` (``en/bot.yaml:12``) mentioning every needle."""
    found = problems(root)
    matching = [p for p in found if p.startswith(f"content/{where}:") and all(n in p for n in needles)]
    assert matching, "\n".join(found)


def append(path: Path, text: str) -> int:
    """Append ``text``; returns the line number its first line lands on."""
    before = path.read_text(encoding="utf-8")
    if not before.endswith("\n"):
        before += "\n"
    path.write_text(before + text, encoding="utf-8")
    return before.count("\n") + 1


def add_page(path: Path, page: str) -> int:
    """Add a page at the end of a learn module; returns the line of its first line."""
    return append(path, f"---page---\n{page}\n") + 1


def replace(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, old
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


# -- the real content ---------------------------------------------------------------------------


def test_the_real_content_passes_without_warnings():
    report = check_content()
    assert report.ok, "\n".join(map(str, report.problems))
    assert report.warnings == [], "\n".join(map(str, report.warnings))
    assert {"en", "nl"} <= set(report.languages)
    assert report.modules >= 2 * len(TOPICS)
    assert "no problems" in report.summary()


@pytest.mark.parametrize("lang", ["en", "nl"])
def test_every_topic_is_a_translated_module_of_chat_sized_pages(lang):
    content = Content()
    modules = content.modules(lang)
    assert [m.id for m in modules] == TOPICS
    for module in modules:
        assert module.language == lang, f"{module.id} falls back to English"
        assert 2 <= len(module.pages) <= 5, module.id
        for page in module.pages:
            plain, _ = parse_html(page)
            assert len(plain) <= 900, (module.id, plain[:40])
            assert not set(re.findall(r"<(\w+)", page)) - {"b", "i", "a"}, module.id
    assert content.module("further-reading", lang).sources, "further reading cites its sources"


def test_modules_fall_back_to_english_one_by_one(copy):
    (copy / "nl" / "learn" / "safety.md").unlink()
    content = Content(copy)
    languages = {m.id: m.language for m in content.modules("nl-BE")}
    assert languages["safety"] == "en"
    assert languages["what-is-imrs"] == "nl"
    assert content.module("safety", "nl").language == "en"
    assert content.modules("fr")[0].language == "en"
    with pytest.raises(ContentError):
        content.module("no-such-module", "nl")


def test_a_malformed_module_stops_the_loader(copy):
    replace(copy / "en" / "learn" / "safety.md", "order: 4\n", "")
    with pytest.raises(ContentError, match="safety.md: the front matter has no 'order'"):
        Content(copy)


def test_split_module_keeps_line_numbers():
    front_matter, pages = split_module("---\nid: a\n---\n\nOne\ntwo\n\n---page---\n\n\nThree\n")
    assert front_matter == "id: a"
    assert pages == [("One\ntwo", 5), ("Three", 11)]
    with pytest.raises(ContentError, match="line 1"):
        split_module("no front matter\n")


def test_a_source_is_cited_as_escaped_html():
    source = Content().module("further-reading", "en").sources[0]
    citation = source.citation()
    assert "Arntz, A., &amp; Jacob, G. (2013)" in citation
    parse_html(citation)


# -- broken copies: one rule at a time ------------------------------------------------------------


def test_bad_yaml_is_reported_with_its_line(copy):
    line = append(copy / "en" / "bot.yaml", "broken: [unclosed\n")
    # Only the parse error: the Dutch bot.yaml is not compared with an English file that broke.
    assert problems(copy) == [
        f"content/en/bot.yaml:{line + 1}: not valid YAML: did not find expected ',' or ']' "  # libyaml's words
        f"(in what starts on line {line})"
    ]


def test_a_yes_no_word_read_as_true_false_is_reported(copy):
    line = append(copy / "en" / "learn.yaml", "  no_button: No\n")
    append(copy / "nl" / "learn.yaml", "  no_button: Nee\n")
    assert_reported(copy, f"en/learn.yaml:{line}", "learn.no_button is read as False")


def test_a_key_defined_twice_and_a_shared_top_level_key_are_reported(copy):
    line = append(copy / "en" / "learn.yaml", "  next_button: Again ›\n")
    assert_reported(copy, f"en/learn.yaml:{line}", "learn.next_button", "defined twice")
    (copy / "en" / "zz_extra.yaml").write_text("learn:\n  x: y\n")
    assert_reported(copy, "en/zz_extra.yaml:1", "'learn' is also defined in learn.yaml")


def test_a_missing_dutch_module_is_reported(copy):
    (copy / "nl" / "learn" / "core-needs.md").unlink()
    found = problems(copy)
    assert "content/nl/learn/core-needs.md: module 'core-needs' is missing in nl/ (it would be shown in English)" in found


def test_a_module_only_in_dutch_and_a_different_order_are_reported(copy):
    shutil.copy(copy / "nl" / "learn" / "safety.md", copy / "nl" / "learn" / "veiligheid.md")
    replace(copy / "nl" / "learn" / "core-needs.md", "order: 5\n", "order: 12\n")
    assert_reported(copy, "nl/learn/veiligheid.md:2", "'id' is 'safety' but the file is called veiligheid.md")
    assert_reported(copy, "nl/learn/core-needs.md:1", "order is 12; English has 5")


def test_a_missing_dutch_text_and_different_placeholders_are_reported(copy):
    replace(copy / "nl" / "learn.yaml", '  read_mark: "✓"\n', "")
    replace(copy / "nl" / "learn.yaml", '"{read} van {total} gelezen"', '"{gelezen} van {total}"')
    found = problems(copy)
    assert any(p.startswith("content/nl/learn.yaml:") and "learn.read_mark is missing (English: learn.yaml:" in p
               for p in found), found
    assert_reported(copy, "nl/learn.yaml", "learn.progress has placeholders ['gelezen', 'total']")


def test_a_missing_section_is_reported(copy):
    (copy / "nl" / "exercises.yaml").unlink()
    assert_reported(copy, "nl/exercises.yaml", "exercises: the section is missing in nl/")


def test_exercise_timings_and_step_names_are_shared_by_every_language(copy):
    replace(copy / "nl" / "exercises.yaml", "        seconds: 6\n", "        seconds: 8\n")
    replace(copy / "nl" / "exercises.yaml", "      - field: hear\n", "      - field: horen\n")
    assert_reported(copy, "nl/exercises.yaml", "exercises.breathing.phases.1.seconds is 8; English has 6")
    assert_reported(copy, "nl/exercises.yaml", "exercises.safe_place.questions.1.field is 'horen'")


def test_the_shape_of_the_exercises_is_checked(copy):
    replace(copy / "en" / "exercises.yaml", "    cycles: 6\n", "    cycles: 600\n")
    replace(copy / "en" / "exercises.yaml", "      - count: 2\n", "      - count: 7\n")
    replace(copy / "en" / "exercises.yaml", "You see: {see}", "You see: {sea}")
    assert_reported(copy, "en/exercises.yaml", "exercises.breathing.cycles: cycles must be a whole number from 1 to 30")
    assert_reported(copy, "en/exercises.yaml", "exercises.grounding.steps: the counts are 5, 4, 3, 2, 1")
    assert_reported(copy, "en/exercises.yaml", "exercises.safe_place.cue: needs the placeholders")


def test_a_page_over_4096_characters_is_reported(copy):
    line = add_page(copy / "en" / "learn" / "safety.md", "<b>Long</b>\n\n" + "word " * 900)
    assert_reported(copy, f"en/learn/safety.md:{line}", "page 5 is", "Telegram's limit is 4096")


def test_a_long_page_is_a_warning_only(copy):
    add_page(copy / "en" / "learn" / "safety.md", "A page. " * 120)
    add_page(copy / "nl" / "learn" / "safety.md", "Een pagina. " * 100)
    report = check_content(copy)
    assert report.ok, "\n".join(map(str, report.problems))
    assert any("page 5 is" in str(w) and "aim for at most 900" in str(w) for w in report.warnings)


def test_an_empty_page_and_markdown_are_reported(copy):
    path = copy / "en" / "learn" / "safety.md"
    line = append(path, "---page---\n---page---\n**Bold** text\n")
    assert_reported(copy, f"en/learn/safety.md:{line + 1}", "page 5 is empty")
    assert_reported(copy, f"en/learn/safety.md:{line + 2}", "page 6: looks like Markdown")


def test_bad_html_is_reported(copy):
    line = add_page(copy / "en" / "learn" / "safety.md", "<b>Unclosed\n\nMore text.")
    assert_reported(copy, f"en/learn/safety.md:{line}", "page 5: not valid Telegram HTML")
    yaml_line = append(copy / "en" / "learn.yaml", "  extra: 'a < b'\n")
    append(copy / "nl" / "learn.yaml", "  extra: 'a &lt; b'\n")
    assert_reported(copy, f"en/learn.yaml:{yaml_line}", "learn.extra: not valid Telegram HTML")


def test_only_bold_italic_and_links_in_learn_pages(copy):
    line = add_page(copy / "en" / "learn" / "safety.md", "Some <u>underlined</u> words.")
    assert_reported(copy, f"en/learn/safety.md:{line}", "<u> is not used here")


@pytest.mark.parametrize("href", ["javascript:alert(1)", "www.example.org", "https://localhost", "ftp://example.org/x"])
def test_a_bad_link_is_reported(copy, href):
    line = add_page(copy / "en" / "learn" / "safety.md", f'Read <a href="{href}">more</a>.')
    assert_reported(copy, f"en/learn/safety.md:{line}", "is not a complete http(s) link")


def test_a_link_without_href_and_a_bad_bare_url_are_reported(copy):
    line = add_page(copy / "en" / "learn" / "safety.md", "A <a>link</a>.\nSee https://nohost too.")
    assert_reported(copy, f"en/learn/safety.md:{line}", "without href")
    assert_reported(copy, f"en/learn/safety.md:{line + 1}", "'https://nohost' is not a complete http(s) link")


def test_good_links_pass(copy):
    add_page(copy / "en" / "learn" / "safety.md", 'Read <a href="https://example.org/schema?x=1&amp;y=2">more</a>.')
    add_page(copy / "nl" / "learn" / "safety.md", "Lees meer op https://example.org/schema.")
    assert check_content(copy).ok


def test_bad_front_matter_and_references_are_reported(copy):
    path = copy / "en" / "learn" / "what-is-imrs.md"
    replace(path, "title: What is Imagery Rescripting?\n", "title: What is <b>ImRS</b>?\nauthor: me\n")
    replace(path, "    year: 2012\n", "    year: twenty-twelve\n    url: javascript:alert(1)\n")
    assert_reported(copy, "en/learn/what-is-imrs.md:3", "'title' is plain text")
    assert_reported(copy, "en/learn/what-is-imrs.md", "unknown front-matter field 'author'")
    assert_reported(copy, "en/learn/what-is-imrs.md", "'year' must be a year")
    assert_reported(copy, "en/learn/what-is-imrs.md", "'url' must be a complete http(s) address")


def test_front_matter_that_is_not_yaml_or_not_closed_is_reported(copy):
    replace(copy / "en" / "learn" / "safety.md", "order: 4\n", "order: [4\n")
    (copy / "en" / "learn" / "core-needs.md").write_text("---\nid: core-needs\nno end\n")
    assert_reported(copy, "en/learn/safety.md", "front matter is not valid YAML")
    assert_reported(copy, "en/learn/core-needs.md:1", "not closed")


def test_an_unbalanced_brace_is_reported(copy):
    line = append(copy / "en" / "learn.yaml", "  extra: 'Hello {name'\n")
    append(copy / "nl" / "learn.yaml", "  extra: 'Hallo {name}'\n")
    assert_reported(copy, f"en/learn.yaml:{line}", "learn.extra: a { or } without its partner")


def test_a_memory_imagery_instruction_in_english_is_reported(copy):
    line = add_page(copy / "en" / "learn" / "safety.md",
                    "<b>Try this</b>\n\nClose your eyes and think back to when you were a child.")
    assert_reported(copy, f"en/learn/safety.md:{line + 2}", "instructs the reader to go to a memory",
                    "think back to when you were a child")


def test_a_memory_imagery_instruction_in_a_yaml_text_is_reported_at_its_line(copy):
    path = copy / "en" / "exercises.yaml"
    replace(path, "      This exercise brings your attention to the present moment through your senses.",
            "      This exercise brings your attention to the present moment.\n\n"
            "      Now picture a scene from your childhood.")
    lines = path.read_text().splitlines()
    line = next(i for i, text in enumerate(lines, 1) if "Now picture a scene" in text)
    assert_reported(copy, f"en/exercises.yaml:{line}", "exercises.grounding.intro: instructs the reader")


def test_a_memory_imagery_instruction_in_dutch_is_reported(copy):
    line = add_page(copy / "nl" / "learn" / "safety.md",
                    "<b>Probeer dit</b>\n\nStel je voor dat je terug bent in je ouderlijk huis.")
    assert_reported(copy, f"nl/learn/safety.md:{line + 2}", "instructs the reader to go to a memory")
    path = copy / "nl" / "learn.yaml"
    replace(path, "Je kunt er altijd naar terug", "Denk terug aan een herinnering uit je jeugd. Je kunt er altijd naar terug")
    assert_reported(copy, "nl/learn.yaml", "learn.all_read: instructs the reader", "Denk terug aan een herinnering")


def test_a_memory_imagery_instruction_in_a_title_is_reported(copy):
    replace(copy / "en" / "learn" / "safety.md", "summary: The stop signal,", "summary: Recall a memory. The stop signal,")
    assert_reported(copy, "en/learn/safety.md:5", "summary: instructs the reader", "Recall a memory")


def test_a_description_of_the_session_passes(copy):
    add_page(copy / "en" / "learn" / "safety.md",
             "In the session, your therapist will ask you to imagine a memory from your childhood. "
             "You will be asked to think back only when you are ready, and I will never ask you to recall a memory here.")
    add_page(copy / "nl" / "learn" / "safety.md",
             "Tijdens de sessie vraagt je therapeut je om je een herinnering uit je jeugd voor te stellen. "
             "Hier hoef je niet terug te denken aan vroeger.")
    report = check_content(copy)
    assert report.ok, "\n".join(map(str, report.problems))


def test_missing_or_broken_lint_rules_are_reported(copy):
    (copy / "lint.yaml").unlink()
    assert_reported(copy, "lint.yaml", "missing")
    (copy / "lint.yaml").write_text("languages:\n  en:\n    instruction: ['(unclosed']\n    memory: [a]\n"
                                    "    recall: [a]\n    allow: [a]\n")
    assert_reported(copy, "lint.yaml", "bad pattern")


# -- the lint on its own ---------------------------------------------------------------------------

FLAGGED = [
    "Close your eyes and think back to when you were a child.",
    "Now imagine a memory from your childhood.",
    "When you are ready, picture the scene from back then.",
    "Think of a time when you felt unsafe.",
    "Go back to that moment and notice what you feel.",
    "I'd like you to remember what happened.",
    "Could you picture your childhood bedroom?",
    "You are back in the house where you grew up.",
    "Take a moment to bring up the memory.",
    "In the session: think back to your childhood.",
    "Your therapist is kind — now recall the event.",
    "Denk terug aan een nare herinnering uit je jeugd.",
    "Stel je voor dat je terug bent in je ouderlijk huis.",
    "Stel je een moment uit je kindertijd voor.",
    "Haal de herinnering op.",
    "Ga in gedachten terug naar vroeger.",
    "Je bent weer klein.",
    "Probeer je te herinneren wat er toen gebeurde.",
    "Wanneer je er klaar voor bent, beeld je de scène van toen je klein was in.",
]
ALLOWED = [
    "In the session, your therapist will ask you to imagine a memory from your childhood.",
    "Then your therapist asks you to imagine a moment from the past, usually only briefly.",
    "You will be asked to recall the event, but only in the session.",
    "I will never ask you to imagine a memory.",
    "You don't have to think back to anything here.",
    "Imagine a place where you feel safe and at ease.",
    "Remember: you can stop at any moment.",
    "Remember that your memory does not need to be exact.",
    "My memory is vague.",
    "Picture your safe place. What do you see there?",
    "In de sessie vraagt je therapeut je om je een moment uit je jeugd voor te stellen.",
    "Daarna vraagt je therapeut je om je een moment van vroeger voor te stellen.",
    "Je therapeut vraagt je om terug te denken aan een herinnering.",
    "Je hoeft hier niet terug te denken aan vroeger.",
    "Stel je je veilige plek voor.",
    "Denk aan je ademhaling.",
]


@pytest.mark.parametrize("sentence", FLAGGED)
def test_the_lint_flags_instructions_about_memories(sentence):
    assert lint_text(sentence, RULES), sentence


@pytest.mark.parametrize("sentence", ALLOWED)
def test_the_lint_allows_descriptions_and_the_present(sentence):
    assert lint_text(sentence, RULES) == [], sentence


def test_the_lint_reads_through_markup_and_reports_the_line():
    text = "<b>Calm</b>\n\nBreathe slowly.\n<i>Now</i> think back to your childhood &amp; stay there."
    assert lint_text(text, RULES) == [(3, "Now think back to your childhood & stay there.")]


# -- the command -------------------------------------------------------------------------------------


def run_check(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TELEGRAM_", "DATABASE_URL", "IMRS_", "WEBHOOK_", "LOG_LEVEL"))}
    return subprocess.run([IMRS_BOT, "content", "check", *args], capture_output=True, text=True,
                          env=env, timeout=60, stdin=subprocess.DEVNULL)


def test_the_command_passes_on_the_real_content():
    result = run_check()
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1].startswith("content check: ")
    assert "no problems" in result.stdout


def test_the_command_fails_on_a_broken_copy_listing_file_and_line(copy):
    line = add_page(copy / "nl" / "learn" / "safety.md", "Haal de herinnering op.")
    (copy / "nl" / "learn" / "core-needs.md").unlink()
    result = run_check("--root", str(copy))
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    assert f"content/nl/learn/safety.md:{line}: page 5: instructs the reader to go to a memory" in result.stdout
    assert "content/nl/learn/core-needs.md: module 'core-needs' is missing in nl/" in result.stdout
    assert lines[-1].endswith("2 problem(s)")
    assert "Traceback" not in result.stderr


def test_the_command_says_so_when_the_folder_does_not_exist(tmp_path):
    result = run_check("--root", str(tmp_path / "nowhere"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"imrs-bot: {tmp_path / 'nowhere'}: no such content folder"]


# -- the stronger lint: invitations in any phrasing, people and places of the past ---------------

FLAGGED_PHRASINGS = [
    "Picture your old bedroom.",
    "Imagine your mother's face.",
    "Describe what happened.",
    "Denk terug aan je kinderkamer.",
    "Try to remember how your father looked at you.",
    "Write down what happened that night.",
    "Tell me about your worst memory.",
    "See the room where it happened.",
    "Go to the moment it happened.",
    "Could you describe what he did?",
    "Now put yourself in your childhood home.",
    "Beeld je het gezicht van je vader in.",
    "Beschrijf wat er gebeurde.",
    "Roep het beeld op van je oude slaapkamer.",
    "Vertel over je jeugd.",
    "Stel je je moeder voor.",
    "Schrijf op wat hij deed.",
    "Kun je beschrijven wat er toen gebeurde?",
]
ALLOWED_PHRASINGS = [
    "In the session, you will describe what happened, and your therapist guides you.",
    "Tell your therapist what happened, if you want to.",
    "You can talk to your therapist about your childhood.",
    "Describe your safe place: what do you see?",
    "Notice your breath as it slows down.",
    "See how your shoulders relax.",
    "Go to /practice to start an exercise.",
    "Write down one thing that helped you today.",
    "Tijdens de sessie word je gevraagd te beschrijven wat er gebeurde.",
    "Vertel je therapeut wat er gebeurd is, als je dat wilt.",
    "Bespreek met je therapeut wat je jeugd voor je betekent.",
    "Beschrijf je veilige plek.",
    "Kijk naar je ademhaling.",
]


@pytest.mark.parametrize("sentence", FLAGGED_PHRASINGS)
def test_the_lint_flags_invitations_in_any_phrasing(sentence):
    assert lint_text(sentence, RULES), sentence


@pytest.mark.parametrize("sentence", ALLOWED_PHRASINGS)
def test_the_lint_allows_the_session_the_therapist_and_the_present(sentence):
    assert lint_text(sentence, RULES) == [], sentence


def test_a_picture_of_the_past_in_a_learn_page_is_reported(copy):
    line = add_page(copy / "en" / "learn" / "safety.md", "<b>Try this</b>\n\nPicture your old bedroom.")
    assert_reported(copy, f"en/learn/safety.md:{line + 2}", "instructs the reader to go to a memory",
                    "Picture your old bedroom")


# -- commands, reminder words and crisis lines (issue 12) -----------------------------------------


def test_the_commands_texts_may_name_are_the_registered_ones():
    from bot.content_check import registered_commands

    found = registered_commands()
    assert {"start", "help", "practice", "reminders", "clients", "therapists", "stop", "cancel"} <= found
    assert "diary" not in found  # no such feature
    assert {"safetyplan", "checkin", "appointments", "summaries"} <= found


def test_a_command_that_does_not_exist_is_reported(copy):
    replace(copy / "en" / "bot.yaml", "    /help — this list\n\n    {crisis}",
            "    /help — this list\n    /diary — how you are doing\n\n    {crisis}")
    assert_reported(copy, "en/bot.yaml", "help.client: /diary is not a command the bot has")


def test_a_closing_tag_shown_as_text_is_not_a_command(copy):
    replace(copy / "en" / "bot.yaml", "    /help — this list\n\n    {crisis}",
            "    /help — this list\n    Bold ends with &lt;/b&gt; in a message.\n\n    {crisis}")
    assert check_content(copy).ok, [str(p) for p in check_content(copy).problems]


def test_a_command_of_another_role_is_reported(copy):
    replace(copy / "en" / "bot.yaml", "    /invite — an invite link for a client (with an optional alias)\n",
            "    /invite — an invite link for a client (with an optional alias)\n    /practice — calming exercises\n")
    assert_reported(copy, "en/bot.yaml", "help.therapist: /practice is not in the menu of therapist")
    replace(copy / "nl" / "learn" / "safety.md", "Daarvoor is /practice.", "Daarvoor is /therapists.")
    assert_reported(copy, "nl/learn/safety.md", "/therapists is not in the menu of client")


def test_a_menu_command_without_a_handler_is_reported(copy):
    replace(copy / "en" / "bot.yaml", "    progress: \"Your practice over time, as a chart\"\n",
            "    progress: \"Your practice over time, as a chart\"\n    diary: Your mood diary\n")
    assert_reported(copy, "en/bot.yaml", "commands.client: /diary is in the menu but no handler registers it")


def test_herinnering_in_a_dutch_reminder_text_is_reported_and_a_memory_is_not(copy):
    replace(copy / "nl" / "reminders.yaml", "De oefenmelding is verwijderd.", "De herinnering is verwijderd.")
    assert_reported(copy, "nl/reminders.yaml", "reminders.deleted", '"herinnering" also means memory')
    replace(copy / "nl" / "account.yaml", "Oefenmeldingen staan aan,", "Herinneringen staan aan,")
    assert_reported(copy, "nl/account.yaml", "account.consent.granted", '"Herinneringen" also means memory')
    found = problems(copy)
    assert not any("bot.yaml" in p and "also means memory" in p for p in found), \
        "\"werken met herinneringen\" (memories) in about.text is fine"


def test_every_offered_country_needs_a_crisis_entry(copy):
    text = (copy / "crisis_lines.yaml").read_text(encoding="utf-8")
    start, end = text.index("  BE:\n"), text.index("  FR:\n")
    (copy / "crisis_lines.yaml").write_text(text[:start] + text[end:], encoding="utf-8")
    assert_reported(copy, "nl/account.yaml", "Europe/Brussels (BE) is offered", "no entry for BE")
    assert_reported(copy, "en/account.yaml", "Europe/Brussels (BE) is offered")
    replace(copy / "en" / "account.yaml", "      - zone: Europe/Dublin\n", "      - zone: Etc/UTC\n")
    assert_reported(copy, "en/account.yaml", "'Etc/UTC' offered as a button has no country")


def test_a_malformed_crisis_file_is_reported(copy):
    replace(copy / "crisis_lines.yaml", 'emergency: "000"', "emergency: 000")
    assert_reported(copy, "crisis_lines.yaml", "country AU, emergency")


PLANNED_DIARY = """planned:
  - feature: a mood diary
    en: ['\\bmood diar(?:y|ies)\\b']
    nl: ['\\bstemmingsdagboek(?:en)?\\b']
"""


def plan_a_diary(root: Path) -> None:
    """The copy plans a feature the bot does not have (every real one has landed): a mood
    diary, with one outbox text kept ready for it under a `# FEATURE` marker."""
    text = (root / "features.yaml").read_text(encoding="utf-8")
    (root / "features.yaml").write_text(text.replace("planned: []\n", PLANNED_DIARY), encoding="utf-8")
    for language, words in (("en", "How was today? Your mood diary is open."),
                            ("nl", "Hoe was vandaag? Je stemmingsdagboek staat open.")):
        replace(root / language / "outbox.yaml", "  consent_new_version: |-\n",
                f"  # FEATURE (mood diary, not built): sent by nothing yet.\n  diary_prompt: |-\n    {words}\n"
                "  consent_new_version: |-\n")


def test_a_text_naming_a_feature_not_built_yet_is_reported(copy):
    plan_a_diary(copy)
    assert check_content(copy).ok, "a text marked # FEATURE is not reported"
    replace(copy / "en" / "bot.yaml", "    /learn — short pages about Imagery Rescripting\n",
            "    /learn — short pages about Imagery Rescripting\n    Every evening: your mood diary.\n")
    assert_reported(copy, "en/bot.yaml", "names a mood diary")
    add_page(copy / "nl" / "learn" / "safety.md", "Vul elke avond je stemmingsdagboek in.")
    assert_reported(copy, "nl/learn/safety.md", "names a mood diary")
    assert not any("outbox.diary_prompt" in p for p in problems(copy))


def test_a_feature_that_lands_is_deleted_from_the_list(copy):
    plan_a_diary(copy)
    replace(copy / "en" / "bot.yaml", "    /learn — short pages about Imagery Rescripting\n",
            "    /learn — short pages about Imagery Rescripting\n    Every evening: your mood diary.\n")
    assert not check_content(copy).ok
    text = (copy / "features.yaml").read_text(encoding="utf-8")
    (copy / "features.yaml").write_text(text.replace(PLANNED_DIARY, "planned: []\n"), encoding="utf-8")
    assert check_content(copy).ok


def test_broadcast_words_need_a_list_for_every_language(copy: Path):
    words = copy / "broadcast_words.yaml"
    words.write_text("words:\n  en: [trauma]\n", encoding="utf-8")
    found = problems(copy)
    assert [p for p in found if "broadcast_words.yaml" in p and "words.nl" in p], found
    words.unlink()
    assert any("broadcast words are missing" in p for p in problems(copy))


def test_broadcast_templates_hold_no_clinical_word_and_exist_in_every_language(copy: Path):
    """A ready-made broadcast is sent as it is: a word of broadcast_words.yaml (of any language)
    in its label or text fails the check, as does a template missing in one language."""
    nl = copy / "nl" / "broadcast.yaml"
    text = nl.read_text(encoding="utf-8")
    nl.write_text(text.replace("Je volgende afspraak bij ons is deze week.",
                               "Je volgende behandeling van je trauma is deze week."), encoding="utf-8")
    assert_reported(copy, "nl/broadcast.yaml", "broadcast.templates.week.text", "trauma", "behandeling")
    nl.write_text(text.replace("    practise:\n", "    oefenen:\n"), encoding="utf-8")
    assert any("broadcast.templates: nl has" in p for p in problems(copy))
