"""Informed consent: the versioned text in content/, and an append-only record of decisions.

Every decision is a new ``consent_records`` row (person, version, choice, time); nothing is
ever updated or deleted except by erasing the person. The decision in force is the latest.

Other features ask before they act for a client::

    if await services.consent.has_active_consent(person_id): ...        # one person
    allowed = await services.consent.with_active_consent(person_ids)     # many, one query

Reminders and check-in summaries must check at the moment they are sent (not when they
were scheduled): a withdrawal stops them at once.

A new consent version (``consent.version`` in content): a grant of an earlier version stays
in force until the client decides, and every client with one gets a notice, once per
version (``notify_new_version``, at start-up, through the outbox); /consent then shows both
versions and asks.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.content import REFERENCE_LANGUAGE, Content
from bot.db.models import ConsentChoice, ConsentRecord, Role
from bot.db.repositories import AuditRepository, ConsentRepository, LinkRepository, PeopleRepository
from bot.db.delivery_models import OutboxKind
from bot.db.types import utcnow
from bot.delivery.outbox import OutboxService, PlainMessage
from bot.services.notices import Notices
from bot.services.people import Identity

#: The content key of the consent version (the same in every language).
VERSION_KEY = "consent.version"
#: The notice that the consent text has a new version (content/*/outbox.yaml).
NEW_VERSION_NOTICE = "outbox.consent_new_version"
NOTICE_VALID = timedelta(days=14)  # not sent after this (the bot was down that long): /consent still asks


@dataclass(frozen=True)
class ConsentStatus:
    """The decision in force."""

    version: str
    choice: ConsentChoice
    recorded_at: datetime  # aware, UTC

    @property
    def active(self) -> bool:
        return self.choice is ConsentChoice.GRANTED

    def outdated(self, current_version: str) -> bool:
        """A grant of an earlier version: in force, but the client is asked again."""
        return self.active and self.version != current_version

    @classmethod
    def of(cls, record: ConsentRecord) -> ConsentStatus:
        return cls(record.consent_version, ConsentChoice(record.choice), record.recorded_at)


@dataclass(frozen=True)
class Recipient:
    """Someone to tell about a change, in their own language. ``client_alias`` is the
    pseudonym the client is known by to this therapist (for notices that may name them)."""

    person_id: int
    telegram_id: int
    language: str
    client_alias: str | None = None


@dataclass(frozen=True)
class ConsentChange:
    status: ConsentStatus
    changed: bool  # False when the decision in force already was this one
    therapist: Recipient | None  # the client's current therapist (told already, when changed)
    was_granted: bool = False  # the decision in force before was a grant (of any version)


class ConsentService:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], content: Content, notices: Notices) -> None:
        self._sessions = sessions
        self._content = content
        self._notices = notices

    @property
    def current_version(self) -> str:
        """The version of the consent text in content/ (every language has the same)."""
        return self._content.text(VERSION_KEY, REFERENCE_LANGUAGE)

    # -- for other features -------------------------------------------------------------------

    async def has_active_consent(self, person_id: int) -> bool:
        """True when the person's latest consent decision is a grant."""
        async with self._sessions() as session:
            record = await ConsentRepository(session).latest(person_id)
        return record is not None and record.choice is ConsentChoice.GRANTED

    async def with_active_consent(self, person_ids: Iterable[int]) -> set[int]:
        """The subset of ``person_ids`` whose latest decision is a grant (one query)."""
        ids = list(dict.fromkeys(person_ids))
        async with self._sessions() as session:
            choices = await ConsentRepository(session).latest_choices(ids)
        return {person_id for person_id, choice in choices.items() if choice is ConsentChoice.GRANTED}

    async def may_receive(self, person_ids: set[int]) -> set[int]:
        """Who may be sent messages on the bot's own initiative: everyone but clients whose
        latest consent decision is not a grant (checked by the outbox at send time, so a
        withdrawal stops reminders and summaries at once)."""
        if not person_ids:
            return set()
        async with self._sessions() as session:
            clients = await ConsentRepository(session).clients_choices(person_ids)
        granted = ConsentChoice.GRANTED.value
        return set(person_ids).difference(
            person_id for person_id, choice in clients.items() if choice != granted
        )

    async def current(self, person_id: int) -> ConsentStatus | None:
        async with self._sessions() as session:
            record = await ConsentRepository(session).latest(person_id)
        return ConsentStatus.of(record) if record else None

    async def notify_new_version(self, outbox: OutboxService, *, per_second: float, chunk: int = 1000) -> int:
        """Queue the new-version notice for every active client whose consent in force is a
        grant of another version and who has not been sent it. Idempotent per client and
        version (the outbox key), so every start-up, on every instance, may call it; returns
        how many were queued.

        A practice may have many clients: the notices are queued ``chunk`` at a time and due
        ``per_second`` apart, so that reminders, which are due at a time, keep most of the
        outbox's rate (the notice can wait)."""
        version = self.current_version
        prefix = f"consent-version:{version}:"
        async with self._sessions() as session:
            clients = await ConsentRepository(session).granted_other_version(version, unless_queued=prefix)
        start, queued = utcnow(), 0
        for first in range(0, len(clients), chunk):
            messages = []
            for n, client_id in enumerate(clients[first : first + chunk], start=first):
                due = start + timedelta(seconds=n / per_second)
                messages.append(
                    PlainMessage(
                        recipient_id=client_id,
                        kind=OutboxKind.NOTICE,
                        idempotency_key=f"{prefix}{client_id}",
                        due_at=due,
                        expires_at=due + NOTICE_VALID,
                        content_key=NEW_VERSION_NOTICE,
                        params={"version": version},
                    )
                )
            queued += await outbox.enqueue_many(messages)
        return queued

    # -- decisions ----------------------------------------------------------------------------

    async def withdraw(self, actor: Identity) -> ConsentChange:
        """Record a withdrawal by the client themself (a no-op when already withdrawn); their
        therapist is told, in the same transaction."""
        return await self._decide(actor, ConsentChoice.WITHDRAWN)

    async def grant(self, actor: Identity) -> ConsentChange:
        """Record a new grant of the current version by the client themself (for a client
        who withdrew earlier; joining records its grant in ClientEnrollmentService). A grant
        after a withdrawal is told to the therapist; a grant of a new version while an
        earlier one was in force changes nothing for them and is not."""
        return await self._decide(actor, ConsentChoice.GRANTED)

    #: The notice to the therapist for each decision (after a grant in force: none).
    _NOTICES = {
        ConsentChoice.WITHDRAWN: "account.consent.withdrawn_notice",
        ConsentChoice.GRANTED: "account.consent.regranted_notice",
    }

    async def _decide(self, actor: Identity, choice: ConsentChoice) -> ConsentChange:
        if actor.person_id is None or actor.role is not Role.CLIENT:
            raise PermissionError("only a client decides about their own consent")
        async with self._sessions.begin() as session:
            consents = ConsentRepository(session)
            latest = await consents.latest(actor.person_id)
            therapist = await therapist_of(session, actor.person_id)
            was_granted = latest is not None and latest.choice is ConsentChoice.GRANTED
            if latest is not None and latest.choice is choice and (
                choice is ConsentChoice.WITHDRAWN or latest.consent_version == self.current_version
            ):
                return ConsentChange(ConsentStatus.of(latest), False, therapist, was_granted)
            record = await consents.add(actor.person_id, self.current_version, choice, utcnow())
            if therapist is not None and not (choice is ConsentChoice.GRANTED and was_granted):
                # Their pseudonym for the client, nothing else. Keyed by the decision's row.
                alias = therapist.client_alias or self._content.text(
                    "account.consent.unnamed_client", therapist.language
                )
                await self._notices.queue(
                    session, therapist.person_id, therapist.language, self._NOTICES[choice],
                    idempotency_key=f"notice:consent:{record.id}", alias=alias,
                )
            await AuditRepository(session).record(
                actor_telegram_id=actor.telegram_id,
                actor_role=Role.CLIENT.value,
                action=f"consent.{choice.value}",
                subject_person_id=actor.person_id,
                detail={"version": record.consent_version},
            )
            return ConsentChange(ConsentStatus.of(record), True, therapist, was_granted)


async def therapist_of(session: AsyncSession, client_id: int) -> Recipient | None:
    """The client's current therapist, with the client's pseudonym for notices."""
    link = await LinkRepository(session).active_for_client(client_id)
    if link is None:
        return None
    people = PeopleRepository(session)
    therapist = await people.get(link.therapist_id)
    client = await people.get(client_id)
    if therapist is None or not therapist.active:
        return None
    return Recipient(therapist.id, therapist.telegram_id, therapist.language, client.alias if client else None)
