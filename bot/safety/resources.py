"""Crisis resources as data: emergency numbers and crisis lines per country, and the words that
show them to one person (their country from their time zone, their language).

The lines live in ``content/crisis_lines.yaml`` (see the comments there); a clinic may add or
replace countries with a file of the same shape named by the setting ``CRISIS_LINES_FILE``
(each country in it replaces the built-in entry for that country). Both are validated when the
bot starts: a malformed entry stops it with one line naming the file, the country and the
field (``CrisisLinesError``, an ``OperatorError``).

A person's country comes from their IANA time zone through the tz database's own table
``zone.tab`` (zone -> ISO 3166 country code), read from the ``tzdata`` package; zone names
that are links (``US/Eastern``, ``Europe/Kiev``) are followed through ``tzdata.zi``.
``zoneinfo`` itself has no such table. A zone without a country (``UTC``), or a country
without an entry, gets the tested default: the local emergency services and an international
directory of helplines (content key ``crisis.short``).

Words come from content (``crisis.*`` in ``bot.yaml``); the numbers never do.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import date
from importlib import resources as importlib_resources
from pathlib import Path
from typing import Any

import yaml

from bot.content import CONTENT_DIR, Content, compose, safe_load, trusted_html
from bot.errors import ConfigError

CRISIS_LINES_FILE = CONTENT_DIR / "crisis_lines.yaml"
DEFAULT_KEY = "crisis.short"  # the default: local emergency services and a directory

_COUNTRY = re.compile(r"[A-Z]{2}")
_NUMBER = re.compile(r"\+?[0-9][0-9 \-]{1,19}")  # "112", "0800-0113", "0477 13 11 14"
_LANGUAGE = re.compile(r"[a-z]{2,3}")
_URL = re.compile(r"https://[^\s/.]+(\.[^\s/.]+)+(/\S*)?")
COUNTRY_FIELDS = {"name", "emergency", "lines", "source", "checked"}
LINE_FIELDS = {"name", "languages", "phone", "text", "web"}


class CrisisLinesError(ConfigError):
    """The crisis-lines file is missing or malformed; the message names file, country, field."""


@dataclass(frozen=True)
class CrisisLine:
    name: str
    languages: tuple[str, ...]
    phones: tuple[str, ...] = ()
    text: str | None = None  # a number that takes text messages (SMS)
    web: str | None = None  # https address (chat, or more about the line)


@dataclass(frozen=True)
class CountryResources:
    code: str  # ISO 3166-1 alpha-2, e.g. "BE"
    name: str
    emergency: tuple[str, ...]  # empty: not verified, the default wording is shown
    lines: tuple[CrisisLine, ...]
    source: tuple[str, ...]
    checked: date

    @property
    def verified(self) -> bool:
        return bool(self.emergency)

    def lines_for(self, language: str) -> tuple[CrisisLine, ...]:
        """The lines answering in ``language``; when none does, all of them."""
        own = tuple(line for line in self.lines if language in line.languages)
        return own or self.lines


# -- reading and validating ---------------------------------------------------------------------


def load_crisis_lines(path: Path = CRISIS_LINES_FILE, override: Path | None = None) -> CrisisResources:
    """The built-in file, with the clinic's ``override`` file (if any) on top; both checked."""
    countries = parse_file(path)
    if override is not None:
        countries.update(parse_file(Path(override)))
    return CrisisResources(countries)


def parse_file(path: Path) -> dict[str, CountryResources]:
    """Every country of one crisis-lines file, or ``CrisisLinesError`` for the first problem."""
    try:
        raw = path.read_text(encoding="utf-8")
        duplicate = _first_duplicate(compose(raw))
        data = safe_load(raw)
    except OSError:
        raise CrisisLinesError(f"{path}: cannot read the crisis-lines file (see CRISIS_LINES_FILE in README.md)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise CrisisLinesError(f"{path}: not valid YAML{where}") from None
    if duplicate is not None:
        (top, *rest), line = duplicate
        if top == "countries" and len(rest) == 1:
            raise CrisisLinesError(f"{path}: country {rest[0]} is written twice (line {line})")
        if top == "countries" and len(rest) >= 2:
            field = "".join(f".{p}" if not p.startswith("[") else p for p in rest[1:]).lstrip(".")
            raise CrisisLinesError(f"{path}: country {rest[0]}, {field}: written twice (line {line})")
        raise CrisisLinesError(f"{path}: {'.'.join([top, *rest])} is written twice (line {line})")
    countries = data.get("countries") if isinstance(data, dict) else None
    if not isinstance(countries, dict):
        raise CrisisLinesError(f"{path}: needs 'countries:', a mapping of country codes to entries")
    parsed: dict[str, CountryResources] = {}
    for code, entry in countries.items():
        problem = None
        try:
            parsed[str(code)] = _country(str(code), entry)
        except _Bad as bad:
            problem = bad
        if problem is not None:
            field = f", {problem.field}" if problem.field else ""
            raise CrisisLinesError(f"{path}: country {code}{field}: {problem.message}")
    return parsed


def _first_duplicate(node: yaml.Node | None, path: tuple[str, ...] = ()) -> tuple[tuple[str, ...], int] | None:
    """(path, line) of the first key written twice: YAML keeps the last one silently, so a
    second "BE:" would replace the first without a word."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(getattr(key_node, "value", ""))
            if key in seen:
                return (*path, key), key_node.start_mark.line + 1
            seen.add(key)
            found = _first_duplicate(value_node, (*path, key))
            if found:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value, 1):
            found = _first_duplicate(item, (*path, f"[{index}]"))
            if found:
                return found
    return None


class _Bad(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field, self.message = field, message


def _country(code: str, entry: Any) -> CountryResources:
    if not _COUNTRY.fullmatch(code):
        raise _Bad("", "the key must be a two-letter ISO 3166 country code in capitals, e.g. BE")
    if not isinstance(entry, dict):
        raise _Bad("", "must be a mapping with name, emergency, lines, source and checked")
    unknown = sorted(set(map(str, entry)) - COUNTRY_FIELDS)
    if unknown:
        raise _Bad(unknown[0], f"unknown field (expected {', '.join(sorted(COUNTRY_FIELDS))})")
    name = _text(entry, "name")
    emergency = _numbers(entry.get("emergency"), "emergency", required=False)
    lines_raw = entry.get("lines", [])
    if lines_raw is None:
        lines_raw = []
    if not isinstance(lines_raw, list):
        raise _Bad("lines", "must be a list of crisis lines (or [] when none is verified)")
    lines = tuple(_line(item, n) for n, item in enumerate(lines_raw, 1))
    if lines and not emergency:
        raise _Bad("emergency", "is missing: a country with crisis lines needs its emergency number")
    source = entry.get("source")
    sources = (source,) if isinstance(source, str) else source
    if not (isinstance(sources, (list, tuple)) and sources and all(isinstance(s, str) and s.strip() for s in sources)):
        raise _Bad("source", "must say where the numbers were verified (a text, or a list of texts)")
    checked = entry.get("checked")
    if isinstance(checked, str):
        try:
            checked = date.fromisoformat(checked)
        except ValueError:
            checked = None
    if not isinstance(checked, date):
        raise _Bad("checked", "must be the date the numbers were checked, e.g. 2026-12-02")
    return CountryResources(code, name, emergency, lines, tuple(s.strip() for s in sources), checked)


def _line(item: Any, number: int) -> CrisisLine:
    where = f"lines[{number}]"
    if not isinstance(item, dict):
        raise _Bad(where, "must be a mapping with name, languages and phone, text or web")
    unknown = sorted(set(map(str, item)) - LINE_FIELDS)
    if unknown:
        raise _Bad(f"{where}.{unknown[0]}", f"unknown field (expected {', '.join(sorted(LINE_FIELDS))})")
    name = _text(item, "name", where)
    languages = item.get("languages")
    if not (isinstance(languages, list) and languages and all(isinstance(x, str) and _LANGUAGE.fullmatch(x) for x in languages)):
        raise _Bad(f"{where}.languages", "must be a list of language codes, e.g. [nl] or [en, es]")
    phones = _numbers(item.get("phone"), f"{where}.phone", required=False)
    text = _numbers(item.get("text"), f"{where}.text", required=False)
    if len(text) > 1:
        raise _Bad(f"{where}.text", "one text-message number only")
    web = item.get("web")
    if web is not None and not (isinstance(web, str) and _URL.fullmatch(web)):
        raise _Bad(f"{where}.web", "must be a complete https:// address")
    if not (phones or text or web):
        raise _Bad(where, "needs at least one of phone, text or web")
    return CrisisLine(name, tuple(languages), phones, text[0] if text else None, web)


def _text(table: dict, field: str, where: str = "") -> str:
    value = table.get(field)
    if not (isinstance(value, str) and value.strip()) or re.search(r"[<>{}]", value or ""):
        raise _Bad(f"{where}.{field}" if where else field, "must be plain text (no tags or braces)")
    return value.strip()


def _numbers(value: Any, field: str, *, required: bool) -> tuple[str, ...]:
    """A phone number written as text ("112"), or a list of them; YAML numbers are refused
    because YAML drops leading zeros (000, 0800...)."""
    if value is None or value == []:
        if required:
            raise _Bad(field, "is missing")
        return ()
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) and _NUMBER.fullmatch(v.strip()) for v in values):
        raise _Bad(field, "must be a phone number in quotes, e.g. \"112\", or a list of them")
    return tuple(v.strip() for v in values)


# -- time zone -> country ---------------------------------------------------------------------------


@functools.cache
def _zone_table() -> tuple[dict[str, str], dict[str, str]]:
    """(zone -> country code from zone.tab, link name -> target zone from tzdata.zi)."""
    base = importlib_resources.files("tzdata").joinpath("zoneinfo")
    countries: dict[str, str] = {}
    for line in base.joinpath("zone.tab").read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            parts = line.split("\t")
            if len(parts) >= 3:
                countries[parts[2]] = parts[0]
    links: dict[str, str] = {}
    for line in base.joinpath("tzdata.zi").read_text(encoding="utf-8").splitlines():
        if line.startswith("L "):
            _, target, link = line.split()[:3]
            links[link] = target
    return countries, links


def country_of_zone(zone: str | None) -> str | None:
    """The ISO country code of an IANA zone ("Europe/Brussels" -> "BE"), or None (UTC, unknown)."""
    if not zone:
        return None
    countries, links = _zone_table()
    seen = 0
    while zone not in countries and zone in links and seen < 5:  # a link to a link, at most
        zone, seen = links[zone], seen + 1
    return countries.get(zone)


# -- the resources a person sees ------------------------------------------------------------------


class CrisisResources:
    """Every country's resources; ``render`` gives the paragraph one person sees."""

    def __init__(self, countries: dict[str, CountryResources]) -> None:
        self._countries = dict(countries)

    @property
    def countries(self) -> dict[str, CountryResources]:
        return dict(self._countries)

    def for_zone(self, zone: str | None) -> CountryResources | None:
        code = country_of_zone(zone)
        return self._countries.get(code) if code else None

    def render(self, content: Content, language: str, zone: str | None) -> str:
        """Telegram HTML: the emergency number and crisis lines of the zone's country in
        ``language``'s words; the default (``crisis.short``) when the country is unknown or
        its numbers are not verified."""
        country = self.for_zone(zone)
        if country is None or not country.verified:
            return content.text(DEFAULT_KEY, language)
        emergency = content.text("crisis.or", language).join(f"<b>{n}</b>" for n in country.emergency)
        lines = country.lines_for(language)
        if not lines:
            return content.text("crisis.emergency_only", language, emergency=_html(emergency))
        rendered = "\n".join(_html(self._line(content, language, line)) for line in lines)
        return content.text("crisis.local", language, emergency=_html(emergency), lines=_html(rendered))

    @staticmethod
    def _line(content: Content, language: str, line: CrisisLine) -> str:
        ways: list[str] = []
        if line.phones:
            phones = content.text("crisis.or", language).join(f"<b>{p}</b>" for p in line.phones)
            ways.append(content.text("crisis.call", language, phones=_html(phones)))
        if line.text:
            ways.append(content.text("crisis.text", language, number=_html(f"<b>{line.text}</b>")))
        if line.web:
            site = re.sub(r"^https://(www\.)?", "", line.web).rstrip("/")
            ways.append(content.text("crisis.web", language, url=line.web, site=site))
        return content.text("crisis.line", language, name=line.name,
                            ways=_html(content.text("crisis.separator", language).join(ways)))


def _html(fragment: str) -> str:
    """A fragment built here from checked data and content: HTML, not to be escaped again."""
    return trusted_html(fragment)
