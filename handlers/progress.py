"""/progress: a client's own practice over time, as a chart with a one-line caption (issue 6).

    /progress ──► no practice at all ───────────► "Nothing to show yet … /practice"
              ├─► none in the past year ────────► "No exercises from the past year … /practice"
              └─► otherwise ──► (uploading a photo…) ──► PNG chart + one-line summary

One command, one answer, no conversation state and no buttons. The numbers come from
bot.services.progress (the client's own rows only, grouped in their time zone); the chart is
drawn in a worker thread (``asyncio.to_thread``), so the event loop keeps serving others
while matplotlib works. Every word, on the chart too, comes from content (progress.yaml).
The photo is sent with the bot's default ``protect_content``: it shows clinical ratings.
"""

from __future__ import annotations

import asyncio
from typing import Any

from telegram import Update
from telegram.constants import ChatAction
from telegram.ext import BaseHandler, CommandHandler

from bot.context import BotContext
from bot.db.models import Role
from bot.content import Content
from bot.services.progress import CHART_LABELS, Progress
from handlers.access import requires
from handlers.common import say, text
from handlers.parts import chat_id_of


@requires(Role.CLIENT)
async def progress(update: Update, context: BotContext) -> None:
    """/progress: the chart and its summary, or a friendly word when there is nothing to draw."""
    identity = await context.identity(update)
    found = await context.services.progress.summary(identity)
    if found is None:
        await say(update, context, "progress.empty")
        return
    if not found.weeks:
        await say(update, context, "progress.none_recent")
        return
    chat_id = chat_id_of(update)
    await context.bot.send_chat_action(chat_id, ChatAction.UPLOAD_PHOTO)
    labels = chart_labels(context.services.content, identity.language)
    # Imported on first use: matplotlib is ~40 MB resident, which a bot that never draws a
    # chart should not carry (bench/reminders_scale.py measures the process).
    from bot.services.progress_chart import render_chart

    png = await asyncio.to_thread(render_chart, found, labels)
    await context.bot.send_photo(chat_id, photo=png, caption=await caption(update, context, found))


async def caption(update: Update, context: BotContext, found: Progress) -> str:
    """The one-line summary (with a note on the window when older practice is not drawn)."""
    if found.mean_before is None or found.mean_after is None:
        line = await text(update, context, "progress.summary", recent=found.recent, total=found.total)
    else:
        mark = await text(update, context, "progress.decimal_mark")
        line = await text(
            update,
            context,
            "progress.summary_change",
            recent=found.recent,
            total=found.total,
            before=_one_decimal(found.mean_before, mark),
            after=_one_decimal(found.mean_after, mark),
        )
    if found.older:
        line += "\n" + await text(update, context, "progress.window_note")
    return line


def chart_labels(content: Content, language: str) -> dict[str, Any]:
    """The words drawn on the chart, from ``progress.chart`` in content."""
    return {name: content.raw(f"progress.chart.{name}", language) for name in CHART_LABELS}


def _one_decimal(value: float, mark: str) -> str:
    return f"{value:.1f}".replace(".", mark)


def build() -> list[BaseHandler]:
    return [CommandHandler("progress", progress)]
