"""Every word the bot says lives in ``content/<language>/*.yaml``; this module reads it.

Texts are addressed by dotted keys (``"start.welcome"``). A text missing in a person's
language falls back to English, the reference language, which must be complete. Values
filled into ``{placeholders}`` are HTML-escaped, because messages use Telegram HTML.
"""

from __future__ import annotations

import html
import string
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REFERENCE_LANGUAGE = "en"
CONTENT_DIR = Path(__file__).resolve().parent.parent / "content"


class ContentError(Exception):
    """The content folder is malformed or a text is missing (a bug, caught by tests)."""


@dataclass(frozen=True)
class Command:
    command: str
    description: str


class Content:
    def __init__(self, root: Path = CONTENT_DIR, *, default_language: str = REFERENCE_LANGUAGE):
        self.root = root
        self._tables: dict[str, dict[str, Any]] = {}
        for lang_dir in sorted(p for p in root.iterdir() if p.is_dir()):
            self._tables[lang_dir.name] = _load_language(lang_dir)
        if REFERENCE_LANGUAGE not in self._tables:
            raise ContentError(f"{root} has no {REFERENCE_LANGUAGE}/ folder (the reference language)")
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


def _load_language(lang_dir: Path) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for path in sorted(lang_dir.glob("*.yaml")):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ContentError(f"{path}: not valid YAML ({exc})") from None
        if not isinstance(data, dict):
            raise ContentError(f"{path}: the top level must be a mapping of keys")
        for top, value in data.items():
            if top in merged:
                raise ContentError(f"{path}: top-level key {top!r} is also defined in another file")
            merged[top] = value
    return merged


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
