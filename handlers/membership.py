"""A person blocks or unblocks the bot: Telegram sends a ``my_chat_member`` update.

Blocking makes the person inactive (the outbox queues nothing more for them); unblocking
makes them active again, so that their reminders reach them once more. Without this, a
client who blocked the bot for a while, or whose reminder met a 403 once, would never get
a reminder again. Private chats only: groups are refused before this (handlers/guard.py).
"""

from __future__ import annotations

from telegram import ChatMember, Update
from telegram.ext import ChatMemberHandler

from bot.context import BotContext
from handlers.access import public


@public  # a person's own relation to the bot, nothing else is touched
async def bot_status_changed(update: Update, context: BotContext) -> None:
    change = update.my_chat_member
    if change is None or change.from_user is None:
        return
    status = change.new_chat_member.status
    if status == ChatMember.BANNED:  # "kicked": they blocked the bot
        await context.services.people.set_reachable(change.from_user.id, False)
    elif status == ChatMember.MEMBER:  # unblocked (or started the chat)
        await context.services.people.set_reachable(change.from_user.id, True)


handler = ChatMemberHandler(bot_status_changed, ChatMemberHandler.MY_CHAT_MEMBER)
