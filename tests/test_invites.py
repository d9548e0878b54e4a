"""Invites at the service level: who may make which, hashes only, expiry, single use.

End-to-end joining through the emulator is in tests/test_clinic.py.
"""

from __future__ import annotations

import asyncio
import re
import string
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, text

from bot.db.models import AuditEvent, Invite, InviteKind, Person, Role
from bot.db.repositories import InviteRepository, PeopleRepository
from bot.services.invites import (
    TOKEN_PATTERN,
    InviteNotAllowed,
    InviteService,
    InviteStatus,
    hash_token,
    qr_png,
)
from bot.services.names import InvalidAlias
from bot.services.people import Identity

BOT = "imrs_companion_bot"
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
ALPHABET = string.ascii_letters + string.digits + "_-"


class Clock:
    """A settable clock for the service (no sleeping in tests)."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def identity(person: Person | None, role: Role | None, telegram_id: int) -> Identity:
    return Identity(
        telegram_id=telegram_id,
        first_name="x",
        role=role,
        person_id=person.id if person else None,
        language="en",
        timezone="Europe/Amsterdam",
    )


async def enrol(sessions, telegram_id: int, role: Role, *, active: bool = True) -> Identity:
    async with sessions.begin() as session:
        person = await PeopleRepository(session).add(
            Person(
                telegram_id=telegram_id,
                role=role,
                language="en",
                timezone="Europe/Amsterdam",
                display_name=f"{role.value} {telegram_id}",
                active=active,
            )
        )
    return identity(person, role, telegram_id)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def invites(session_factory, clock: Clock) -> InviteService:
    return InviteService(session_factory, clock=clock)


@pytest.fixture
async def people(session_factory) -> dict[str, Identity]:
    return {
        "admin": await enrol(session_factory, 1, Role.ADMIN),
        "staff": await enrol(session_factory, 2, Role.STAFF),
        "therapist": await enrol(session_factory, 3, Role.THERAPIST),
        "client": await enrol(session_factory, 4, Role.CLIENT),
        "former": await enrol(session_factory, 5, Role.THERAPIST, active=False),
        "stranger": identity(None, None, 6),
    }


ALLOWED = {
    InviteKind.CLIENT: {"therapist"},
    InviteKind.THERAPIST: {"staff", "admin"},
    InviteKind.STAFF: {"admin"},
}


@pytest.mark.parametrize("kind", list(InviteKind))
async def test_who_may_create_which_invite(invites, people, session_factory, kind):
    for name, actor in people.items():
        if name in ALLOWED[kind]:
            made = await invites.create(actor, kind, bot_username=BOT)
            assert made.kind is kind
            assert made.link == f"https://t.me/{BOT}?start={made.token}"
            assert TOKEN_PATTERN.fullmatch(made.token) and len(made.token) == 32
        else:
            with pytest.raises(InviteNotAllowed):
                await invites.create(actor, kind, bot_username=BOT)
    async with session_factory() as session:
        stored = (await session.scalars(select(Invite))).all()
        events = (await session.scalars(select(AuditEvent).where(AuditEvent.action == "invite.created"))).all()
    assert len(stored) == len(events) == len(ALLOWED[kind])
    assert {e.detail["kind"] for e in events} == {kind.value}


async def test_a_client_invite_belongs_to_its_therapist_and_keeps_the_alias_encrypted(
    invites, people, session_factory, engine
):
    therapist = people["therapist"]
    made = await invites.create(therapist, InviteKind.CLIENT, bot_username=BOT, alias="  Robin   B ")
    view = await invites.inspect(made.token)
    assert view.status is InviteStatus.VALID and view.kind is InviteKind.CLIENT
    assert view.therapist_id == therapist.person_id
    assert view.therapist_display_name == f"therapist {therapist.telegram_id}"
    assert view.alias == "Robin B"
    assert made.expires_at == T0 + timedelta(days=14)
    # No plaintext alias and no raw token anywhere in the table; the hash is the SHA-256.
    async with engine.connect() as connection:
        rows = (await connection.execute(text("SELECT * FROM invites"))).all()
    dumped = repr(rows).encode()
    assert b"Robin" not in dumped and made.token.encode() not in dumped
    assert hash_token(made.token).encode() in dumped
    with pytest.raises(InvalidAlias):
        await invites.create(therapist, InviteKind.CLIENT, bot_username=BOT, alias="   ")
    with pytest.raises(ValueError):
        await invites.create(people["staff"], InviteKind.THERAPIST, bot_username=BOT, alias="Robin")


async def test_invites_expire_after_their_validity(invites, people, clock):
    made = await invites.create(people["staff"], InviteKind.THERAPIST, bot_username=BOT)
    assert made.expires_at == T0 + timedelta(days=7)
    clock.now = T0 + timedelta(days=7) - timedelta(seconds=1)
    assert (await invites.inspect(made.token)).status is InviteStatus.VALID
    clock.now = T0 + timedelta(days=7)
    assert (await invites.inspect(made.token)).status is InviteStatus.EXPIRED


async def test_validity_is_configurable(session_factory, people, clock):
    service = InviteService(session_factory, clock=clock, validity={InviteKind.CLIENT: timedelta(hours=1)})
    made = await service.create(people["therapist"], InviteKind.CLIENT, bot_username=BOT)
    assert made.expires_at == T0 + timedelta(hours=1)


async def claim(sessions, token: str, person_id: int, now: datetime) -> Invite | None:
    async with sessions.begin() as session:
        return await InviteRepository(session).claim(hash_token(token), person_id, now)


async def test_claim_is_single_use_and_refuses_expired_and_revoked(invites, people, session_factory, clock):
    therapist = people["therapist"]
    made = await invites.create(therapist, InviteKind.CLIENT, bot_username=BOT)
    client = people["client"].person_id
    claimed = await claim(session_factory, made.token, client, T0)
    assert claimed is not None and claimed.used_by_id == client and claimed.used_at == T0
    assert await claim(session_factory, made.token, client, T0) is None
    assert (await invites.inspect(made.token)).status is InviteStatus.USED

    late = await invites.create(therapist, InviteKind.CLIENT, bot_username=BOT)
    assert await claim(session_factory, late.token, client, T0 + timedelta(days=14)) is None
    assert (await invites.inspect(late.token)).status is InviteStatus.VALID  # unchanged

    revoked = await invites.create(therapist, InviteKind.CLIENT, bot_username=BOT)
    async with session_factory.begin() as session:
        assert await InviteRepository(session).revoke(revoked.id, T0)
    assert await claim(session_factory, revoked.token, client, T0) is None
    assert (await invites.inspect(revoked.token)).status is InviteStatus.REVOKED


async def test_a_claim_rolled_back_with_its_transaction_leaves_the_invite_usable(
    invites, people, session_factory
):
    made = await invites.create(people["therapist"], InviteKind.CLIENT, bot_username=BOT)
    with pytest.raises(RuntimeError):
        async with session_factory.begin() as session:
            assert await InviteRepository(session).claim(hash_token(made.token), people["client"].person_id, T0)
            raise RuntimeError("enrollment failed")
    assert (await invites.inspect(made.token)).status is InviteStatus.VALID


async def test_two_concurrent_claims_only_one_wins(invites, people, session_factory):
    made = await invites.create(people["therapist"], InviteKind.CLIENT, bot_username=BOT)
    a = await enrol(session_factory, 100, Role.CLIENT)
    b = await enrol(session_factory, 101, Role.CLIENT)
    entered = asyncio.Barrier(2)

    async def race(person_id: int) -> bool:
        async with session_factory.begin() as session:
            await session.execute(select(1))  # both transactions are open before either claims
            await entered.wait()
            return await InviteRepository(session).claim(hash_token(made.token), person_id, T0) is not None

    results = await asyncio.gather(race(a.person_id), race(b.person_id))
    assert sorted(results) == [False, True]
    async with session_factory() as session:
        invite = await session.scalar(select(Invite))
    assert invite.used_by_id in (a.person_id, b.person_id)


@given(
    payload=st.one_of(
        st.text(alphabet=ALPHABET, max_size=64),
        st.text(max_size=80),
        st.text(alphabet=ALPHABET, min_size=65, max_size=100),
    )
)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
async def test_fuzzed_payloads_are_never_valid_and_store_nothing(invites, session_factory, payload):
    view = await invites.inspect(payload)
    expected = InviteStatus.UNKNOWN if re.fullmatch(r"[A-Za-z0-9_-]{16,64}", payload) else InviteStatus.MALFORMED
    assert view.status is expected
    assert view.id is None and view.kind is None
    async with session_factory() as session:
        assert await session.scalar(select(func.count()).select_from(Invite)) == 0
        assert await session.scalar(select(func.count()).select_from(Person)) == 0


def test_the_qr_code_is_a_png():
    png = qr_png(f"https://t.me/{BOT}?start=" + "A" * 32)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 200
