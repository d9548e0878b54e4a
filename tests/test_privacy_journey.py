"""The privacy journey: distinctive markers written into every clinical or personal field
through the bot, then looked for in the raw database files, in every text and binary column
of PostgreSQL, and in the logs. They must be found nowhere - except, decrypted, where the
person asks for them (the export) or is shown them (the therapist's client list).

"Every field" is derived from the models: every column declared ``encrypted(...)`` must hold a
value after the journey, so a new encrypted field fails this test until the journey writes it.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url

from bot.crypto import age
from bot.crypto.fields import Encrypted
from bot.db.delivery_models import OutboxKind
from bot.db.engine import is_sqlite
from bot.db.models import Base, CheckIn, CheckInState
from bot.db.types import utcnow
from bot.logs import PrivacyFilter
from bot.sandbox.emulator import BotApiEmulator
from tests.fixtures_bot import ADMIN_ID, RunningBot
from tests.join_support import join
from tests.test_clinic import new_therapist, receive_invite, services

THERAPIST_NAME = "Qzx Therapistmarker"
ALIAS = "Qzx Aliasmarker"
RENAMED = "Qzx Renamedmarker"
FREE_TEXT = "Qzx freetextmarker I feel unsafe tonight"
SUMMARY = "Qzx Summarymarker: stress 7 of 10"  # a clinical message the bot sends on its own
SAFE_PLACE = ["Qzx Seemarker", "Qzx Hearmarker", "Qzx Feelmarker"]  # /practice: the safe place
BOUNDARY = "Qzx Narrativemarker can you guide me through rescripting the memory of my father?"
NOTE = "Qzx Notemarker it comes up at night"  # the client's own note with a flag for the therapist
BROADCAST = "Qzx Broadcastmarker: a calm evening"  # what staff send to clients (/broadcast)
CHECK_IN_NOTE = "Qzx Checkinmarker please ask about work"  # the check-in's note (in the answers and summary)
SAFETY_PLAN = [f"Qzx Planmarker{n} step {n}\nQzx Planmarker{n} again" for n in range(1, 7)]  # /safetyplan
MARKERS = ["Therapistmarker", "Aliasmarker", "Renamedmarker", "freetextmarker", "Summarymarker",
           "Seemarker", "Hearmarker", "Feelmarker", "Narrativemarker", "Notemarker",
           "Checkinmarker", "Broadcastmarker", *(f"Planmarker{n}" for n in range(1, 7))]


def encrypted_columns() -> list[tuple[str, str]]:
    return sorted(
        (table.name, column.name)
        for table in Base.metadata.sorted_tables
        for column in table.columns
        if isinstance(column.type, Encrypted)
    )


async def test_no_marker_reaches_a_database_file_a_column_or_a_log(
    bot: RunningBot, emulator: BotApiEmulator, database_url: str
):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(PrivacyFilter(token=emulator.token))
    root = logging.getLogger()
    root.addHandler(handler)
    # setLevel, not `root.level =`: it also clears the loggers' cached isEnabledFor answers.
    old_level = root.level
    root.setLevel(logging.DEBUG)
    try:
        await journey(bot, emulator)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)

    # Every encrypted column was written by the journey.
    async with services(bot).engine.connect() as connection:
        for table, column in encrypted_columns():
            filled = await connection.scalar(text(f"SELECT COUNT(*) FROM {table} WHERE {column} IS NOT NULL"))
            assert filled, f"the journey never wrote {table}.{column}: extend it"

    found = await raw_database_text(database_url, bot)
    for marker in MARKERS:
        assert marker.encode() not in found, f"{marker} is stored readable"
    logged = stream.getvalue()
    assert logged, "the logs captured something"
    for marker in MARKERS:
        assert marker not in logged, f"{marker} reached the logs"


async def journey(bot: RunningBot, emulator: BotApiEmulator) -> None:
    therapist = await new_therapist(emulator, THERAPIST_NAME)
    await therapist.send("/invite")
    await therapist.next_message()
    await therapist.send(ALIAS)
    token, link, _ = await receive_invite(therapist)
    assert ALIAS in link.content, "the therapist sees the alias they gave"

    client = emulator.user(first_name="Client")
    done = await join(client, token)
    assert done.content

    await client.send(FREE_TEXT)  # stray free text: answered, never stored
    await client.next_message()
    # /practice: a grounding exercise rated before and after (the ratings are encrypted).
    await client.send("/practice")
    await client.press("Grounding 5-4-3-2-1", await client.next_message())
    await client.press("6", await client.next_message())
    step = await client.next_message()
    for n in range(6):
        await client.press("Next ›", step)
        if n < 5:
            await client.wait_for_edit(step)
    await client.next_message()  # well done
    await client.press("3", await client.next_message())
    assert (await client.next_message()).content.startswith("From 6 to 3")
    # /practice: the client's own safe place, in their words (encrypted).
    await client.send("/practice")
    await client.press("Safe place", await client.next_message())
    await client.press("5", await client.next_message())
    await client.next_message(), await client.next_message()  # intro, caution
    for words in SAFE_PLACE:
        await client.next_message()
        await client.send(words)
    await client.next_message()  # saved
    assert "Seemarker" in (await client.next_message()).content, "the cue replays the client's words"
    await client.next_message()
    await client.press("4", await client.next_message())
    await client.next_message()

    # The safety layer: a boundary message is kept nowhere; the note with the flag, encrypted.
    await client.send(BOUNDARY)
    explain = await client.next_message()
    assert explain.content.startswith("Let's pause here")
    await client.press("Let my therapist know", explain)
    flagged = await client.next_message()
    await client.press("Add a short note", flagged)
    await client.next_message()
    await client.send(NOTE)
    assert (await client.next_message()).content.startswith("Thank you: your note is saved")

    # /safetyplan: the six steps of the client's safety plan, in their words (encrypted).
    await client.send("/safetyplan")
    await client.next_message()  # intro
    for words in SAFETY_PLAN:
        await client.next_message()  # the step's question
        await client.send(words)
    assert "Planmarker6" in (await client.wait_for(lambda m: m.content.startswith("My safety plan"))).content
    await client.next_message()  # finished
    await client.press("Yes, share it", await client.next_message())
    await client.next_message()

    await client.send("/mydata")
    export = await client.wait_for(lambda m: m.document is not None)
    data = json.loads(export.document.data)
    assert ALIAS in json.dumps(data, ensure_ascii=False), "the export is decrypted for its owner"
    assert "Planmarker3" in json.dumps(data["tables"]["safety_plans"], ensure_ascii=False)

    await therapist.send("/clients")
    listing = await therapist.wait_for(lambda m: m.content.startswith("Your clients"))
    assert ALIAS in listing.content, "the therapist sees their client's alias"
    await therapist.press(ALIAS, listing)
    page = await therapist.wait_for_edit(listing)
    await therapist.press("Rename", page)
    await therapist.next_message()
    await therapist.send(RENAMED)
    await therapist.wait_for(lambda m: RENAMED in m.content)
    # /setkey: the therapist's age public key (stored encrypted, bound to them).
    pair = age.generate()
    await therapist.send(f"/setkey {pair.recipient.text}")
    await therapist.wait_for(lambda m: m.content.startswith("Done: this is your encryption key"))

    # A completed check-in (answers and readiness encrypted) and its summary, age-encrypted to
    # the therapist's key. Made directly and handed to the summary listener, as the check-in
    # service does when the client finishes (the conversation has its own tests).
    client_id = (await services(bot).people.identify(client.id, "", None)).person_id
    async with services(bot).sessions.begin() as session:
        check_in = CheckIn(
            client_id=client_id, therapist_id=(await services(bot).people.identify(therapist.id, "", None)).person_id,
            state=CheckInState.COMPLETED, completed_at=utcnow(),
            answers=json.dumps({"distress": 7, "ready": 5, "note": CHECK_IN_NOTE}),
        )
        session.add(check_in)
        await session.flush()
        await services(bot).summaries.on_check_in_completed(session, check_in)
    document = await therapist.wait_for(lambda m: m.document is not None and m.document.file_name.endswith(".age"))
    assert "Checkinmarker" in age.decrypt(document.document.data, pair.identity_file).decode(), "only the key opens it"

    # The outbox (bot.delivery): a clinical message is queued encrypted, then delivered.
    therapist_id = (await services(bot).people.identify(therapist.id, "", None)).person_id
    await services(bot).outbox.enqueue(
        therapist_id, kind=OutboxKind.SUMMARY, idempotency_key="journey:summary", text=SUMMARY
    )
    await therapist.wait_for(lambda m: "Summarymarker" in m.content, timeout=15)

    # /broadcast (staff; here an admin): the text is kept encrypted under the sender's key, and
    # the outbox rows hold only the broadcast's id.
    admin = emulator.user(ADMIN_ID, first_name="Admin")
    await admin.send("/broadcast")
    await admin.next_message()
    await admin.send(BROADCAST)
    await admin.press("All clients", await admin.next_message())
    await admin.press("All languages", await admin.next_message())
    await admin.next_message()  # the preview
    await admin.press("Send now", await admin.next_message())
    await admin.press("Yes, send it", await admin.next_message())
    await admin.next_message()  # the progress message
    await client.wait_for(lambda m: "Broadcastmarker" in m.content, timeout=15)


async def raw_database_text(database_url: str, bot: RunningBot) -> bytes:
    """Everything the databases hold, as bytes: the SQLite files (with their WAL and the key
    store beside them), or every text, JSON and binary column of every PostgreSQL table."""
    if is_sqlite(database_url):
        path = Path(make_url(database_url).database)
        files = [p for p in path.parent.iterdir() if p.is_file()]
        assert any(p.name.endswith("-wal") for p in files) or files, files
        return b"\n".join(p.read_bytes() for p in files)
    chunks: list[bytes] = []
    async with services(bot).engine.connect() as connection:
        columns = (
            await connection.execute(
                text(
                    "SELECT table_name, column_name FROM information_schema.columns "
                    "WHERE table_schema = 'public' AND data_type IN "
                    "('text', 'character varying', 'bytea', 'json', 'jsonb', 'character')"
                )
            )
        ).all()
        assert columns
        for table, column in columns:
            for (value,) in await connection.execute(text(f'SELECT "{column}" FROM "{table}"')):
                if value is None:
                    continue
                chunks.append(bytes(value) if isinstance(value, (bytes, memoryview)) else str(value).encode())
    return b"\n".join(chunks)
