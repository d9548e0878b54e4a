"""Who is asking: the person behind a Telegram user, their role and language."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.content import Content
from bot.db.engine import single_read
from bot.db.models import Role
from bot.db.repositories import AuditRepository, PeopleRepository


@dataclass(frozen=True)
class Identity:
    """The asker of one update. ``role`` is None for someone the practice has not enrolled."""

    telegram_id: int
    first_name: str
    role: Role | None
    person_id: int | None
    language: str
    timezone: str

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    @property
    def menu(self) -> str:
        """The name of this person's command menu in content (``commands.<menu>``)."""
        return self.role.value if self.role else "everyone"


class PeopleService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        content: Content,
        *,
        admin_ids: frozenset[int],
        default_timezone: str,
    ) -> None:
        self._sessions = sessions
        self._content = content
        self._admin_ids = admin_ids
        self._default_timezone = default_timezone

    async def identify(self, telegram_id: int, first_name: str, language_code: str | None) -> Identity:
        """One read: the stored person if any; admins from the configuration are admins even
        before their first /start creates their record."""
        async with self._sessions() as session:
            await single_read(session)
            person = await PeopleRepository(session).get_by_telegram_id(telegram_id)
        role = Role(person.role) if person else None
        if telegram_id in self._admin_ids:
            role = Role.ADMIN
        return Identity(
            telegram_id=telegram_id,
            first_name=first_name,
            role=role,
            person_id=person.id if person else None,
            language=person.language if person else self._content.resolve_language(language_code),
            timezone=person.timezone if person else self._default_timezone,
        )

    async def set_reachable(self, telegram_id: int, reachable: bool) -> bool:
        """Telegram says this person blocked (False) or unblocked (True) the bot. Blocking
        makes them inactive: the outbox queues nothing more for them. Unblocking makes them
        active again, unless staff deactivated them (a therapist: ``deactivated_at``).
        Returns whether anything changed."""
        async with self._sessions.begin() as session:
            person = await PeopleRepository(session).get_by_telegram_id(telegram_id)
            if person is None or person.deactivated_at is not None or person.active == reachable:
                return False
            person.active = reachable
            return True

    async def register_admin(self, identity: Identity) -> Identity:
        """Create (or promote to) the admin record of an administrator (``identify`` makes the
        people in ADMIN_TELEGRAM_IDS admins)."""
        if identity.role is not Role.ADMIN:
            raise PermissionError("not an administrator")
        async with self._sessions.begin() as session:
            created = identity.person_id is None
            person = await PeopleRepository(session).ensure_admin(
                identity.telegram_id, identity.language, identity.timezone
            )
            if created or identity.role is not Role.ADMIN:
                await AuditRepository(session).record(
                    actor_telegram_id=identity.telegram_id,
                    actor_role=Role.ADMIN.value,
                    action="admin.registered",
                    subject_person_id=person.id,
                )
        return Identity(
            telegram_id=identity.telegram_id,
            first_name=identity.first_name,
            role=Role.ADMIN,
            person_id=person.id,
            language=person.language,
            timezone=person.timezone,
        )
