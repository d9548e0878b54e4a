"""Command menus per role and language, and the bot's profile texts (from content)."""

from __future__ import annotations

import logging

from telegram import Bot, BotCommand, BotCommandScopeChat, BotCommandScopeDefault
from telegram.error import BadRequest, Forbidden

from bot.content import Content
from bot.services.people import Identity

_log = logging.getLogger(__name__)


class CommandMenus:
    def __init__(self, content: Content) -> None:
        self._content = content

    def commands(self, menu: str, language: str) -> list[BotCommand]:
        return [BotCommand(c.command, c.description) for c in self._content.commands(menu, language)]

    async def apply_defaults(self, bot: Bot) -> None:
        """The menu and profile for people without a role, in every language we have.
        Telegram shows the language-specific one to users of that language, else the default."""
        default = self._content.default_language
        for language in self._content.languages:
            code = None if language == default else language
            await bot.set_my_commands(
                self.commands("everyone", language), scope=BotCommandScopeDefault(), language_code=code
            )
            await bot.set_my_description(
                self._content.text("profile.description", language), language_code=code
            )
            await bot.set_my_short_description(
                self._content.text("profile.short_description", language), language_code=code
            )

    async def apply(self, bot: Bot, identity: Identity) -> None:
        """This person's menu, in their language, in their own chat only."""
        await bot.set_my_commands(
            self.commands(identity.menu, identity.language),
            scope=BotCommandScopeChat(chat_id=identity.telegram_id),
        )

    async def apply_quietly(self, bot: Bot, identity: Identity) -> None:
        """As ``apply``, for start-up: Telegram refuses chats that never talked to the bot."""
        try:
            await self.apply(bot, identity)
        except (BadRequest, Forbidden) as exc:
            _log.info("Menu not set for a configured person yet (%s)", type(exc).__name__)
