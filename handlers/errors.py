"""The error handler: log the error class and update id, never what a person wrote."""

from __future__ import annotations

import logging
import os
import traceback

from telegram import Update
from telegram.error import Forbidden, TelegramError

from bot.context import BotContext

_log = logging.getLogger("imrs.errors")


async def on_error(update: object, context: BotContext) -> None:
    error = context.error
    update_id = update.update_id if isinstance(update, Update) else None
    # exc_info would print the exception's message, which can quote input (e.g. a ValueError
    # about a typed value), so only the class and the stack's frames: file:line in function.
    _log.error(
        "Unhandled %s while processing update %s; stack, innermost last:\n%s",
        type(error).__name__, update_id, stack_of(error),
    )
    if not isinstance(update, Update) or update.effective_chat is None:
        return
    if isinstance(error, Forbidden):
        return  # they blocked the bot: we cannot reach them anyway
    try:
        language = context.services.content.resolve_language(
            update.effective_user.language_code if update.effective_user else None
        )
        await context.bot.send_message(
            update.effective_chat.id, context.services.content.text("errors.generic", language)
        )
    except TelegramError as exc:
        _log.warning("Could not tell the person about the error (%s)", type(exc).__name__)


def stack_of(error: BaseException | None) -> str:
    """Every frame of the traceback as ``file:line in function``, outermost first; for an
    error raised while handling another, that one's frames too. No messages, no locals, no
    source lines: nothing a person wrote."""
    lines: list[str] = []
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        frames = traceback.extract_tb(error.__traceback__) if error.__traceback__ else []
        block = [f"  {os.path.basename(f.filename)}:{f.lineno} in {f.name}" for f in frames] or ["  no traceback"]
        lines = [f"{type(error).__name__}:", *block, *lines]
        error = error.__cause__ or error.__context__
    return "\n".join(lines)
