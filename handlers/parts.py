"""The part of an update a handler is registered for, typed as present.

python-telegram-bot types every part of an ``Update`` as optional, because which one is set
depends on the kind of update. Which kind reaches a callback is decided where it is
registered: a ``CallbackQueryHandler`` is called only for a button press (so with a
``callback_query``), a ``MessageHandler`` on ``filters.TEXT`` only with a message, and every
update in a private chat (``handlers.guard``) has a chat and a user. These accessors say so
to the type checker and fail loudly (``UnexpectedUpdate``) if a callback is ever registered
for an update that lacks the part, rather than on ``None`` a few lines later.
"""

from __future__ import annotations

import re
from typing import Any

from telegram import CallbackQuery, Message, Update
from telegram.ext import CallbackContext


class UnexpectedUpdate(RuntimeError):
    """A handler was called with an update that lacks the part it is registered for."""


def query_of(update: Update) -> CallbackQuery:
    """The button press a ``CallbackQueryHandler`` callback was called for."""
    if update.callback_query is None:
        raise UnexpectedUpdate("no callback query in this update")
    return update.callback_query


def message_of(update: Update) -> Message:
    """The new message a ``MessageHandler`` callback was called for (not an edited one)."""
    if update.message is None:
        raise UnexpectedUpdate("no message in this update")
    return update.message


def chat_id_of(update: Update) -> int:
    if update.effective_chat is None:
        raise UnexpectedUpdate("no chat in this update")
    return update.effective_chat.id


def user_id_of(update: Update) -> int:
    if update.effective_user is None:
        raise UnexpectedUpdate("no user in this update")
    return update.effective_user.id


def button_match(pattern: re.Pattern[str], update: Update) -> re.Match[str]:
    """``pattern`` matched against the pressed button's data: the pattern the callback's
    ``CallbackQueryHandler`` is registered with (so it matches), or a narrower one."""
    found = pattern.match(query_of(update).data or "")
    if found is None:
        raise UnexpectedUpdate("button data does not match the handler's pattern")
    return found


def user_data_of(context: CallbackContext[Any, dict, Any, Any]) -> dict:
    """``context.user_data``: there for every update with a user (all of ours, see above)."""
    if context.user_data is None:
        raise UnexpectedUpdate("no user in this update")
    return context.user_data
