"""SqlPersistence: conversation states survive a restart; nothing else is stored."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from telegram.ext import BasePersistence, PersistenceInput

from bot.db.engine import create_engine, session_factory
from bot.db.models import ConversationState
from bot.persistence import SqlPersistence

Sessions = async_sessionmaker[AsyncSession]

GROUP_CHAT = -1_001_234_567_890  # supergroup ids are negative and beyond 32 bits
BIG_USER = 7_000_000_000


async def count_rows(sessions: Sessions) -> int:
    async with sessions() as session:
        return int(
            await session.scalar(sa.select(sa.func.count()).select_from(ConversationState)) or 0
        )


def test_it_is_a_ptb_persistence_that_stores_conversations_only(
    session_factory: Sessions,
) -> None:
    persistence = SqlPersistence(session_factory, update_interval=2.5)
    assert isinstance(persistence, BasePersistence)
    assert persistence.store_data == PersistenceInput(
        bot_data=False, chat_data=False, user_data=False, callback_data=False
    )
    assert persistence.update_interval == 2.5
    assert SqlPersistence(session_factory).update_interval == 1.0


async def test_conversations_survive_a_restart(migrated_url: str) -> None:
    """Write with one engine + persistence, read with brand-new ones: what a restart does."""
    engine = create_engine(migrated_url)
    try:
        before = SqlPersistence(session_factory(engine))
        await before.update_conversation("checkin", (1, 2), 3)
        await before.update_conversation("checkin", (GROUP_CHAT, BIG_USER), "ASK_MOOD")
        await before.update_conversation("intake", (1, 2), 0)
        await before.flush()
    finally:
        await engine.dispose()

    engine = create_engine(migrated_url)
    try:
        after = SqlPersistence(session_factory(engine))
        checkin = await after.get_conversations("checkin")
        assert checkin == {(1, 2): 3, (GROUP_CHAT, BIG_USER): "ASK_MOOD"}
        assert all(isinstance(key, tuple) for key in checkin)
        assert await after.get_conversations("intake") == {(1, 2): 0}
        assert await after.get_conversations("never-used") == {}
    finally:
        await engine.dispose()


async def test_none_deletes_the_conversation(session_factory: Sessions) -> None:
    persistence = SqlPersistence(session_factory)
    await persistence.update_conversation("checkin", (1, 2), 1)
    await persistence.update_conversation("checkin", (3, 4), 1)
    await persistence.update_conversation("checkin", (1, 2), None)
    await persistence.update_conversation("checkin", (9, 9), None)  # not there: fine
    assert await SqlPersistence(session_factory).get_conversations("checkin") == {(3, 4): 1}
    assert await count_rows(session_factory) == 1


async def test_updates_overwrite_and_names_are_separate(session_factory: Sessions) -> None:
    persistence = SqlPersistence(session_factory)
    for state in (0, 1, "DONE"):
        await persistence.update_conversation("checkin", (1, 2), state)
    await persistence.update_conversation("soothing", (1, 2), 5)
    assert await persistence.get_conversations("checkin") == {(1, 2): "DONE"}
    assert await persistence.get_conversations("soothing") == {(1, 2): 5}
    assert await count_rows(session_factory) == 2


@pytest.mark.parametrize(
    "key",
    [(1,), (1, 2), (GROUP_CHAT, BIG_USER, 42), ("inline-message-id", BIG_USER), (1, "1")],
    ids=["chat", "chat-user", "chat-user-message", "str-and-int", "int-and-str"],
)
async def test_tuple_keys_round_trip(session_factory: Sessions, key: tuple[int | str, ...]) -> None:
    await SqlPersistence(session_factory).update_conversation("c", key, 7)
    loaded = await SqlPersistence(session_factory).get_conversations("c")
    assert list(loaded) == [key]
    assert [type(part) for part in next(iter(loaded))] == [type(part) for part in key]


async def test_concurrent_updates_as_the_application_sends_them(session_factory: Sessions) -> None:
    """Application.update_persistence gathers all conversation updates concurrently."""
    persistence = SqlPersistence(session_factory)
    await asyncio.gather(
        *(
            persistence.update_conversation("checkin", (chat, chat + 1), chat % 4)
            for chat in range(40)
        )
    )
    await asyncio.gather(
        *(
            persistence.update_conversation("checkin", (chat, chat + 1), None)
            for chat in range(0, 40, 2)
        )
    )
    loaded = await SqlPersistence(session_factory).get_conversations("checkin")
    assert loaded == {(chat, chat + 1): chat % 4 for chat in range(1, 40, 2)}


async def test_a_state_that_is_not_json_is_refused(session_factory: Sessions) -> None:
    with pytest.raises(TypeError, match="JSON"):
        await SqlPersistence(session_factory).update_conversation("c", (1,), object())
    assert await count_rows(session_factory) == 0


async def test_user_chat_bot_and_callback_data_are_never_stored(session_factory: Sessions) -> None:
    persistence = SqlPersistence(session_factory)
    await persistence.update_user_data(1, {"diary": "something private"})
    await persistence.update_chat_data(1, {"note": "something private"})
    await persistence.update_bot_data({"anything": 1})
    await persistence.update_callback_data(([("id", 1.0, {"x": "y"})], {"a": "b"}))
    await persistence.refresh_user_data(1, {})
    await persistence.refresh_chat_data(1, {})
    await persistence.refresh_bot_data({})
    await persistence.drop_user_data(1)
    await persistence.drop_chat_data(1)
    await persistence.flush()

    fresh = SqlPersistence(session_factory)
    assert await fresh.get_user_data() == {}
    assert await fresh.get_chat_data() == {}
    assert await fresh.get_bot_data() == {}
    assert await fresh.get_callback_data() is None
    assert await count_rows(session_factory) == 0


async def test_a_loading_round_reads_once_and_a_second_round_sees_other_instances_writes(
    session_factory: Sessions,
) -> None:
    """The Application asks for each conversation name once when it starts: one read serves
    them all. Asking for a name again (a standby taking over reloads) reads afresh, so what
    another instance wrote meanwhile is seen; so does a read after this instance's own write."""
    other = SqlPersistence(session_factory)  # another instance on the same database
    await other.update_conversation("checkin", (1, 1), 1)
    await other.update_conversation("soothing", (1, 1), 2)

    statements: list[str] = []
    reader = SqlPersistence(session_factory)
    engine = session_factory.kw["bind"]

    def record(*args: object) -> None:
        statements.append(str(args[2]))

    sa.event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        assert await reader.get_conversations("checkin") == {(1, 1): 1}
        assert await reader.get_conversations("soothing") == {(1, 1): 2}
        assert await reader.get_conversations("unused") == {}
        reads = [s for s in statements if "conversation_states" in s]
        assert len(reads) == 1, reads

        await other.update_conversation("soothing", (1, 1), 3)
        await other.update_conversation("checkin", (2, 2), 4)
        assert await reader.get_conversations("checkin") == {(1, 1): 1, (2, 2): 4}  # a new round
        assert await reader.get_conversations("soothing") == {(1, 1): 3}

        await reader.update_conversation("unused", (5, 5), 5)
        assert await reader.get_conversations("unused") == {(5, 5): 5}
    finally:
        sa.event.remove(engine.sync_engine, "before_cursor_execute", record)


async def test_several_updates_collecting_at_once_each_keep_their_own_states(session_factory: Sessions) -> None:
    """The inbox consumer processes several chats' updates at once (bot.inbox), each collecting
    the states it changes (SqlPersistence.collecting). python-telegram-bot hands every change
    over from whichever update's ``update_persistence`` runs first: each goes to the update of
    its chat and user, and a change of no update in progress (a timer's) is written at once."""
    persistence = SqlPersistence(session_factory)
    with persistence.collecting(1, 1) as private, persistence.collecting(GROUP_CHAT, BIG_USER) as group:
        # All handed over by one task, as one update_persistence run does.
        await asyncio.gather(
            persistence.update_conversation("checkin", (1, 1), "ASK_MOOD"),
            persistence.update_conversation("checkin", (GROUP_CHAT, BIG_USER), "ASK_SLEEP"),
            persistence.update_conversation("per-chat", (GROUP_CHAT,), 2),
            persistence.update_conversation("per-user", (BIG_USER,), 3),
            persistence.update_conversation("checkin", (5, 5), 1),  # no update of chat 5 in progress
        )
        assert private == {("checkin", (1, 1)): "ASK_MOOD"}
        assert group == {
            ("checkin", (GROUP_CHAT, BIG_USER)): "ASK_SLEEP", ("per-chat", (GROUP_CHAT,)): 2,
            ("per-user", (BIG_USER,)): 3,
        }
        assert await SqlPersistence(session_factory).get_conversations("checkin") == {(5, 5): 1}
    await persistence.write_states(group, also=lambda session: asyncio.sleep(0))
    assert await SqlPersistence(session_factory).get_conversations("checkin") == {
        (5, 5): 1, (GROUP_CHAT, BIG_USER): "ASK_SLEEP"
    }
    # Out of the blocks: written at once again.
    await persistence.update_conversation("checkin", (1, 1), "DONE")
    assert (await SqlPersistence(session_factory).get_conversations("checkin"))[(1, 1)] == "DONE"
