"""The callback context handlers receive: ``context.services`` and ``await context.identity()``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from telegram.ext import Application, CallbackContext, ExtBot

from bot.flows import FLOWS_KEY

if TYPE_CHECKING:
    from bot.flows import Flows
    from bot.services import Services
    from bot.services.people import Identity

SERVICES_KEY = "services"
# bot_data: ``async hook(application, consuming: bool)`` called when this instance starts or
# stops consuming updates (bot.runtime); handlers register them (handlers/__init__.py).
CONSUMING_HOOKS_KEY = "on_consuming"
# bot_data: this instance's bot.delivery.leadership.UpdateConsumer (``.consuming``).
UPDATE_CONSUMER_KEY = "update_consumer"


class BotContext(CallbackContext[ExtBot, dict, dict, dict]):
    """One context per update (PTB reuses it across handler groups), so the identity lookup
    is done at most once per update."""

    def __init__(self, application: Application, chat_id: int | None = None, user_id: int | None = None):
        super().__init__(application=application, chat_id=chat_id, user_id=user_id)
        self._identity: Identity | None = None
        self.flow_handled: str | None = None  # the flow that handled this update (bot.flows)

    @property
    def services(self) -> Services:
        return self.application.bot_data[SERVICES_KEY]

    @property
    def flows(self) -> Flows:
        """The one-active-flow rule, and pausing a person's flow (bot.flows)."""
        return self.application.bot_data[FLOWS_KEY]

    async def identity(self, update: object) -> Identity:
        """Who is asking. Cached for the rest of this update."""
        from telegram import Update

        if self._identity is None:
            assert isinstance(update, Update) and update.effective_user is not None
            user = update.effective_user
            self._identity = await self.services.people.identify(
                user.id, user.first_name, user.language_code
            )
        return self._identity

    def remember_identity(self, identity: Identity) -> None:
        """Replace the cached identity after a change (e.g. a registration)."""
        self._identity = identity
