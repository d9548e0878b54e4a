"""/summaries: a therapist has their readiness summaries of the last 30 days sent again.

    /summaries ──► some queued again ──► "Sending you again … N" (the documents follow
               │                          through the outbox, each with its caption)
               ├─► none ────────────────► "There are none of the last 30 days"
               └─► (also) some waiting ─► "N wait for your key: /setkey"

One command, one answer, no conversation state and no buttons. Only the asker's own
summaries, of clients still linked to them (bot.services.summaries ``resend``); staff, admins
and clients are refused. The chat gets counts only: the summaries themselves are the
encrypted documents.
"""

from __future__ import annotations

from telegram import Update
from telegram.ext import BaseHandler, CommandHandler

from bot.context import BotContext
from bot.db.models import Role
from bot.services.invites import NotAllowed
from handlers.access import refuse, requires
from handlers.common import say


@requires(Role.THERAPIST)
async def summaries(update: Update, context: BotContext) -> None:
    identity = await context.identity(update)
    try:
        result = await context.services.summaries.resend(identity)
    except NotAllowed as refused:  # their role changed a moment ago
        await refuse(update, context, what="/summaries", reason=refused.reason)
        return
    await say(update, context, "summary.resent" if result.queued else "summary.none", count=result.queued)
    if result.waiting:
        await say(update, context, "summary.waiting", count=result.waiting)


def build() -> list[BaseHandler]:
    return [CommandHandler("summaries", summaries)]
