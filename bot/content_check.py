"""``imrs-bot content check``: is ``content/`` complete, well formed and clinically safe?

Checks, for every language folder against English (the reference):

- every YAML file parses, its keys are texts (no ``yes``/``no`` read as true/false), no key is
  defined twice, and no top-level key is shared by two files;
- every text English has exists in every language and nothing else does, with the same
  ``{placeholders}``; in ``exercises:`` also the same steps and the same numbers (timings);
- every text is valid Telegram HTML within Telegram's limits (4096 characters, button labels
  short), and every link is a complete http(s) address;
- ``exercises:`` has the shape the exercise handlers need (phases, seconds, questions, ...);
- every learn module (``<language>/learn/*.md``) has well-formed front matter and references,
  exists in every language, and has chat-sized pages of plain Telegram HTML (``<b>``, ``<i>``,
  ``<a href>``);
- the memory-imagery lint (rules in ``content/lint.yaml``): no text instructs the reader to
  imagine, recall or go back to a memory; describing the session is fine;
- the safety rules (``content/safety_rules.<language>.yaml``) load, and every rule matches
  each of its ``examples: match`` and none of its ``examples: must_not_match``.

Problems are reported as ``file:line: what is wrong``; warnings (a page longer than the
900 characters we aim for) do not fail the check.
"""

from __future__ import annotations

import html
import re
import string
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import SafeConstructor

from bot.content import (
    compose,
    safe_load,
    CONTENT_DIR,
    LEARN_DIR,
    REFERENCE_LANGUAGE,
    ContentError,
    module_problems,
    split_module,
)
from bot.sandbox.emulator.markup import MarkupError, normalize_url, parse_html

MAX_MESSAGE = 4096  # Telegram's limit for a message text, after entity parsing
PAGE_AIM = 900  # what a learn page aims for: one screen of a phone
MAX_BUTTON = 64  # our limit for a button label (Telegram cuts long ones off)
LEARN_TAGS = frozenset({"b", "i", "a"})
LINT_FILE = "lint.yaml"
# Sections whose lists of steps and numbers (timings) are data shared by every language: a
# translation has the same steps and the same numbers. Elsewhere lists of items may differ per
# language (time-zone suggestions, stop words).
STRUCTURED_SECTIONS = frozenset({"exercises"})
# In those sections, these fields name a step for the code (not words for the client): the
# same in every language.
IDENTIFIER_FIELDS = frozenset({"phase", "field", "sense"})

KeyPath = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    where: str  # "content/en/bot.yaml:12"
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass
class Report:
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    languages: list[str] = field(default_factory=list)
    texts: int = 0
    modules: int = 0
    pages: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        checked = (
            f"{len(self.languages)} language(s) ({', '.join(self.languages)}), {self.texts} texts, "
            f"{self.modules} learn modules with {self.pages} pages"
        )
        if self.ok:
            return f"content check: {checked}: no problems" + (
                f" ({len(self.warnings)} warning(s))" if self.warnings else ""
            )
        return f"content check: {checked}: {len(self.problems)} problem(s)"


# -- the memory-imagery lint ----------------------------------------------------------------------


@dataclass(frozen=True)
class LintRules:
    """One language's patterns from content/lint.yaml (see the comments there)."""

    language: str
    instruction: tuple[re.Pattern[str], ...]
    memory: tuple[re.Pattern[str], ...]
    recall: tuple[re.Pattern[str], ...]
    allow: tuple[re.Pattern[str], ...]

    def flags(self, clause: str) -> bool:
        return (
            any(p.search(clause) for p in self.instruction)
            and any(p.search(clause) for p in (*self.memory, *self.recall))
            and not any(p.search(clause) for p in self.allow)
        )


_LINT_LISTS = ("instruction", "memory", "recall", "allow")
_CLAUSE_BREAK = re.compile(r"(?<=[.!?…;:])\s+|\s+[—–]\s+")
_TAG = re.compile(r"<[^>]*>")


def load_lint_rules(path: Path) -> list[LintRules]:
    """Read content/lint.yaml; raises ContentError saying what is wrong with it."""
    try:
        data = safe_load(path.read_text(encoding="utf-8"))
    except OSError:
        raise ContentError(f"{path}: missing (the memory-imagery lint rules)") from None
    except yaml.YAMLError as exc:
        raise ContentError(f"{path}: not valid YAML ({exc})") from None
    languages = data.get("languages") if isinstance(data, dict) else None
    if not isinstance(languages, dict) or not languages:
        raise ContentError(f"{path}: needs 'languages:' with rules per language")
    rules = []
    for language, table in languages.items():
        if not isinstance(table, dict) or set(table) != set(_LINT_LISTS):
            raise ContentError(f"{path}: {language} needs exactly the lists {', '.join(_LINT_LISTS)}")
        compiled: dict[str, tuple[re.Pattern[str], ...]] = {}
        for name in _LINT_LISTS:
            patterns = table[name]
            if not isinstance(patterns, list) or not patterns or not all(isinstance(p, str) for p in patterns):
                raise ContentError(f"{path}: {language}.{name} must be a list of patterns")
            try:
                compiled[name] = tuple(re.compile(p, re.IGNORECASE) for p in patterns)
            except re.error as exc:
                raise ContentError(f"{path}: {language}.{name}: bad pattern {exc.pattern!r} ({exc})") from None
        rules.append(LintRules(str(language), **compiled))
    return rules


def clauses(text: str) -> Iterator[tuple[int, str]]:
    """The sentences and clauses of a text, without markup, with their line index in it."""
    for index, line in enumerate(text.splitlines()):
        plain = html.unescape(_TAG.sub("", line)).replace("’", "'").replace("‘", "'")
        for clause in _CLAUSE_BREAK.split(plain):
            clause = clause.strip(" \t•*-–—\"“”'")
            if clause:
                yield index, clause


def lint_text(text: str, rules: list[LintRules]) -> list[tuple[int, str]]:
    """The clauses that instruct the reader to go to a memory: (line index, clause)."""
    return [(index, clause) for index, clause in clauses(text) if any(r.flags(clause) for r in rules)]


# -- YAML with line numbers -------------------------------------------------------------------------


@dataclass
class _YamlFile:
    path: Path
    data: dict[str, Any]
    lines: dict[KeyPath, tuple[int, str | None]]  # path -> (1-based line, scalar style)

    def line(self, path: KeyPath, offset: int = 0) -> int | None:
        """The line of the value at ``path``; ``offset`` counts lines inside a block text."""
        found = self.lines.get(path)
        if found is None:
            return self.line(path[:-1]) if path else None
        line, style = found
        if style == "|":
            return line + 1 + offset
        if style == ">":
            return line + 1
        return line + offset


def _leaves(node: Any, path: KeyPath = ()) -> Iterator[tuple[KeyPath, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _leaves(value, (*path, index))
    else:
        yield path, node


def _dotted(path: KeyPath) -> str:
    return ".".join(str(part) for part in path)


def _placeholders(text: str) -> set[str]:
    try:
        return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError:
        return set()


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# -- the checker ------------------------------------------------------------------------------------


class _Checker:
    def __init__(self, root: Path):
        self.root = root
        self.report = Report()
        self.rules: list[LintRules] = []
        # Files that did not parse in some language, by name: their sections are not compared
        # (the parse error is the problem to fix first).
        self.unreadable: set[str] = set()

    # reporting

    def where(self, path: Path, line: int | None = None) -> str:
        try:
            shown = str(path.relative_to(self.root.parent))
        except ValueError:
            shown = str(path)
        return f"{shown}:{line}" if line else shown

    def problem(self, path: Path, line: int | None, message: str) -> None:
        self.report.problems.append(Problem(self.where(path, line), message))

    def warn(self, path: Path, line: int | None, message: str) -> None:
        self.report.warnings.append(Problem(self.where(path, line), message))

    # the whole check

    def run(self) -> Report:
        try:
            self.rules = load_lint_rules(self.root / LINT_FILE)
        except ContentError as exc:
            self.problem(self.root / LINT_FILE, None, str(exc).split(": ", 1)[-1])
        languages = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        self.report.languages = languages
        if REFERENCE_LANGUAGE not in languages:
            self.problem(self.root, None, f"no {REFERENCE_LANGUAGE}/ folder (English is the reference language)")
            return self.report
        files = {lang: self.load_language(lang) for lang in languages}
        for lang in languages:
            for yaml_file in {id(f): f for f in files[lang].values()}.values():
                self.check_texts(yaml_file)
            self.check_exercises(lang, files[lang])
            if lang != REFERENCE_LANGUAGE:
                self.compare_language(lang, files[REFERENCE_LANGUAGE], files[lang])
        self.check_modules(languages)
        self.report.problems.extend(safety_rule_problems(self.root))
        return self.report

    # YAML files

    def load_language(self, lang: str) -> dict[str, _YamlFile]:
        """The language's YAML files, by top-level key."""
        by_key: dict[str, _YamlFile] = {}
        for path in sorted((self.root / lang).glob("*.yaml")):
            loaded = self.load_yaml(path)
            if loaded is None:
                continue
            for key in loaded.data:
                if key in by_key:
                    self.problem(path, loaded.line((key,)),
                                 f"top-level key {key!r} is also defined in {by_key[key].path.name}")
                else:
                    by_key[key] = loaded
        return by_key

    def load_yaml(self, path: Path) -> _YamlFile | None:
        lines: dict[KeyPath, tuple[int, str | None]] = {}
        try:
            node = compose(path.read_text(encoding="utf-8"))
            if node is None:
                return _YamlFile(path, {}, {})
            if not isinstance(node, yaml.MappingNode):
                self.problem(path, node.start_mark.line + 1, "the top level must be a mapping of keys")
                self.unreadable.add(path.name)
                return None
            data = self._construct(node, (), path, lines, SafeConstructor())
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            context = getattr(exc, "context_mark", None)
            reason = getattr(exc, "problem", None) or str(exc)
            if context is not None and mark is not None and context.line != mark.line:
                reason += f" (in what starts on line {context.line + 1})"
            self.problem(path, mark.line + 1 if mark else None, f"not valid YAML: {reason}")
            self.unreadable.add(path.name)
            return None
        return _YamlFile(path, data, lines)

    def _construct(self, node: yaml.Node, path: KeyPath, file: Path, lines: dict, ctor: SafeConstructor) -> Any:
        lines[path] = (node.start_mark.line + 1, getattr(node, "style", None))
        if isinstance(node, yaml.MappingNode):
            table: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key = ctor.construct_object(key_node, deep=True) if isinstance(key_node, yaml.ScalarNode) else None
                line = key_node.start_mark.line + 1
                if not isinstance(key, str):
                    self.problem(file, line, f"the key {getattr(key_node, 'value', '?')!r} is not read as a "
                                             "word (YAML reads yes/no/on/off/numbers differently): put it in quotes")
                    key = str(getattr(key_node, "value", key))
                if key in table:
                    self.problem(file, line, f"the key {_dotted((*path, key))!r} is defined twice")
                table[key] = self._construct(value_node, (*path, key), file, lines, ctor)
                if not isinstance(value_node, yaml.ScalarNode):
                    lines[(*path, key)] = (line, None)  # a group or list: the line of its name
            return table
        if isinstance(node, yaml.SequenceNode):
            return [self._construct(item, (*path, i), file, lines, ctor) for i, item in enumerate(node.value)]
        return ctor.construct_object(node, deep=True)

    # texts

    def check_texts(self, yaml_file: _YamlFile) -> None:
        for path, value in _leaves(yaml_file.data):
            key = _dotted(path)
            if isinstance(value, bool):
                self.problem(yaml_file.path, yaml_file.line(path),
                             f"{key} is read as {value} (YAML reads yes/no/on/off that way): put the text in quotes")
            elif value is None:
                self.problem(yaml_file.path, yaml_file.line(path), f"{key} is empty")
            elif isinstance(value, str):
                self.report.texts += 1
                is_button = any(isinstance(p, str) and (p == "buttons" or p.endswith("button")) for p in path)
                self.check_text(value, yaml_file.path, lambda offset, p=path: yaml_file.line(p, offset),
                                key, button=is_button)

    def check_text(self, text: str, file: Path, line_of, name: str, *, button: bool = False,
                   tags: frozenset[str] | None = None, max_plain: int = MAX_MESSAGE) -> str | None:
        """Check one text; returns its plain text (what the client reads) when it parses."""
        if not text.strip():
            self.problem(file, line_of(0), f"{name} is empty")
            return None
        try:
            list(string.Formatter().parse(text))
        except ValueError:
            self.problem(file, line_of(0), f"{name}: a {{ or }} without its partner (placeholders are {{name}})")
            return None
        for placeholder in _placeholders(text):
            if not re.fullmatch(r"[a-z_][a-z0-9_]*", placeholder):
                self.problem(file, line_of(0), f"{name}: {{{placeholder}}} is not a placeholder name (a-z, _)")
        sample = re.sub(r"\{[a-z0-9_]*(?:![rsa])?(?::[^{}]*)?\}", "0", text)
        try:
            plain, _ = parse_html(sample)
        except MarkupError as exc:
            self.problem(file, line_of(0), f"{name}: not valid Telegram HTML: {exc}")
            return None
        if len(plain) > max_plain:
            self.problem(file, line_of(0), f"{name} is {len(plain)} characters; Telegram's limit is {max_plain}")
        if button and len(plain) > MAX_BUTTON:
            self.problem(file, line_of(0), f"{name} is a button label of {len(plain)} characters (at most {MAX_BUTTON})")
        self.check_tags_and_links(text, file, line_of, name, tags)
        for index, clause in lint_text(text, self.rules):
            self.problem(file, line_of(index),
                         f"{name}: instructs the reader to go to a memory (see content/lint.yaml): \"{clause}\"")
        return plain

    def check_tags_and_links(self, text: str, file: Path, line_of, name: str, tags: frozenset[str] | None) -> None:
        for index, line in enumerate(text.splitlines()):
            for match in re.finditer(r"<\s*([a-zA-Z][\w-]*)([^>]*)>", line):
                tag, attributes = match.group(1).lower(), match.group(2)
                if tags is not None and tag not in tags:
                    self.problem(file, line_of(index),
                                 f"{name}: <{tag}> is not used here (only {', '.join(f'<{t}>' for t in sorted(tags))})")
                if tag != "a":
                    continue
                href = re.search(r"""href\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))""", attributes)
                url = next((g for g in href.groups() if g is not None), "") if href else ""
                if not href:
                    self.problem(file, line_of(index), f"{name}: a link <a> without href")
                elif "{" not in url:
                    self.check_url(html.unescape(url), file, line_of(index), name)
            plain_line = html.unescape(_TAG.sub("", line))
            for url in re.findall(r"\bhttps?://[^\s<>\"']+", plain_line):
                self.check_url(url.rstrip(".,;:!?)"), file, line_of(index), name)

    def check_url(self, url: str, file: Path, line: int | None, name: str) -> None:
        if not re.fullmatch(r"https?://\S+", url, re.IGNORECASE) or normalize_url(url) is None:
            self.problem(file, line, f"{name}: {url!r} is not a complete http(s) link")

    # other languages against English

    def compare_language(self, lang: str, reference: dict[str, _YamlFile], local: dict[str, _YamlFile]) -> None:
        for top, ref_file in reference.items():
            if top not in local:
                if ref_file.path.name in self.unreadable:
                    continue
                self.problem(self.root / lang / ref_file.path.name, None,
                             f"{top}: the section is missing in {lang}/ (English has it in {ref_file.path.name})")
                continue
            self.compare((top,), ref_file, local[top], ref_file.data[top], local[top].data[top])
        for top, local_file in local.items():
            if top not in reference and local_file.path.name not in self.unreadable:
                self.problem(local_file.path, local_file.line((top,)), f"{top}: not in English (a typo?)")

    def compare(self, path: KeyPath, ref_file: _YamlFile, file: _YamlFile, ref: Any, value: Any) -> None:
        key = _dotted(path)
        if isinstance(ref, dict):
            if not isinstance(value, dict):
                self.problem(file.path, file.line(path), f"{key} must be a group of texts, as in English")
                return
            for name, ref_value in ref.items():
                if name not in value:
                    self.problem(file.path, file.line(path),
                                 f"{_dotted((*path, name))} is missing (English: {ref_file.path.name}:"
                                 f"{ref_file.line((*path, name))})")
                else:
                    self.compare((*path, name), ref_file, file, ref_value, value[name])
            for name in value:
                if name not in ref:
                    self.problem(file.path, file.line((*path, name)), f"{_dotted((*path, name))} is not in English (a typo?)")
        elif isinstance(ref, list):
            if not isinstance(value, list):
                self.problem(file.path, file.line(path), f"{key} must be a list, as in English")
            elif path[0] in STRUCTURED_SECTIONS and any(isinstance(item, (dict, list)) for item in ref):
                if len(value) != len(ref):
                    self.problem(file.path, file.line(path),
                                 f"{key} has {len(value)} items; English has {len(ref)}")
                for index, (ref_item, item) in enumerate(zip(ref, value, strict=False)):  # lengths differ: told above
                    self.compare((*path, index), ref_file, file, ref_item, item)
        elif isinstance(ref, str):
            if not isinstance(value, str):
                self.problem(file.path, file.line(path), f"{key} must be a text, as in English")
            elif path[0] in STRUCTURED_SECTIONS and path[-1] in IDENTIFIER_FIELDS and value != ref:
                self.problem(file.path, file.line(path),
                             f"{key} is {value!r}; it names a step for the bot and stays {ref!r} in every language")
            elif _placeholders(value) != _placeholders(ref):
                self.problem(file.path, file.line(path),
                             f"{key} has placeholders {sorted(_placeholders(value))}; English has "
                             f"{sorted(_placeholders(ref))}")
        elif _is_number(ref) and path[0] in STRUCTURED_SECTIONS and value != ref:
            self.problem(file.path, file.line(path), f"{key} is {value!r}; English has {ref!r} (numbers are shared)")

    # exercises

    def check_exercises(self, lang: str, files: dict[str, _YamlFile]) -> None:
        file = files.get("exercises")
        if file is None:
            if lang == REFERENCE_LANGUAGE:
                self.problem(self.root / lang / "exercises.yaml", None, "exercises: the section is missing")
            return
        for path, message in exercise_problems(file.data["exercises"]):
            self.problem(file.path, file.line(("exercises", *path)), f"exercises.{_dotted(path)}: {message}")

    # learn modules

    def check_modules(self, languages: list[str]) -> None:
        found: dict[str, dict[str, tuple[Path, Any]]] = {}
        for lang in languages:
            found[lang] = {}
            for path in sorted((self.root / lang / LEARN_DIR).glob("*.md")):
                meta = self.check_module(path)
                if meta is not None:
                    found[lang][path.stem] = (path, meta)
        reference = found[REFERENCE_LANGUAGE]
        if not reference:
            self.problem(self.root / REFERENCE_LANGUAGE / LEARN_DIR, None, "no learn modules (*.md) in English")
        for lang in languages:
            orders: dict[int, str] = {}
            for stem, (path, meta) in found[lang].items():
                if meta.get("order") in orders:
                    self.problem(path, 1, f"order {meta['order']} is also used by {orders[meta['order']]}.md")
                orders[meta.get("order")] = stem
                if lang == REFERENCE_LANGUAGE:
                    continue
                if stem not in reference:
                    self.problem(path, 1, f"module {stem!r} has no English version (a typo in the file name?)")
                elif meta.get("order") != reference[stem][1].get("order"):
                    self.problem(path, 1, f"order is {meta.get('order')}; English has {reference[stem][1].get('order')}")
            for stem in reference:
                if stem not in found[lang]:
                    self.problem(self.root / lang / LEARN_DIR / f"{stem}.md", None,
                                 f"module {stem!r} is missing in {lang}/ (it would be shown in English)")

    def check_module(self, path: Path) -> dict[str, Any] | None:
        """Check one module file; returns its front matter when it could be read."""
        try:
            front_matter, pages = split_module(path.read_text(encoding="utf-8"))
        except ContentError as exc:
            line, _, message = str(exc).removeprefix("line ").partition(": ")
            self.problem(path, int(line) if line.isdigit() else None, message or str(exc))
            return None
        try:
            meta = safe_load(front_matter)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            self.problem(path, mark.line + 2 if mark else 1, f"front matter is not valid YAML: {getattr(exc, 'problem', exc)}")
            return None
        problems = module_problems(meta, path.stem)
        for message in problems:
            self.problem(path, _front_matter_line(front_matter, message), message)
        if not isinstance(meta, dict):
            return None
        self.report.modules += 1
        for name in ("title", "summary"):
            value = meta.get(name)
            if isinstance(value, str):
                for _, clause in lint_text(value, self.rules):
                    self.problem(path, _front_matter_line(front_matter, repr(name)),
                                 f"{name}: instructs the reader to go to a memory (see content/lint.yaml): \"{clause}\"")
        for number, (text, first_line) in enumerate(pages, 1):
            name = f"page {number}"
            self.report.pages += 1
            if not text:
                self.problem(path, first_line, f"{name} is empty (two {'---page---'} lines in a row, or one at the end?)")
                continue
            if "{" in text or "}" in text:
                self.problem(path, first_line, f"{name}: learn pages have no {{placeholders}}; write braces as words")
                continue
            for index, line in enumerate(text.splitlines()):
                if re.search(r"\*\*|__|\]\(|^#{1,6}\s", line):
                    self.problem(path, first_line + index,
                                 f"{name}: looks like Markdown, which is not converted: use <b> and <i>")
            plain = self.check_text(text, path, lambda offset, f=first_line: f + offset, name, tags=LEARN_TAGS)
            if plain is not None and len(plain) > PAGE_AIM:
                self.warn(path, first_line, f"{name} is {len(plain)} characters; pages aim for at most {PAGE_AIM}")
        return meta


def _front_matter_line(front_matter: str, message: str) -> int:
    """The file line of the front-matter field a problem names, else line 1."""
    match = re.search(r"'(\w+)'", message)
    if match:
        for index, line in enumerate(front_matter.splitlines()):
            if line.startswith(f"{match.group(1)}:"):
                return index + 2
    return 1


# -- the shape of exercises: ------------------------------------------------------------------------

_EXERCISE_TEXTS = {
    "": ["menu.title", "menu.intro", "rating.before", "rating.after", "rating.scale",
         "rating.change_down", "rating.change_same", "rating.change_up", "rating.logged",
         "stop.stopped", "stop.grounding_offer", "stop.grounding", "stop.grounding_done",
         "buttons.start", "buttons.stop", "buttons.next", "buttons.done", "buttons.menu",
         "buttons.grounding", "buttons.no_thanks"],
    "breathing": ["title", "summary", "intro", "caution", "progress", "finished"],
    "pmr": ["title", "summary", "intro", "caution", "progress", "finished"],
    "safe_place": ["title", "summary", "intro", "caution", "too_long", "saved", "cue", "finished"],
    "grounding": ["title", "summary", "intro", "finished"],
}
_EXERCISE_PLACEHOLDERS = {
    "rating.change_down": {"before", "after"}, "rating.change_same": {"before", "after"},
    "rating.change_up": {"before", "after"}, "breathing.progress": {"cycle", "cycles"},
    "safe_place.cue": {"see", "hear", "feel"}, "safe_place.too_long": {"max"},
}


def exercise_problems(table: Any) -> list[tuple[KeyPath, str]]:
    """What the exercise handlers would trip over in ``exercises:``: (path, problem)."""
    if not isinstance(table, dict):
        return [((), "must be a group of texts")]
    problems: list[tuple[KeyPath, str]] = []

    def get(dotted: str) -> Any:
        node: Any = table
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return node

    def need_int(path: KeyPath, value: Any, low: int, high: int, what: str) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            problems.append((path, f"{what} must be a whole number from {low} to {high}"))

    def need_items(path: KeyPath, items: Any, fields: dict[str, type]) -> list[dict]:
        if not isinstance(items, list) or not items:
            problems.append((path, "must be a list of steps"))
            return []
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                problems.append(((*path, index), "must be a step with " + ", ".join(fields)))
                continue
            for name, kind in fields.items():
                value = item.get(name)
                if not isinstance(value, kind) or isinstance(value, bool):
                    problems.append(((*path, index), f"needs {name!r} ({'a number' if kind is int else 'a text'})"))
        return [item for item in items if isinstance(item, dict)]

    for section, keys in _EXERCISE_TEXTS.items():
        for key in keys:
            dotted = f"{section}.{key}" if section else key
            if not isinstance(get(dotted), str):
                problems.append((tuple(dotted.split(".")), "missing (a text)"))
    for dotted, expected in _EXERCISE_PLACEHOLDERS.items():
        value = get(dotted)
        if isinstance(value, str) and not expected <= _placeholders(value):
            problems.append((tuple(dotted.split(".")), f"needs the placeholders {sorted(expected)}"))

    need_int(("breathing", "cycles"), get("breathing.cycles"), 1, 30, "cycles")
    phases = need_items(("breathing", "phases"), get("breathing.phases"), {"phase": str, "seconds": int, "text": str})
    if get("breathing.phases") is not None and len(phases) < 2:
        problems.append((("breathing", "phases"), "needs at least two phases (in and out)"))
    for index, phase in enumerate(phases):
        if isinstance(phase.get("seconds"), int):
            need_int(("breathing", "phases", index), phase["seconds"], 1, 15, "seconds")

    need_items(("pmr", "groups"), get("pmr.groups"), {"name": str, "tense": str, "release": str})
    for name, low, high in (("tense_seconds", 2, 10), ("release_seconds", 5, 60)):
        need_int(("pmr", name), get(f"pmr.{name}"), low, high, name)

    need_int(("safe_place", "max_chars"), get("safe_place.max_chars"), 10, 200, "max_chars")
    questions = need_items(("safe_place", "questions"), get("safe_place.questions"), {"field": str, "prompt": str})
    if questions and [q.get("field") for q in questions] != ["see", "hear", "feel"]:
        problems.append((("safe_place", "questions"), "the fields are see, hear and feel, in that order"))

    steps = need_items(("grounding", "steps"), get("grounding.steps"), {"count": int, "sense": str, "prompt": str})
    if steps and [s.get("count") for s in steps] != [5, 4, 3, 2, 1]:
        problems.append((("grounding", "steps"), "the counts are 5, 4, 3, 2, 1"))
    return problems


# -- the safety rules: content/safety_rules.<language>.yaml ------------------------------------------


def safety_rule_problems(root: Path) -> list[Problem]:
    """The safety rule files load, and every rule treats its examples as the file says."""
    from bot.safety.rules import SafetyRulesError, example_problems, load_rules, rule_files

    def where(path: Path, line: int | None = None) -> str:
        shown = f"{root.name}/{path.relative_to(root)}" if path.is_relative_to(root) else str(path)
        return f"{shown}:{line}" if line else shown

    if not rule_files(root):
        return [Problem(where(root / "safety_rules.en.yaml"), "missing (the safety detector's rules)")]
    try:
        rule_sets = load_rules(root)
    except SafetyRulesError as exc:
        file, _, message = str(exc).partition(": ")
        return [Problem(f"{root.name}/{Path(file).name}", message)]
    return [Problem(where(path, line), message) for path, line, message in example_problems(rule_sets)]


def check_content(root: Path = CONTENT_DIR) -> Report:
    """Check a content folder; the report lists problems as ``file:line: what``."""
    if not root.is_dir():
        raise ContentError(f"{root}: no such content folder")
    report = _Checker(root).run()
    if REFERENCE_LANGUAGE in report.languages:
        for extra in EXTRA_CHECKS:  # defined below: commands, reminder words, crisis lines
            report.problems.extend(extra(root))  # our checks, not Django's QuerySet.extra  # nosec B610
    return report


# -- commands, reminder words and crisis lines (issue 12) ------------------------------------------
#
# Three self-contained checks, run after the ones above by ``check_content``:
#
# - ``command_problems``: a text that names a command (``/word``) names one that exists, and
#   one its reader's role has. The commands that exist are those the handlers register
#   (``CommandHandler("word", ...)`` in handlers/**/*.py, read with ``ast``, no bot started); a
#   role has the commands of its menu in ``commands:`` plus registered commands that are in
#   no menu (``/stop``). Who reads a text comes from ``TEXT_AUDIENCE`` below (by key; learn
#   modules are written for clients); a text not listed there may name any role's command.
#   Every command in a menu must be registered too.
# - ``reminder_word_problems``: in Dutch, "herinnering" means both memory and reminder; a
#   practice reminder is an "oefenmelding". No form of "herinner" in reminder texts, and no
#   "herinnering" in a sentence about sending, pausing or stopping messages.
# - ``crisis_coverage_problems``: content/crisis_lines.yaml is well formed and every country
#   the time-zone buttons offer (account.timezone.suggestions, in every language) has an
#   entry with its source and the date it was checked.
# - ``feature_problems``: no text names a feature the bot does not have yet (the planned
#   features and their words are in content/features.yaml), unless a ``# FEATURE`` comment
#   stands directly above it.

import ast  # noqa: E402 (kept with the checks that use it)

HANDLERS_DIR = Path(__file__).resolve().parent.parent / "handlers"
ROLES = ("everyone", "client", "therapist", "staff", "admin")
#: Who reads a text, by key (the longest matching prefix wins). Not listed: anyone.
TEXT_AUDIENCE: dict[str, tuple[str, ...]] = {
    "help.everyone": ("everyone",),
    "help.client": ("client",),
    "help.therapist": ("therapist",),
    "help.staff": ("staff",),
    "help.admin": ("admin",),
    "account.delete": ("client",),
    "account.consent": ("client",),
    "account.consent.withdrawn_notice": ("therapist",),
    "account.consent.regranted_notice": ("therapist",),
    "account.mydata": ("client",),
    "consent": ("client",),
    "outbox": ("client",),
    "exercises": ("client",),
    "progress": ("client",),
    "reminders": ("client",),
    "client_join": ("client",),
    "client_join.joined_notice": ("therapist",),
    "client_join.joined_notice_unnamed": ("therapist",),
    "client_join.switch.ended_notice": ("therapist",),
    "learn": ("everyone", "client", "therapist", "staff", "admin"),
    "learn.summary_question": ("therapist",),
    "learn-module": ("client",),
    "clinic.joined_therapist": ("therapist",),
    "clinic.joined_staff": ("staff",),
    "invite": ("therapist", "staff", "admin"),
    "clients": ("therapist",),
    "clients.unlinked_notice": ("client",),
    "therapists": ("staff", "admin"),
    "therapists.deactivated_notice": ("therapist",),
    "therapists.moved_therapist_notice": ("therapist",),
    "therapists.client_notice": ("client",),
    "therapists.moved_client_notice": ("client",),
    "staff": ("admin",),
    "appointments": ("therapist", "staff", "admin", "client"),
    "broadcast": ("staff", "admin"),
    "broadcast.message": ("client",),
    "broadcast.templates": ("client",),
    "settings": ("client", "therapist", "staff", "admin"),
    "appointments.client_title": ("client",),
    "appointments.client_row": ("client",),
    "appointments.client_empty": ("client",),
    "appointments.response": ("client",),
    "appointments.response_gone": ("client",),
    "appointments.reschedule_notice": ("therapist",),
    "summary": ("therapist",),
    "readiness": ("therapist",),
    "reader": ("therapist",),
}
# Not after a word, a path or URL, a tag, or an escaped "<" (a closing tag shown as text: &lt;/b&gt;).
_COMMAND = re.compile(r"(?<![\w/:<.&])(?<!&lt;)/([a-z][a-z0-9_]*)\b")


#: handler module -> ((mtime, size), its commands): parsed again only when the file changes
_COMMANDS_OF: dict[Path, tuple[tuple[int, int], frozenset[str]]] = {}


def _commands_in(path: Path) -> frozenset[str]:
    stat = path.stat()
    stamp = (stat.st_mtime_ns, stat.st_size)
    cached = _COMMANDS_OF.get(path)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not (isinstance(node, ast.Call) and node.args):
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        if name != "CommandHandler":
            continue
        first = node.args[0]
        items = first.elts if isinstance(first, (ast.List, ast.Tuple)) else [first]
        found.update(i.value for i in items if isinstance(i, ast.Constant) and isinstance(i.value, str))
    _COMMANDS_OF[path] = (stamp, frozenset(found))
    return frozenset(found)


def registered_commands(handlers_dir: Path = HANDLERS_DIR) -> set[str]:
    """Every command a ``CommandHandler`` is registered for in the handler modules."""
    found: set[str] = set()
    for path in sorted(handlers_dir.rglob("*.py")):
        found |= _commands_in(path)
    return found


def audience(key: str) -> tuple[str, ...]:
    """The roles that read the text ``key`` (all roles when not listed in TEXT_AUDIENCE)."""
    parts = key.split(".")
    for n in range(len(parts), 0, -1):
        found = TEXT_AUDIENCE.get(".".join(parts[:n]))
        if found is not None:
            return found
    return ROLES


def _loader(root: Path) -> _Checker:
    """A checker used only to read files (with line numbers): its own problems (a file that
    does not parse, ...) are the main check's to report, not repeated here."""
    return _Checker(root)


def command_problems(root: Path = CONTENT_DIR, handlers_dir: Path = HANDLERS_DIR) -> list[Problem]:
    checker, loader = _Checker(root), _loader(root)
    registered = registered_commands(handlers_dir)
    for lang in sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = loader.load_language(lang)
        menus_file = files.get("commands")
        menus: dict[str, set[str]] = {}
        if menus_file is not None and isinstance(menus_file.data.get("commands"), dict):
            for role, table in menus_file.data["commands"].items():
                menus[str(role)] = {str(c) for c in table} if isinstance(table, dict) else set()
                for command in menus[str(role)] - registered:
                    checker.problem(menus_file.path, menus_file.line(("commands", role, command)),
                                    f"commands.{role}: /{command} is in the menu but no handler registers it")
        hidden = registered - set().union(*menus.values()) if menus else registered

        def allowed(roles: tuple[str, ...], menus: dict[str, set[str]] = menus, hidden: set[str] = hidden) -> set[str]:
            return set().union(*(menus.get(r, set()) for r in roles)) | hidden if menus else registered

        def check(text: str, key: str, roles: tuple[str, ...], where: Path, line_of) -> None:
            for index, line in enumerate(text.splitlines()):
                for command in _COMMAND.findall(line):
                    if command not in registered:
                        checker.problem(where, line_of(index), f"{key}: /{command} is not a command the bot has")
                    elif command not in allowed(roles):
                        checker.problem(where, line_of(index),
                                        f"{key}: /{command} is not in the menu of {' or '.join(roles)}, who read this text")

        for yaml_file in {id(f): f for f in files.values()}.values():
            for path, value in _leaves(yaml_file.data):
                if isinstance(value, str) and path and path[0] != "commands":
                    key = _dotted(path)
                    check(value, key, audience(key), yaml_file.path, lambda o, p=path, f=yaml_file: f.line(p, o))
        for module in sorted((root / lang / LEARN_DIR).glob("*.md")):
            text = module.read_text(encoding="utf-8")
            check(text, f"learn module {module.stem}", audience("learn-module"), module, lambda o: o + 1)
    return checker.report.problems


_REMINDER_KEYS = ("reminders", "outbox.practice_reminder", "outbox.practice_reminder_for",
                  "outbox.buttons.reminder", "commands.client.reminders")
_REMINDER_CONTEXT = re.compile(
    r"oefen|samenvatting|check-in|verstu|\bstuur|gestuurd|\bpauzeren\b|gepauzeerd|/reminders|tijdstip|melding",
    re.IGNORECASE)


def reminder_word_problems(root: Path = CONTENT_DIR, language: str = "nl") -> list[Problem]:
    checker, loader = _Checker(root), _loader(root)
    if not (root / language).is_dir():
        return []
    files = loader.load_language(language)
    for yaml_file in {id(f): f for f in files.values()}.values():
        for path, value in _leaves(yaml_file.data):
            if not isinstance(value, str):
                continue
            key = _dotted(path)
            is_reminder = any(key == k or key.startswith(k + ".") for k in _REMINDER_KEYS)
            for index, line in enumerate(value.splitlines()):
                for clause in re.split(r"(?<=[.!?;:])\s+|\s+[—–]\s+", line):
                    word = re.search(r"herinner\w*", clause, re.IGNORECASE)
                    if word is None:
                        continue
                    if is_reminder or (word.group(0).lower().startswith("herinnering") and _REMINDER_CONTEXT.search(clause)):
                        checker.problem(yaml_file.path, yaml_file.line(path, index),
                                        f"{key}: \"{word.group(0)}\" also means memory; a practice reminder is an "
                                        "\"oefenmelding\" (or \"melding\")")
    return checker.report.problems


def crisis_coverage_problems(root: Path = CONTENT_DIR) -> list[Problem]:
    from bot.safety.resources import CrisisLinesError, country_of_zone, parse_file

    checker, loader = _Checker(root), _loader(root)
    lines_file = root / "crisis_lines.yaml"
    try:
        countries = parse_file(lines_file)
    except CrisisLinesError as exc:
        checker.problem(lines_file, None, str(exc).split(": ", 1)[-1])
        return checker.report.problems
    for lang in sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = loader.load_language(lang)
        account = files.get("account")
        suggestions = account.data.get("account", {}).get("timezone", {}).get("suggestions") if account else None
        if account is None or not isinstance(suggestions, list):
            continue
        for index, entry in enumerate(suggestions):
            zone = entry.get("zone") if isinstance(entry, dict) else None
            line = account.line(("account", "timezone", "suggestions", index))
            country = country_of_zone(str(zone)) if zone else None
            if country is None:
                checker.problem(account.path, line, f"the time zone {zone!r} offered as a button has no country, "
                                                    "so no crisis lines can follow it")
            elif country not in countries:
                checker.problem(account.path, line,
                                f"the time zone {zone} ({country}) is offered, but content/crisis_lines.yaml has no "
                                f"entry for {country}: add its verified numbers, source and date")
    return checker.report.problems


FEATURES_FILE = "features.yaml"


def _comment_above(path: Path, line: int | None) -> str:
    """The comment lines directly above ``line`` (1-based) of a file, joined."""
    if not line:
        return ""
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[str] = []
    index = line - 2
    while index >= 0 and lines[index].strip().startswith("#"):
        found.append(lines[index])
        index -= 1
    return "\n".join(found)


def feature_problems(root: Path = CONTENT_DIR) -> list[Problem]:
    """Texts naming a planned feature (content/features.yaml) as if the bot had it."""
    checker, loader = _Checker(root), _loader(root)
    path = root / FEATURES_FILE
    if not path.is_file():
        return []
    try:
        data = safe_load(path.read_text(encoding="utf-8")) or {}
        planned = [
            (str(entry["feature"]), {lang: [re.compile(p, re.IGNORECASE) for p in entry.get(lang, [])]
                                     for lang in entry if lang != "feature"})
            for entry in data.get("planned") or []  # empty once every planned feature has landed
        ]
    except (yaml.YAMLError, KeyError, TypeError, AttributeError, re.error) as exc:
        checker.problem(path, None, f"cannot read the planned features ({type(exc).__name__}): "
                                    "each needs 'feature' and a list of patterns per language")
        return checker.report.problems

    def named(text: str, lang: str) -> str | None:
        plain = html.unescape(_TAG.sub("", text))
        return next((feature for feature, patterns in planned
                     if any(p.search(plain) for p in patterns.get(lang, []))), None)

    for lang in sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for yaml_file in {id(f): f for f in loader.load_language(lang).values()}.values():
            for key_path, value in _leaves(yaml_file.data):
                if not isinstance(value, str):
                    continue
                feature = named(value, lang)
                key_line = yaml_file.lines.get(key_path, (None, None))[0]
                if feature and "FEATURE" not in _comment_above(yaml_file.path, key_line):
                    checker.problem(yaml_file.path, key_line,
                                    f"{_dotted(key_path)} names {feature}, which the bot does not have yet "
                                    f"(see {FEATURES_FILE})")
        for module in sorted((root / lang / LEARN_DIR).glob("*.md")):
            text = module.read_text(encoding="utf-8")
            front, _, pages = text.partition("\n---\n")
            feature = named(pages, lang)
            if feature and "# FEATURE" not in front:
                checker.problem(module, None, f"names {feature}, which the bot does not have yet (see {FEATURES_FILE})")
    return checker.report.problems


def readiness_problems(root: Path = CONTENT_DIR) -> list[Problem]:
    """content/readiness.yaml (bot.readiness) loads: known questions and choices, thresholds
    inside the question's scale, known colours; and every language has words for every
    reason (``readiness.reasons.<reason>``) and colour (``readiness.colours.<colour>``)."""
    from bot.readiness import RULES_FILE, Colour, ReadinessRulesError, load_rules, reasons_of

    checker, loader = _Checker(root), _loader(root)
    path = root / RULES_FILE
    if not path.is_file():
        checker.problem(path, None, "the readiness rules are missing (bot/readiness.py reads them)")
        return checker.report.problems
    try:
        rules = load_rules(path)
    except ReadinessRulesError as exc:
        for line, message in exc.problems:
            checker.problem(path, line, message)
        return checker.report.problems
    for lang in sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = loader.load_language(lang)
        table = files.get("readiness")
        data = table.data.get("readiness", {}) if table else {}
        where = table.path if table else root / lang
        reasons = data.get("reasons") if isinstance(data, dict) else None
        colours = data.get("colours") if isinstance(data, dict) else None
        for reason in reasons_of(rules):
            if not isinstance(reasons, dict) or not isinstance(reasons.get(reason), str):
                checker.problem(where, table.line(("readiness",)) if table else None,
                                f"the readiness reason {reason!r} ({RULES_FILE}) has no words in {lang}: "
                                f"add readiness.reasons.{reason}")
        for colour in Colour:
            if not isinstance(colours, dict) or not isinstance(colours.get(colour.value), str):
                checker.problem(where, table.line(("readiness",)) if table else None,
                                f"the readiness colour {colour.value!r} has no words in {lang}: "
                                f"add readiness.colours.{colour.value}")
    return checker.report.problems


BROADCAST_WORDS_FILE = "broadcast_words.yaml"


def broadcast_word_problems(root: Path = CONTENT_DIR) -> list[Problem]:
    """content/broadcast_words.yaml (the /broadcast preview's warning on words that reveal a
    diagnosis or treatment) loads, with a list of words for every language."""
    checker = _Checker(root)
    path = root / BROADCAST_WORDS_FILE
    if not path.is_file():
        checker.problem(path, None, "the broadcast words are missing (bot/services/broadcasts.py reads them)")
        return checker.report.problems
    try:
        words = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("words")
    except (yaml.YAMLError, AttributeError) as exc:
        checker.problem(path, None, f"cannot read the broadcast words ({type(exc).__name__})")
        return checker.report.problems
    for lang in sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        listed = words.get(lang) if isinstance(words, dict) else None
        if not isinstance(listed, list) or not listed or not all(isinstance(w, str) and w.strip() for w in listed):
            checker.problem(path, None, f"words.{lang}: a list of words (non-empty texts) is needed for every language")
    return checker.report.problems


TEMPLATE_LABEL_MAX = 48  # a button


def broadcast_template_problems(root: Path = CONTENT_DIR) -> list[Problem]:
    """The /broadcast templates (``broadcast.templates.<name>``): the same names in every
    language, each with a short ``label`` and a ``text``, and no word of broadcast_words.yaml
    (of any language) in either: a template is sent as it is, read over clients' shoulders."""
    from bot.services.broadcasts import clinical_words, load_words  # the preview's own matching

    checker, loader = _Checker(root), _loader(root)
    words_path = root / BROADCAST_WORDS_FILE
    try:
        words = load_words(words_path) if words_path.is_file() else {}
    except (yaml.YAMLError, AttributeError, TypeError):
        words = {}  # reported by broadcast_word_problems
    names_in: dict[str, list[str]] = {}
    for lang in sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = loader.load_language(lang)
        table = files.get("broadcast")
        where = table.path if table else root / lang
        data = table.data.get("broadcast", {}) if table else {}
        templates = data.get("templates") if isinstance(data, dict) else None
        if not isinstance(templates, dict) or not templates:
            checker.problem(where, None, "broadcast.templates: the ready-made texts of /broadcast are missing")
            continue
        names_in[lang] = list(templates)
        for name, template in templates.items():
            line = table.line(("broadcast", "templates", name)) if table else None
            if not isinstance(template, dict) or not all(
                isinstance(value, str) and value.strip() for value in (template.get("label"), template.get("text"))
            ):
                checker.problem(where, line, f"broadcast.templates.{name}: needs a label and a text")
                continue
            if len(template["label"]) > TEMPLATE_LABEL_MAX:
                checker.problem(where, line, f"broadcast.templates.{name}.label: at most {TEMPLATE_LABEL_MAX} characters (a button)")
            for part in ("label", "text"):
                found = clinical_words(template[part], words)
                if found:
                    checker.problem(where, line, f"broadcast.templates.{name}.{part}: words that could reveal a "
                                                 f"diagnosis or treatment ({', '.join(found)}; {BROADCAST_WORDS_FILE})")
    reference = names_in.get(REFERENCE_LANGUAGE)
    for lang, names in names_in.items():
        if reference is not None and sorted(names) != sorted(reference):
            checker.problem(root / lang, None, f"broadcast.templates: {lang} has {sorted(names)}, "
                                               f"{REFERENCE_LANGUAGE} has {sorted(reference)}: the same in every language")
    return checker.report.problems


EXTRA_CHECKS = (
    command_problems, reminder_word_problems, crisis_coverage_problems, feature_problems, readiness_problems,
    broadcast_word_problems, broadcast_template_problems,
)
