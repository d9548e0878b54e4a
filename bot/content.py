"""Every word the bot says lives in ``content/<language>/*.yaml``; this module reads it.

Texts are addressed by dotted keys (``"start.welcome"``). A text missing in a person's
language falls back to English, the reference language, which must be complete. Values
filled into ``{placeholders}`` are HTML-escaped, because messages use Telegram HTML.

The psychoeducation modules of ``/learn`` are Markdown files with YAML front matter,
``content/<language>/learn/<id>.md``, their pages separated by a line ``---page---`` (see
content/README.md); a module missing in a language falls back to its English version.
"""

from __future__ import annotations

import hashlib
import html
import re
import string
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# libyaml's parser when PyYAML was built with it (the wheels are): the same documents, about
# twenty times faster, which every start of the bot (and every test that starts one) pays.
SAFE_LOADER: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def safe_load(text: str) -> Any:
    """``yaml.safe_load`` with libyaml's parser where there is one."""
    return yaml.load(text, Loader=SAFE_LOADER)  # noqa: S506 - a safe loader  # nosec B506


def compose(text: str) -> yaml.Node | None:
    """``yaml.compose`` (the node tree, with line marks) with libyaml's safe parser."""
    return yaml.compose(text, Loader=SAFE_LOADER)



REFERENCE_LANGUAGE = "en"
CONTENT_DIR = Path(__file__).resolve().parent.parent / "content"


class ContentError(Exception):
    """The content folder is malformed or a text is missing (a bug, caught by tests)."""


@dataclass(frozen=True)
class Command:
    command: str
    description: str


@dataclass(frozen=True)
class Source:
    """A reference in a learn module's front matter (``sources:``)."""

    authors: str
    year: int
    title: str
    published_in: str  # the journal, or the publisher of a book (``in:`` in the front matter)
    url: str | None = None

    def citation(self) -> str:
        """The reference as one line of Telegram HTML."""
        text = f"{self.authors} ({self.year}). {self.title}. {self.published_in}."
        if self.url:
            return f'{html.escape(text, quote=False)} <a href="{html.escape(self.url)}">link</a>'
        return html.escape(text, quote=False)


@dataclass(frozen=True)
class Module:
    """A psychoeducation module: chat-sized pages of Telegram HTML, in one language."""

    id: str
    language: str
    title: str  # plain text, escaped when shown
    order: int
    summary: str  # plain text, escaped when shown
    pages: tuple[str, ...]
    sources: tuple[Source, ...] = ()


class Content:
    def __init__(self, root: Path = CONTENT_DIR, *, default_language: str = REFERENCE_LANGUAGE):
        self.root = root
        self._tables, self._modules = _parsed(root)
        self.default_language = self.resolve_language(default_language)

    # -- languages ----------------------------------------------------------------------------

    @property
    def languages(self) -> list[str]:
        return list(self._tables)

    def resolve_language(self, code: str | None) -> str:
        """Map a Telegram ``language_code`` such as ``"nl-BE"`` to a language we have."""
        if code:
            base = code.split("-")[0].split("_")[0].lower()
            if base in self._tables:
                return base
        return getattr(self, "default_language", REFERENCE_LANGUAGE)

    # -- lookups ------------------------------------------------------------------------------

    def raw(self, key: str, lang: str | None = None) -> Any:
        """The value at ``key`` in ``lang``, falling back to the reference language."""
        for candidate in (self.resolve_language(lang), REFERENCE_LANGUAGE):
            found = _lookup(self._tables[candidate], key)
            if found is not None:
                return found
        raise ContentError(f"content key {key!r} is missing (also in {REFERENCE_LANGUAGE}/)")

    def text(self, key: str, lang: str | None = None, /, **params: Any) -> str:
        """A message text with its ``{placeholders}`` filled in (string values HTML-escaped)."""
        template = self.raw(key, lang)
        if not isinstance(template, str):
            raise ContentError(f"content key {key!r} is not a text")
        if not params:
            return template
        safe = {k: _escape(v) for k, v in params.items()}
        try:
            return template.format_map(safe)
        except (KeyError, IndexError, ValueError) as exc:
            raise ContentError(f"content key {key!r}: placeholder problem ({exc!r})") from None

    def texts(self, key: str, lang: str | None = None) -> list[str]:
        value = self.raw(key, lang)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ContentError(f"content key {key!r} is not a list of texts")
        return value

    def commands(self, menu: str, lang: str | None = None) -> list[Command]:
        """The command menu for a role (or ``"everyone"``), in the order written."""
        table = self.raw(f"commands.{menu}", lang)
        return [Command(str(name), str(desc)) for name, desc in table.items()]

    # -- learn modules ------------------------------------------------------------------------

    def modules(self, lang: str | None = None) -> list[Module]:
        """Every module in English order, each in ``lang`` where translated, else in English."""
        local = self._modules[self.resolve_language(lang)]
        reference = self._modules[REFERENCE_LANGUAGE]
        ordered = sorted(reference.values(), key=lambda m: (m.order, m.id))
        return [local.get(module.id, module) for module in ordered]

    def module(self, module_id: str, lang: str | None = None) -> Module:
        for candidate in (self.resolve_language(lang), REFERENCE_LANGUAGE):
            found = self._modules[candidate].get(module_id)
            if found is not None:
                return found
        raise ContentError(f"learn module {module_id!r} does not exist")

    # -- for checks ---------------------------------------------------------------------------

    def keys(self, lang: str = REFERENCE_LANGUAGE) -> set[str]:
        return set(_flatten(self._tables[lang]))

    def placeholders(self, key: str, lang: str) -> set[str]:
        value = _lookup(self._tables[lang], key)
        if not isinstance(value, str):
            return set()
        return {field for _, field, _, _ in string.Formatter().parse(value) if field}


class _Escaped(str):
    """A value already made safe for Telegram HTML."""


def _escape(value: Any) -> Any:
    if isinstance(value, _Escaped) or not isinstance(value, str):
        return value
    return html.escape(value, quote=False)


def trusted_html(fragment: str) -> str:
    """Mark a fragment (for example another content text) as HTML that must not be escaped."""
    return _Escaped(fragment)


Tables = dict[str, dict[str, Any]]
Modules = dict[str, dict[str, Module]]

#: Parsed content folders, most recently used last, keyed by folder and by a digest of every
#: file's name and bytes: a second Content of an unchanged folder in the same process (a
#: restart of the bot inside one process, as the tests do hundreds of times) reuses the parse
#: (parsing is what costs, ~50 ms; reading the files for the digest ~1 ms); an edited, added
#: or removed file is parsed afresh. The parsed values are shared between those Content
#: objects, as they already are between every handler of one bot: nothing writes them.
_PARSED: dict[tuple[Path, bytes], tuple[Tables, Modules]] = {}
_PARSED_KEPT = 4


def _parsed(root: Path) -> tuple[Tables, Modules]:
    digest = hashlib.blake2b(digest_size=32)
    for path in sorted(path for path in root.rglob("*") if path.is_file()):
        name = str(path.relative_to(root)).encode("utf-8", "surrogateescape")
        data = path.read_bytes()
        digest.update(b"%d:%s%d:" % (len(name), name, len(data)))
        digest.update(data)
    key = (root.resolve(), digest.digest())
    found = _PARSED.pop(key, None)
    if found is None:
        tables: Tables = {}
        for lang_dir in sorted(p for p in root.iterdir() if p.is_dir()):
            tables[lang_dir.name] = _load_language(lang_dir)
        if REFERENCE_LANGUAGE not in tables:
            raise ContentError(f"{root} has no {REFERENCE_LANGUAGE}/ folder (the reference language)")
        found = tables, {lang: _load_modules(root / lang / LEARN_DIR, lang) for lang in tables}
    _PARSED[key] = found  # the most recently used last
    while len(_PARSED) > _PARSED_KEPT:
        del _PARSED[next(iter(_PARSED))]
    return found


def _load_language(lang_dir: Path) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for path in sorted(lang_dir.glob("*.yaml")):
        try:
            data = safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ContentError(f"{path}: not valid YAML ({exc})") from None
        if not isinstance(data, dict):
            raise ContentError(f"{path}: the top level must be a mapping of keys")
        for top, value in data.items():
            if top in merged:
                raise ContentError(f"{path}: top-level key {top!r} is also defined in another file")
            merged[top] = value
    return merged


# -- learn modules: Markdown files with YAML front matter -----------------------------------------

LEARN_DIR = "learn"
PAGE_BREAK = "---page---"
MODULE_FIELDS = {"id", "title", "order", "summary", "sources"}
SOURCE_FIELDS = {"authors", "year", "title", "in", "url"}
_MODULE_ID = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


def split_module(text: str) -> tuple[str, list[tuple[str, int]]]:
    """Split a module file into its front matter and its pages, each with its first line number.

    The file starts with a line ``---``, the YAML front matter, a line ``---``; then the pages,
    separated by lines ``---page---``. Blank lines around a page are dropped; an empty page is
    returned as ``""`` (``parse_module`` refuses it, the checker reports it).
    """
    lines = [line.rstrip() for line in text.splitlines()]
    if not lines or lines[0] != "---":
        raise ContentError("line 1: a learn module starts with a line '---' and its front matter")
    end = next((i for i in range(1, len(lines)) if lines[i] == "---"), None)
    if end is None:
        raise ContentError("line 1: the front matter is not closed by a line '---'")
    front_matter = "\n".join(lines[1:end])
    pages: list[tuple[str, int]] = []
    chunk: list[str] = []
    first = end + 1  # 0-based index of the chunk's first line
    for index in range(end + 1, len(lines) + 1):
        if index < len(lines) and lines[index].strip() != PAGE_BREAK:
            chunk.append(lines[index])
            continue
        lead = next((k for k, line in enumerate(chunk) if line.strip()), len(chunk))
        pages.append(("\n".join(chunk).strip("\n").strip(), first + lead + 1))
        chunk, first = [], index + 1
    return front_matter, pages


def module_problems(meta: Any, file_stem: str) -> list[str]:
    """What is wrong with a module's front matter (empty when it is well formed)."""
    if not isinstance(meta, dict):
        return ["the front matter must be a mapping of fields (id, title, order, summary, sources)"]
    problems = [f"unknown front-matter field {key!r}" for key in meta if key not in MODULE_FIELDS]
    for field in ("id", "title", "order", "summary"):
        if field not in meta:
            problems.append(f"the front matter has no {field!r}")
    module_id = meta.get("id")
    if "id" in meta and not (isinstance(module_id, str) and _MODULE_ID.fullmatch(module_id)):
        problems.append("'id' must be lower-case words joined by '-', e.g. what-is-imrs")
    elif isinstance(module_id, str) and module_id != file_stem:
        problems.append(f"'id' is {module_id!r} but the file is called {file_stem}.md")
    for field, limit in (("title", 60), ("summary", 200)):
        value = meta.get(field)
        if field in meta and not (isinstance(value, str) and value.strip()):
            problems.append(f"{field!r} must be a text")
        elif isinstance(value, str) and len(value) > limit:
            problems.append(f"{field!r} is longer than {limit} characters")
        elif isinstance(value, str) and re.search(r"[<>{}]", value):
            problems.append(f"{field!r} is plain text: no tags or {{braces}} (write & < > as they are)")
    order = meta.get("order")
    if "order" in meta and (not isinstance(order, int) or isinstance(order, bool) or order < 1):
        problems.append("'order' must be a whole number from 1")
    sources = meta.get("sources", [])
    if not isinstance(sources, list):
        return [*problems, "'sources' must be a list of references"]
    for number, source in enumerate(sources, 1):
        problems.extend(f"source {number}: {problem}" for problem in source_problems(source))
    return problems


def source_problems(source: Any) -> list[str]:
    """What is wrong with one reference (authors, year, title, in, optional url)."""
    if not isinstance(source, dict):
        return ["a reference is a mapping with authors, year, title and in"]
    problems = [f"unknown field {key!r}" for key in source if key not in SOURCE_FIELDS]
    for field in ("authors", "title", "in"):
        value = source.get(field)
        if not (isinstance(value, str) and value.strip()):
            problems.append(f"{field!r} must be a text")
        elif re.search(r"[<>{}]", value):
            problems.append(f"{field!r} is plain text: no tags or {{braces}}")
    year = source.get("year")
    if not isinstance(year, int) or isinstance(year, bool) or not 1800 <= year <= 2100:
        problems.append("'year' must be a year such as 2012")
    url = source.get("url")
    if url is not None and not (isinstance(url, str) and re.fullmatch(r"https?://[^\s/.]+(\.[^\s/.]+)+(/\S*)?", url)):
        problems.append("'url' must be a complete http(s) address")
    return problems


def parse_module(path: Path, language: str) -> Module:
    """Read one module file, refusing malformed ones (``imrs-bot content check`` says more)."""
    try:
        front_matter, pages = split_module(path.read_text(encoding="utf-8"))
        meta = safe_load(front_matter)
    except (ContentError, yaml.YAMLError) as exc:
        raise ContentError(f"{path}: {exc}") from None
    problems = module_problems(meta, path.stem)
    if not problems and not all(text for text, _ in pages):
        problems = ["a page is empty"]
    if problems:
        raise ContentError(f"{path}: {problems[0]}")
    sources = tuple(
        Source(s["authors"], s["year"], s["title"], s["in"], s.get("url")) for s in meta.get("sources", [])
    )
    return Module(meta["id"], language, meta["title"], meta["order"], meta["summary"],
                  tuple(text for text, _ in pages), sources)


def _load_modules(folder: Path, language: str) -> dict[str, Module]:
    if not folder.is_dir():
        return {}
    modules = (parse_module(path, language) for path in sorted(folder.glob("*.md")))
    return {module.id: module for module in modules}


def _lookup(table: Mapping[str, Any], key: str) -> Any:
    node: Any = table
    for part in key.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        else:
            return None
    return node


def _flatten(node: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(node, Mapping):
        for k, v in node.items():
            yield from _flatten(v, f"{prefix}{k}.")
    else:
        yield prefix.rstrip(".")
