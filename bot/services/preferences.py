"""A person's language and time zone.

Time zones are IANA names, validated with ``zoneinfo``. People rarely know those names, so
``resolve_zone`` also understands a typed city ("amsterdam" -> Europe/Amsterdam,
"new york" -> America/New_York) by matching the last part of every available zone name,
and says when a name is ambiguous. Each language has a short list of likely zones in
content (``account.timezone.suggestions``) for buttons.

Other features read a person's zone from ``Identity.timezone`` (or ``Person.timezone``) and
make zone-aware datetimes with ``zone_of(name)``. A person's reminders follow their zone:
changing it plans them anew, in the same transaction.
"""

from __future__ import annotations

import functools
import re
import unicodedata
import zoneinfo
from dataclasses import dataclass, replace
from datetime import datetime, tzinfo

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.content import Content
from bot.db.models import Role
from bot.db.repositories import AuditRepository, PeopleRepository
from bot.db.types import utcnow
from bot.delivery.schedules import ScheduleService
from bot.services.broadcasts import skip_pending_for
from bot.services.people import Identity

#: Most choices offered for an ambiguous name; beyond that, the person types more.
MAX_CHOICES = 6
#: Zone names are ASCII letters, digits and ``/_+-``; anything typed is normalised to this.
_TYPED = re.compile(r"[^a-z0-9/+\-]+")
#: Old aliases that are not places people type (kept valid when typed in full).
_NOT_A_PLACE = ("Etc/", "SystemV/", "posix/", "right/")


@dataclass(frozen=True)
class ZoneSuggestion:
    zone: str
    label: str


@dataclass(frozen=True)
class ZoneLookup:
    """What a typed text is: exactly one ``zone``, several ``choices``, or neither."""

    zone: str | None = None
    choices: tuple[str, ...] = ()

    @property
    def found(self) -> bool:
        return self.zone is not None


def is_valid_zone(name: str) -> bool:
    """An IANA zone name that ``zoneinfo`` can load (exactly as spelt)."""
    if not name or name != name.strip() or name.startswith(("/", ".")) or ".." in name:
        return False
    return name in _available()


def zone_of(name: str) -> tzinfo:
    """The ``tzinfo`` of a stored zone name (``ZoneInfo``)."""
    return zoneinfo.ZoneInfo(name)


def local_now(name: str) -> datetime:
    """The current time in zone ``name`` (aware)."""
    return datetime.now(zone_of(name))


@functools.cache
def _available() -> frozenset[str]:
    return frozenset(z for z in zoneinfo.available_timezones() if not z.startswith(("posix/", "right/")))


def _normalise(text: str) -> str:
    """Lower case ASCII, words joined by ``_`` as in zone names ("São Paulo" -> "sao_paulo")."""
    decomposed = unicodedata.normalize("NFKD", text)
    ascii_text = decomposed.encode("ascii", "ignore").decode("ascii").lower().strip()
    ascii_text = re.sub(r"\s*/\s*", "/", ascii_text)
    return _TYPED.sub("_", ascii_text).strip("_")


@functools.cache
def _index() -> tuple[dict[str, str], dict[str, tuple[str, ...]]]:
    """(full name -> zone, last part -> zones), both keyed by the normalised spelling."""
    full: dict[str, str] = {}
    places: dict[str, list[str]] = {}
    for zone in sorted(_available()):
        full[_normalise(zone)] = zone
        if "/" in zone and not zone.startswith(_NOT_A_PLACE):
            places.setdefault(_normalise(zone.rsplit("/", 1)[1]), []).append(zone)
    return full, {place: tuple(zones) for place, zones in places.items()}


def resolve_zone(text: str) -> ZoneLookup:
    """A typed zone name or city: exact IANA names first (any case), then city names, then
    cities starting with what was typed (at least three letters)."""
    typed = _normalise(text[:100])
    if not typed:
        return ZoneLookup()
    full, places = _index()
    if typed in full:
        return ZoneLookup(zone=full[typed])
    found = places.get(typed, ())
    if not found and len(typed) >= 3:
        found = tuple(z for place, zones in sorted(places.items()) if place.startswith(typed) for z in zones)
    found = _without_duplicates(found)
    if len(found) == 1:
        return ZoneLookup(zone=found[0])
    return ZoneLookup(choices=found[:MAX_CHOICES]) if found else ZoneLookup()


def _without_duplicates(zones: tuple[str, ...]) -> tuple[str, ...]:
    """Links to the same rules under another name (America/Indianapolis and
    America/Indiana/Indianapolis) are one choice: keep the longer, current name."""
    kept: dict[tuple[str, tuple[object, ...]], str] = {}
    for zone in zones:
        key = (zone.rsplit("/", 1)[-1], _fingerprint(zone))
        if key not in kept or zone.count("/") > kept[key].count("/"):
            kept[key] = zone
    return tuple(kept.values())


def _fingerprint(zone: str) -> tuple[object, ...]:
    """The UTC offsets of a zone on a few dates around now: equal for aliases of one zone."""
    year = datetime.now().year
    tz = zone_of(zone)
    return tuple(
        datetime(y, m, 1, 12, tzinfo=tz).utcoffset() for y in (year - 1, year) for m in (1, 4, 7, 10)
    )


class UnknownLanguage(Exception):
    """Not a language the bot has content in."""


class UnknownZone(Exception):
    """Not an IANA time zone name (exactly as spelt)."""


class PreferencesService:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], content: Content, schedules: ScheduleService
    ) -> None:
        self._sessions = sessions
        self._content = content
        self._schedules = schedules

    # -- what can be chosen -------------------------------------------------------------------

    def languages(self) -> list[tuple[str, str]]:
        """(code, name in that language) of every language we have, reference first."""
        return [(code, self._content.text("meta.language_name", code)) for code in self._content.languages]

    def language_name(self, code: str) -> str:
        return self._content.text("meta.language_name", code)

    def suggested_zones(self, language: str) -> list[ZoneSuggestion]:
        """The short list of zones for people writing in ``language`` (valid ones only)."""
        entries = self._content.raw("account.timezone.suggestions", language)
        return [
            ZoneSuggestion(str(entry["zone"]), str(entry["label"]))
            for entry in entries
            if is_valid_zone(str(entry["zone"]))
        ]

    @staticmethod
    def resolve_zone(text: str) -> ZoneLookup:
        return resolve_zone(text)

    # -- changes ------------------------------------------------------------------------------

    async def set_language(self, identity: Identity, language: str) -> Identity:
        """Raises :class:`UnknownLanguage` for a language we do not have."""
        if language not in self._content.languages:
            raise UnknownLanguage()
        async with self._sessions.begin() as session:
            await self._update(session, identity, language=language)
        return replace(identity, language=language)

    async def set_timezone(self, identity: Identity, zone: str) -> Identity:
        """Store the zone and plan the person's reminders in it, in one transaction. Raises
        :class:`UnknownZone` for a name that is not an IANA zone."""
        if not is_valid_zone(zone):
            raise UnknownZone()
        async with self._sessions.begin() as session:
            person_id = await self._update(session, identity, timezone=zone)
            await self._schedules.reschedule_person(person_id, session=session)
        return replace(identity, timezone=zone)

    async def announcements(self, identity: Identity) -> bool:
        """Whether the person receives practice announcements (staff broadcasts)."""
        async with self._sessions() as session:
            person = await PeopleRepository(session).get(identity.person_id) if identity.person_id else None
            if person is None:
                raise PermissionError("only enrolled people have stored preferences")
            return bool(person.announcements)

    async def set_announcements(self, identity: Identity, on: bool) -> int:
        """Opt in to, or out of, practice announcements (clients: the only people broadcasts
        go to). Opting out also settles the person's broadcast messages not sent yet
        (bot.services.broadcasts). Audited (``settings.announcements``, on or off); the
        number of messages that will not be sent now."""
        if identity.role is not Role.CLIENT:
            raise PermissionError("practice announcements go to clients only")
        async with self._sessions.begin() as session:
            person_id = await self._update(session, identity, announcements=on)
            skipped = 0 if on else await skip_pending_for(session, person_id, utcnow())
            await AuditRepository(session).record(
                identity.telegram_id, identity.role, "settings.announcements",
                subject_person_id=person_id, detail={"on": on, "skipped": skipped},
            )
        return skipped

    @staticmethod
    async def _update(session: AsyncSession, identity: Identity, **values: str | bool) -> int:
        if identity.person_id is None:
            raise PermissionError("only enrolled people have stored preferences")
        person = await PeopleRepository(session).get(identity.person_id)
        if person is None:
            raise PermissionError("the person no longer exists")
        for name, value in values.items():
            setattr(person, name, value)
        return person.id
