"""The durable inbox (bot.inbox), through the real bot and the emulator, on SQLite and
PostgreSQL: an update is stored before Telegram is told it arrived (polling: before the
offset moves on; webhook: before the 200), a replayed update_id is answered once, each chat's
updates are answered in order, processed rows are deleted after the retention time, and
/delete erases the person's rows."""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import timedelta

import aiohttp
import pytest
from sqlalchemy import select

from bot.db.delivery_models import InboxUpdate
from bot.db.types import utcnow
from bot.inbox import Inbox, key_owner_at
from bot.sandbox.emulator import BotApiEmulator
from tests.fixtures_bot import RunningBot, make_settings, prepare_database
from tests.fixtures_db import copied_from_template
from tests.join_support import says, services
from tests.test_cli import free_port

SECRET = "s3cret-token-for-the-tests"
#: Commands a stranger may send, each with its own answer: the order of answers shows the order
#: in which the bot processed them.
COMMANDS = {"/help": "help.everyone", "/about": "about.text", "/nosuch": "fallback.unknown_command",
            "/cancel": "cancel.nothing"}


async def inbox_rows(bot: RunningBot) -> list[InboxUpdate]:
    async with services(bot).sessions() as session:
        return list((await session.scalars(select(InboxUpdate).order_by(InboxUpdate.update_id))).all())


def answer_keys(messages) -> list[str]:
    keys = []
    for message in messages:
        key = next((k for k in COMMANDS.values() if says(message, k)), None)
        assert key is not None, message.content
        keys.append(key)
    return keys


class Gate:
    """Holds ``Inbox.receive_many`` until opened (and can make it fail a number of times)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, failures: int = 0, closed: bool = False) -> None:
        self.entered = asyncio.Event()
        self.opened = asyncio.Event()
        if not closed:
            self.opened.set()
        self.failures = failures
        self.received: list[dict] = []
        original = Inbox.receive_many

        async def receive_many(inbox: Inbox, updates):  # type: ignore[no-untyped-def]
            self.entered.set()
            await self.opened.wait()
            if self.failures > 0:
                self.failures -= 1
                raise ConnectionError("the database went away")
            self.received.extend(update.to_dict() for update in updates)
            return await original(inbox, updates)

        monkeypatch.setattr(Inbox, "receive_many", receive_many)


# -- polling ---------------------------------------------------------------------------------


async def test_polling_stores_the_update_before_confirming_it(
    bot: RunningBot, emulator: BotApiEmulator, monkeypatch: pytest.MonkeyPatch
):
    gate = Gate(monkeypatch, closed=True, failures=1)
    user = emulator.user(first_name="Kim")
    await user.send("/help")
    await asyncio.wait_for(gate.entered.wait(), 15)
    # Fetched, not stored: Telegram still has it (the offset has not moved on).
    assert [u["update_id"] for u in emulator.pending_updates] == [emulator.state.updates.last_id]
    assert await inbox_rows(bot) == []
    gate.opened.set()  # the first try fails, the next stores it
    assert says(await user.next_message(), "help.everyone")
    await emulator.updates_processed()
    rows = await inbox_rows(bot)
    assert len(rows) == 1 and rows[0].processed_at is not None
    assert json.loads(rows[0].payload)["message"]["text"] == "/help"  # decrypted for the ORM
    assert rows[0].chat_id == rows[0].user_id == user.id and rows[0].key_owner < 0


async def test_a_replayed_update_is_answered_once_and_chats_in_order(
    bot: RunningBot, emulator: BotApiEmulator, monkeypatch: pytest.MonkeyPatch
):
    gate = Gate(monkeypatch)
    users = [emulator.user(first_name=f"U{i}") for i in range(3)]
    sent = {u.id: [] for u in users}
    for command in list(COMMANDS) * 2:  # interleaved: each chat sends 8 updates
        for user in users:
            await user.send(command)
            sent[user.id].append(COMMANDS[command])
    await emulator.updates_processed()
    for user in users:
        assert answer_keys(user.messages) == sent[user.id]

    # Telegram delivers an update again (e.g. its confirmation was lost): stored once, not answered.
    replayed = gate.received[0]
    emulator.state.updates.pending.append(replayed)
    emulator.state.updates.changed.fire()
    first = next(u for u in users if u.id == replayed["message"]["chat"]["id"])
    before = len(first.messages)
    await first.send("/about")
    await emulator.updates_processed()
    assert len(first.messages) == before + 1 and says(first.messages[-1], "about.text")
    assert sum(1 for r in gate.received if r["update_id"] == replayed["update_id"]) == 2
    assert len(await inbox_rows(bot)) == len(users) * 8 + 1


# -- webhook ---------------------------------------------------------------------------------


@pytest.fixture
async def webhook_bot(emulator: BotApiEmulator, database_url: str, monkeypatch: pytest.MonkeyPatch):
    if not copied_from_template(database_url):
        await prepare_database(database_url)
    port = free_port()
    settings = make_settings(
        emulator, database_url, port=port, webhook_url=f"http://127.0.0.1:{port}/telegram", webhook_secret=SECRET
    )
    running = RunningBot(settings, webhook=True)
    await running.start()
    try:
        yield running
    finally:
        with contextlib.suppress(Exception):
            await running.stop()


async def post(port: int, update: dict, secret: str = SECRET) -> int:
    async with aiohttp.ClientSession() as http, http.post(
        f"http://127.0.0.1:{port}/telegram", json=update, headers={"X-Telegram-Bot-Api-Secret-Token": secret}
    ) as response:
        return response.status


async def test_webhook_answers_200_only_once_stored_and_never_after_an_error(
    webhook_bot: RunningBot, emulator: BotApiEmulator, monkeypatch: pytest.MonkeyPatch
):
    gate = Gate(monkeypatch, failures=1)
    user = emulator.user(first_name="Lou")
    await user.send("/help")  # the emulator posts it: 503 first, then 200
    assert says(await user.next_message(), "help.everyone")
    assert emulator.webhook["last_error_message"] == "Wrong response from the webhook: 503 Service Unavailable"
    assert len(gate.received) == 1

    port = webhook_bot.settings.port
    replayed = gate.received[0]
    assert await post(port, replayed, secret="wrong-secret-0000") == 403
    assert await post(port, replayed) == 200  # stored already: 200, nothing more
    await user.send("/about")
    assert says(await user.next_message(), "about.text")
    assert answer_keys(user.messages) == ["help.everyone", "about.text"]
    rows = await inbox_rows(webhook_bot)
    assert [r.update_id for r in rows] == [replayed["update_id"], replayed["update_id"] + 1]

    # A 200 means the row is committed: a new update posted by hand is in the table at once.
    gate.opened.clear()
    new = json.loads(json.dumps(replayed))
    new["update_id"] = emulator.state.updates.last_id + 1000
    posting = asyncio.create_task(post(port, new))
    await asyncio.wait_for(gate.entered.wait(), 5)
    assert not posting.done()
    gate.opened.set()
    assert await posting == 200
    assert new["update_id"] in [r.update_id for r in await inbox_rows(webhook_bot)]
    assert says(await user.next_message(), "help.everyone")

    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/healthcheck") as response:
        health = await response.json()
    assert health["status"] == "ok" and health["role"] == "consumer"
    assert isinstance(health["inbox_backlog"], int)


# -- retention and erasure ------------------------------------------------------------------


async def test_processed_rows_and_their_hourly_keys_are_deleted_after_the_retention_time(
    bot: RunningBot, emulator: BotApiEmulator
):
    user = emulator.user(first_name="Ari")
    await user.send("/help")
    await user.next_message()
    await emulator.updates_processed()
    inbox = services(bot).inbox
    keystore = services(bot).crypto.keystore
    assert inbox.retention == timedelta(hours=1)  # the default
    assert await inbox.purge() == (0, 0)  # processed just now: kept
    assert len(await inbox_rows(bot)) == 1
    assert await keystore.owners_below(0) == [key_owner_at(utcnow())]

    later = utcnow() + timedelta(hours=1, minutes=1)
    rows, keys = await inbox.purge(now=later)
    assert rows == 1 and await inbox_rows(bot) == []
    # The hour's key: kept while its hour lasts (plus the retention time), then destroyed.
    if keys == 0:
        assert await inbox.purge(now=later + timedelta(hours=1)) == (0, 1)
    assert await keystore.owners_below(0) == []
    assert await inbox.backlog() == 0


async def test_delete_erases_the_person_s_inbox_rows(bot: RunningBot, emulator: BotApiEmulator):
    from tests.test_account import enrolled_client

    client, therapist = await enrolled_client(bot, emulator)
    assert any(r.user_id == client.id for r in await inbox_rows(bot))
    await client.send("/delete")
    await client.press("Yes, delete everything", await client.next_message())
    final = await client.next_message()
    await client.press("Delete for good", final)
    assert says(await client.next_message(), "account.delete.done")
    await emulator.updates_processed()
    rows = await inbox_rows(bot)
    assert not [r for r in rows if client.id in (r.user_id, r.chat_id)]
    assert [r for r in rows if r.user_id == therapist.id], "other people's rows stay (until retention)"
