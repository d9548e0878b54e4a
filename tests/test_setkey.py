"""/setkey, end to end through the emulator (SQLite and, with TEST_DATABASE_URL, PostgreSQL),
and the therapist-key service under it: a therapist registers their age public key, sees the
fingerprint, replaces it only after confirming; every wrong format is explained and asked
again; a pasted private key leaves the chat and the database; other roles are refused."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import select, text

from bot.crypto import age
from bot.crypto.age import AgeKeyError
from bot.crypto.errors import DecryptionError
from bot.db.models import AuditEvent, Base, Invite, Role, TherapistKey
from bot.reader import reader_page
from bot.sandbox.emulator import BotApiEmulator
from bot.services.invites import NotAllowed
from bot.services.therapist_keys import KeyTampered, Outcome, TherapistKeyService
from tests.fixtures_bot import RunningBot
from tests.join_support import add_person, labels, open_chat, says, services

DENIED = "Sorry, that is not available to you."


async def therapist(bot: RunningBot, emulator: BotApiEmulator, telegram_id: int = 8101):
    identity = await add_person(bot, telegram_id, Role.THERAPIST, display_name="Dr. Jansen")
    return identity, await open_chat(emulator.user(telegram_id, first_name="Jan"))


async def stored_keys(bot: RunningBot) -> list[TherapistKey]:
    async with services(bot).sessions() as session:
        return list((await session.scalars(select(TherapistKey).order_by(TherapistKey.proposed_at))).all())


async def audit(bot: RunningBot, prefix: str = "therapist_key.") -> list[AuditEvent]:
    async with services(bot).sessions() as session:
        events = (await session.scalars(select(AuditEvent).order_by(AuditEvent.id))).all()
    return [e for e in events if e.action.startswith(prefix)]


async def test_a_therapist_sets_a_key_after_wrong_formats_are_explained(bot: RunningBot, emulator: BotApiEmulator):
    identity, chat = await therapist(bot, emulator)
    pair = age.generate()
    key = pair.recipient.text
    await chat.send("/setkey")
    assert says(await chat.next_message(), "setkey.ask")
    reader = await chat.next_message()  # the page that makes a key in the browser
    assert reader.document.file_name == "imrs-reader.html" and says(reader, "reader.caption")
    assert reader.document.data == reader_page(services(bot).content, "en") and not reader.protect_content

    wrong = {
        "my key please": "setkey.wrong.not_age",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl me@laptop": "setkey.wrong.ssh_key",
        key[:-1] + ("q" if key[-1] != "q" else "p"): "setkey.wrong.checksum",
        key[:40]: "setkey.wrong.length",
    }
    for typed, answer in wrong.items():
        await chat.send(typed)
        assert says(await chat.next_message(), answer), typed
    assert await stored_keys(bot) == []

    await chat.send(f"  {key[:31]}\n{key[31:]}  ")  # wrapped and padded when copied
    done = await chat.next_message()
    assert says(done, "setkey.set", fingerprint=pair.fingerprint)
    assert pair.fingerprint in done.text and "compare it in person" in done.text

    (row,) = await stored_keys(bot)
    assert row.therapist_id == identity.person_id and row.recipient == key
    assert row.fingerprint == pair.fingerprint and row.set_at and row.replaced_at is None
    assert await services(bot).therapist_keys.recipient_for(identity.person_id) == pair.recipient
    # Stored as ciphertext bound to the therapist, never as the text of the key.
    async with services(bot).sessions() as session:
        raw = (await session.execute(text("SELECT recipient FROM therapist_keys"))).scalar_one()
    assert key.encode() not in bytes(raw)
    (event,) = await audit(bot)
    assert event.action == "therapist_key.set" and event.subject_person_id == identity.person_id
    assert event.detail == {"fingerprint": pair.fingerprint}

    # The conversation is over: more text is not taken as a key.
    await chat.send(age.generate().recipient.text)
    assert says(await chat.next_message(), "fallback.text")
    assert len(await stored_keys(bot)) == 1


async def test_a_pasted_private_key_is_deleted_warned_about_and_stored_nowhere(
    bot: RunningBot, emulator: BotApiEmulator
):
    identity, chat = await therapist(bot, emulator)
    pair = age.generate()
    secret = next(line for line in pair.identity_file.splitlines() if line.startswith("AGE-SECRET-KEY-1"))

    sent = await chat.send(f"/setkey {secret}")  # straight after the command
    warning = await chat.next_message()
    assert says(warning, "setkey.wrong.secret_key") and "PRIVATE key" in warning.text
    assert not chat.holds_message(sent), "the private key is taken out of the chat"

    await chat.send("/setkey")
    assert says(await chat.next_message(), "setkey.ask")
    assert (await chat.next_message()).document.file_name == "imrs-reader.html"
    sent = await chat.send(pair.identity_file)  # the whole key file, in the step that asks
    assert says(await chat.next_message(), "setkey.wrong.secret_key")
    assert not chat.holds_message(sent)

    await chat.send(pair.recipient.text)  # still asked: the public key is taken
    assert says(await chat.next_message(), "setkey.set", fingerprint=pair.fingerprint)

    # Anyone, anywhere: a client pasting one outside any conversation, or in another step.
    client = await open_chat(emulator.user(8102))
    sent = await client.send(f"here it is: {secret.lower()}")
    assert says(await client.next_message(), "setkey.wrong.secret_key")
    assert not client.holds_message(sent)
    await chat.send("/invite")
    await chat.next_message()  # asks for an alias
    sent = await chat.send(secret)
    assert says(await chat.next_message(), "setkey.wrong.secret_key")
    assert not chat.holds_message(sent)

    # Nowhere in the database (any table, any column).
    async with services(bot).sessions() as session:
        for table in Base.metadata.sorted_tables:
            for row in (await session.execute(select(table))).mappings():
                flat = json.dumps(dict(row), default=lambda v: bytes(v).hex() if isinstance(v, bytes | memoryview) else str(v))
                assert secret[16:] not in flat.upper(), table.name
        assert (await session.scalars(select(Invite))).all() == [], "not taken as an alias"
    refused = [e for e in await audit(bot) if e.action == "therapist_key.secret_refused"]
    assert len(refused) == 4 and all(e.detail is None for e in refused)


async def test_a_message_edited_into_a_private_key_is_deleted_too(bot: RunningBot, emulator: BotApiEmulator):
    """Found by tests/test_fuzz.py: the guard deleted ``update.message``, which an edit
    (``edited_message``) does not have: the error handler was reached and the key stayed."""
    _, chat = await therapist(bot, emulator)
    secret = next(line for line in age.generate().identity_file.splitlines() if line.startswith("AGE-SECRET-KEY-1"))
    sent = await chat.send("my key is coming")
    assert says(await chat.next_message(), "fallback.text")
    await chat.edit(sent, secret)
    assert says(await chat.next_message(), "setkey.wrong.secret_key")
    assert not chat.holds_message(sent), "the private key is taken out of the chat"


async def test_replacing_a_key_asks_first_survives_a_restart_and_keeps_the_history(
    bot: RunningBot, emulator: BotApiEmulator
):
    identity, chat = await therapist(bot, emulator)
    old, new = age.generate(), age.generate()
    await chat.send(f"/setkey {old.recipient.text}")
    assert says(await chat.next_message(), "setkey.set", fingerprint=old.fingerprint)
    await chat.send(f"/setkey {old.recipient.text.upper()}")
    assert says(await chat.next_message(), "setkey.same", fingerprint=old.fingerprint)

    await chat.send(f"/setkey {new.recipient.text}")
    question = await chat.next_message()
    assert says(question, "setkey.confirm", old=old.fingerprint, new=new.fingerprint)
    assert "not encrypted again" in question.text
    assert labels(question) == ["Replace my key", "Keep my current key"]
    await chat.press("Keep my current key", question)
    assert says(await chat.next_message(), "setkey.kept", fingerprint=old.fingerprint)
    assert await services(bot).therapist_keys.recipient_for(identity.person_id) == old.recipient

    await chat.send("/setkey")
    assert says(await chat.next_message(), "setkey.ask_replace", fingerprint=old.fingerprint)
    assert (await chat.next_message()).document.file_name == "imrs-reader.html"
    await chat.send(new.recipient.text)
    question = await chat.next_message()
    await chat.send("yes")  # typed where the buttons are the answer
    assert says(await chat.next_message(), "fallback.use_buttons")
    await bot.restart()  # the proposal is a row, the step a persisted state
    await chat.press("Replace my key", question)
    assert says(await chat.next_message(), "setkey.replaced", fingerprint=new.fingerprint)

    assert await services(bot).therapist_keys.recipient_for(identity.person_id) == new.recipient
    history = await services(bot).therapist_keys.history(identity)
    assert [k.fingerprint for k in history] == [new.fingerprint, old.fingerprint]
    assert history[0].replaced_at is None and history[1].replaced_at is not None
    assert len(await stored_keys(bot)) == 2, "the kept proposal was forgotten"
    replaced = [e for e in await audit(bot) if e.action == "therapist_key.replaced"]
    assert [e.detail for e in replaced] == [{"fingerprint": new.fingerprint, "previous_fingerprint": old.fingerprint}]


async def test_clients_and_staff_are_refused(bot: RunningBot, emulator: BotApiEmulator):
    key = age.generate().recipient.text
    for telegram_id, role in ((8201, Role.CLIENT), (8202, Role.STAFF)):
        await add_person(bot, telegram_id, role)
        user = emulator.user(telegram_id)
        await user.send(f"/setkey {key}")
        assert (await user.next_message()).text.startswith(DENIED)
        await user.send(key)  # no conversation was started for them
        assert not says(await user.next_message(), "setkey.set")
    assert await stored_keys(bot) == []
    denied = await audit(bot, "access.denied")
    assert [e.detail["what"] for e in denied] == ["/setkey", "/setkey"]


# -- the service on its own ----------------------------------------------------------------------


@pytest.fixture
def clock():
    from tests.test_invites import Clock

    return Clock()


async def test_the_service_binds_keys_to_their_therapist(session_factory, clock):
    from tests.test_invites import enrol

    keys = TherapistKeyService(session_factory, clock=clock)
    jan = await enrol(session_factory, 31, Role.THERAPIST)
    eva = await enrol(session_factory, 32, Role.THERAPIST)
    staff = await enrol(session_factory, 33, Role.STAFF)
    former = await enrol(session_factory, 34, Role.THERAPIST, active=False)
    a, b = age.generate(), age.generate()

    for outsider in (staff, former):
        with pytest.raises(NotAllowed):
            await keys.submit(outsider, a.recipient.text)
    with pytest.raises(AgeKeyError):
        await keys.submit(jan, "age1nonsense")

    assert (await keys.submit(jan, a.recipient.text)).outcome is Outcome.SET
    proposal = await keys.submit(jan, b.recipient.text)
    assert proposal.outcome is Outcome.CONFIRM and proposal.previous.fingerprint == a.fingerprint
    assert await keys.confirm(eva, proposal.key.id) is None, "not Eva's proposal"
    clock.now += timedelta(days=1, minutes=1)
    assert await keys.confirm(jan, proposal.key.id) is None, "too old: send the key again"
    proposal = await keys.submit(jan, b.recipient.text)
    assert (await keys.confirm(jan, proposal.key.id)).outcome is Outcome.REPLACED
    assert await keys.confirm(jan, proposal.key.id) is None, "once"
    assert await keys.recipient_for(eva.person_id) is None
    assert (await keys.current(jan)).fingerprint == b.fingerprint

    # A key copied into another therapist's row does not decrypt there; a fingerprint changed
    # behind the service's back is noticed.
    assert (await keys.submit(eva, a.recipient.text)).outcome is Outcome.SET
    async with session_factory.begin() as session:
        await session.execute(
            text(
                "UPDATE therapist_keys SET recipient = (SELECT recipient FROM therapist_keys"
                " WHERE therapist_id = :jan AND replaced_at IS NULL), fingerprint = :f WHERE therapist_id = :eva"
            ),
            {"jan": jan.person_id, "eva": eva.person_id, "f": b.fingerprint},
        )
    with pytest.raises(DecryptionError):
        await keys.recipient_for(eva.person_id)
    async with session_factory.begin() as session:
        await session.execute(
            text("UPDATE therapist_keys SET fingerprint = :f WHERE therapist_id = :t AND replaced_at IS NULL"),
            {"f": a.fingerprint, "t": jan.person_id},
        )
    with pytest.raises(KeyTampered):
        await keys.recipient_for(jan.person_id)
