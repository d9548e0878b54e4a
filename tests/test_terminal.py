"""The sandbox's terminal chat, driven by scripted input against the emulator and a tiny PTB bot."""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import telegram
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.error import Forbidden
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from bot.sandbox.emulator import BotApiEmulator, SimUser
from bot.sandbox.terminal import run_terminal_chat
from tests.fixtures_emulator import emu, eventually, png_bytes  # noqa: F401

pytestmark = pytest.mark.timeout(20)

REPORT = b"%PDF-1.4 a tiny summary"
STEPS = InlineKeyboardMarkup([[InlineKeyboardButton("Next", callback_data="next"),
                               InlineKeyboardButton("Back", callback_data="back")],
                              [InlineKeyboardButton("Guide", url="https://example.org/guide")]])


async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    assert update.effective_message is not None and update.effective_user is not None
    await update.effective_message.reply_text(f"Hello {update.effective_user.first_name}!\nReady?", reply_markup=STEPS)


async def step(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    query = update.callback_query
    assert query is not None
    await query.answer("Moving on")
    await query.edit_message_text("Step 2: breathe", reply_markup=STEPS)


async def files(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    assert update.effective_message is not None
    await update.effective_message.reply_document(REPORT, filename="summary.pdf", caption="Your summary")
    await update.effective_message.reply_photo(png_bytes(4, 3))


async def notify(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    assert update.effective_message is not None
    therapist_id = int(context.args[0]) if context.args else 0
    try:
        await context.bot.send_message(therapist_id, "New check-in from your client")
    except Forbidden:
        await update.effective_message.reply_text("Could not reach your therapist yet.")


async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    assert update.effective_message is not None
    await update.effective_message.reply_text(f"You said: {update.effective_message.text}")


@pytest.fixture
async def running_bot(emu: BotApiEmulator) -> AsyncIterator[Application]:  # type: ignore[type-arg]
    """A tiny PTB application polling the emulator (a stand-in for the real bot)."""
    app = ApplicationBuilder().token(emu.token).base_url(emu.base_url).base_file_url(emu.base_file_url).build()
    app.add_handler(CommandHandler("start", start))
    app.add_handler(CommandHandler("files", files))
    app.add_handler(CommandHandler("notify", notify))
    app.add_handler(CallbackQueryHandler(step))
    app.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, echo))
    async with app:
        await app.bot.set_my_commands([("start", "Begin"), ("files", "Get your files")])
        await app.start()
        assert app.updater is not None
        await app.updater.start_polling(poll_interval=0, timeout=1)
        yield app
        await app.updater.stop()
        await app.stop()


def people(emu: BotApiEmulator) -> dict[str, SimUser]:
    return {"client": emu.user(first_name="Alex"), "therapist": emu.user(first_name="Dana", last_name="Moss")}


async def test_scripted_session(emu: BotApiEmulator, running_bot: Application, tmp_path: Path) -> None:  # type: ignore[type-arg]
    cast = people(emu)
    script = "\n".join([
        "/start", ":wait",
        ":1", ":wait",
        ":3",
        ":7",
        ":commands",
        f"/notify {cast['therapist'].id}", ":wait",
        ":as therapist",
        ":wait 0.3",
        "/start", ":wait",
        ":as", ":as nobody", ":bogus",
        ":as client",
        "/files", ":wait",
        "::colon", ":wait",
        ":quit",
        "this is never sent",
    ]) + "\n"
    output = io.StringIO()
    await run_terminal_chat(emu, cast, initial="client", input_stream=io.StringIO(script), output=output,
                            download_dir=tmp_path)
    text = output.getvalue()
    client, therapist = cast["client"], cast["therapist"]
    first = client.messages[0].message_id
    expected_in_order = [
        f"You are client (Alex, id {client.id})",
        f"[client] bot #{first}: Hello Alex!\n" + " " * len(f"[client] bot #{first}: ") + "Ready?",
        "[1] Next  [2] Back  [3] Guide (link)",
        "[client] bot (notice): Moving on",
        f"[client] bot edited #{first}: Step 2: breathe",
        "[client] [3] Guide opens https://example.org/guide; nothing is sent to the bot",
        f"[client] message #{first} has buttons 1 to 3",
        "[client]   /start - Begin",
        "[client]   /files - Get your files",
        "--- you are now therapist (Dana Moss, id",
        "[therapist] (no answer from the bot within 0.3 s)",
        "[therapist] bot #2: Hello Dana!",
        "   client: client (Alex",
        " * therapist: therapist (Dana Moss",
        "nobody called 'nobody'",
        "unknown command :bogus",
        "--- you are now client",
        "[client] bot #",
        f"[document summary.pdf, {len(REPORT)} B saved to {tmp_path / 'client' / 'summary.pdf'}]",
        "Your summary",
        "[photo 4x3, ",
        "You said: :colon",
    ]
    position = 0
    for expected in expected_in_order:
        found = text.find(expected, position)
        assert found >= 0, f"{expected!r} missing after position {position} in:\n{text}"
        position = found + len(expected)
    failure = "403 Forbidden: bot can't initiate conversation with a user"
    assert f"[therapist] ! the bot's sendMessage failed: {failure}" in text
    assert "Could not reach your therapist yet." in text
    assert "never sent" not in text
    assert (tmp_path / "client" / "summary.pdf").read_bytes() == REPORT
    assert [m.text for m in therapist.messages] == ["Hello Dana!\nReady?"]
    assert client.messages[-1].text == "You said: :colon"


async def test_reads_input_without_blocking_and_shows_messages_for_others_on_switch(
        emu: BotApiEmulator, running_bot: Application, tmp_path: Path) -> None:  # type: ignore[type-arg]
    cast = people(emu)
    read_fd, write_fd = os.pipe()
    output = io.StringIO()
    with os.fdopen(read_fd, "r") as reader, os.fdopen(write_fd, "w") as writer:
        chat = asyncio.create_task(run_terminal_chat(emu, cast, initial="client", input_stream=reader,
                                                     output=output, download_dir=tmp_path))

        def type_line(line: str) -> None:
            writer.write(line + "\n")
            writer.flush()

        type_line("/start")
        await eventually(lambda: "Hello Alex!" in output.getvalue())
        type_line(":as therapist")
        type_line("/start")
        await eventually(lambda: "Hello Dana!" in output.getvalue())
        type_line(":as client")
        await eventually(lambda: "you are now client" in output.getvalue())

        # Nobody types now: what the bot sends still shows up, for whoever it concerns.
        bot: telegram.Bot = running_bot.bot
        await bot.send_message(cast["client"].id, "A reminder for you")
        await bot.send_message(cast["therapist"].id, "Session notes are ready")
        await eventually(lambda: "(new for therapist; type :as therapist to read it)" in output.getvalue())
        assert "[client] bot #3: A reminder for you" in output.getvalue()
        assert "Session notes are ready" not in output.getvalue()

        type_line(":as therapist")
        await eventually(lambda: "[therapist] bot #3: Session notes are ready" in output.getvalue())
        assert not chat.done()
        type_line(":quit")
        await asyncio.wait_for(chat, 5)
