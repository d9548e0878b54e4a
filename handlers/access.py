"""Who may use a handler, declared on the handler itself.

Every callback registered in ``handlers`` is decorated with ``@public`` or
``@requires(Role...)``; ``tests/test_access.py`` walks the registered handlers and fails
for an undeclared one, then tries every declared one as every role. A refusal is
answered kindly, changes nothing, and is written to the audit log.

Ownership ("is this client yours?") is checked by the services at the moment of use,
with the record id taken from a signed button payload (``bot.callbacks``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from telegram import Update
from telegram.ext import ConversationHandler

from bot.context import BotContext
from bot.db.models import Role

# A handler callback, or a job callback (context only) declared public
Callback = Callable[..., Coroutine[Any, Any, Any]]
F = TypeVar("F", bound=Callback)

ALLOWED_ROLES = "__allowed_roles__"  # None = public
EVERYONE = None


def public(callback: F) -> F:
    """Anyone may use this, enrolled or not (e.g. /help)."""
    setattr(callback, ALLOWED_ROLES, EVERYONE)
    return callback


def requires(*roles: Role) -> Callable[[F], F]:
    """Only these roles may use this. Admins may always do what staff do."""
    allowed = frozenset(roles) | ({Role.ADMIN} if Role.STAFF in roles else set())

    def decorate(callback: F) -> F:
        @functools.wraps(callback)
        async def guarded(update: Update, context: BotContext) -> Any:
            identity = await context.identity(update)
            if identity.role in allowed:
                return await callback(update, context)
            await refuse(update, context, what=_what(update), reason="role")
            return ConversationHandler.END

        setattr(guarded, ALLOWED_ROLES, allowed)
        return guarded  # type: ignore[return-value]

    return decorate


async def refuse(update: Update, context: BotContext, *, what: str, reason: str) -> None:
    """Say no, kindly, and record the attempt (without any content)."""
    identity = await context.identity(update)
    await context.services.audit.denied(identity, what, reason)
    text = context.services.content.text("access.denied", identity.language)
    if update.callback_query:
        await update.callback_query.answer(text, show_alert=True)
    elif update.effective_chat:
        await context.bot.send_message(update.effective_chat.id, text)


def allowed_roles(callback: Callable[..., Any]) -> frozenset[Role] | None | bool:
    """The declared roles; ``None`` for public; ``False`` when undeclared."""
    return getattr(callback, ALLOWED_ROLES, False)


def _what(update: Update) -> str:
    """The command or button action, never arguments or free text."""
    if update.callback_query and update.callback_query.data:
        return "button:" + update.callback_query.data.split("|", 1)[0].split(":", 1)[0][:32]
    message = update.effective_message
    if message and message.text and message.text.startswith("/"):
        return message.text.split()[0].split("@")[0][:32]
    return "message"
