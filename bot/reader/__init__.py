"""The therapist's reader: one self-contained HTML page, opened offline in a browser, that makes
an age key pair (the private key saved as a file, the public key and its fingerprint shown for
/setkey) and opens the age-encrypted readiness summaries, in the browser only.

``reader.html`` beside this file is built by ``make reader`` from ``reader/`` (the
``age-encryption`` package bundled with esbuild; licences in ``NOTICE``) and checked in, so
nobody needs Node. Its words are placeholders, filled here from ``reader.page.*`` and
``reader.errors.*`` in content/<language>/reader.yaml. The page holds no personal data.
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path

from bot.content import Content

PAGE = Path(__file__).with_name("reader.html")
FILE_NAME = "imrs-reader.html"
_SECTIONS = ("reader.page", "reader.errors")


def _flatten(node: object, prefix: str) -> list[str]:
    if isinstance(node, dict):
        return [key for name, value in node.items() for key in _flatten(value, f"{prefix}.{name}")]
    return [prefix]


def page_texts(content: Content, language: str) -> dict[str, str]:
    """Every text of the page, named as the page's script names them (``create.title``,
    ``errors.not_age``, ...); a text missing in ``language`` is the English one."""
    texts: dict[str, str] = {}
    for section in _SECTIONS:
        for key in _flatten(content.raw(section, "en"), section):
            name = key.removeprefix("reader.page.").removeprefix("reader.")
            texts[name] = content.text(key, language)  # no params: the {placeholders} stay
    return texts


def reader_page(content: Content, language: str | None = None) -> bytes:
    """The page in ``language`` (the reference language when not given), as UTF-8 bytes."""
    lang = content.resolve_language(language)
    texts = page_texts(content, lang)
    # Inside <script type="application/json">: no "<" may close the element early.
    blob = json.dumps(texts, ensure_ascii=False).replace("<", "\\u003c")
    page = (
        PAGE.read_text(encoding="utf-8")
        .replace("__IMRS_LANG__", escape(lang), 1)
        .replace("__IMRS_TITLE__", escape(texts["title"]), 1)
        .replace("__IMRS_TEXTS__", blob, 1)
    )
    return page.encode("utf-8")
