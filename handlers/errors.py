"""The error handler: log the error class and update id, never what a person wrote."""

from __future__ import annotations

import logging
import os

from telegram import Update
from telegram.error import Forbidden, TelegramError

from bot.context import BotContext

_log = logging.getLogger("imrs.errors")


async def on_error(update: object, context: BotContext) -> None:
    error = context.error
    update_id = update.update_id if isinstance(update, Update) else None
    # exc_info would print locals-free tracebacks, but exception messages can quote input
    # (e.g. a ValueError about a typed value), so only the class and where it happened.
    frame = _origin(error)
    _log.error("Unhandled %s while processing update %s (%s)", type(error).__name__, update_id, frame)
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


def _origin(error: BaseException | None) -> str:
    """file:line of the innermost frame of the traceback: enough to find the bug."""
    tb = error.__traceback__ if error else None
    if tb is None:
        return "no traceback"
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    return f"{os.path.basename(code.co_filename)}:{tb.tb_lineno} in {code.co_name}"
