"""Services: what handlers call. Each owns its database work through repositories.

The ``Services`` container is built once per process (``bot.runtime.open_services``) and
reached from handlers as ``context.services``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.callbacks import CallbackCodec
from bot.config import Settings
from bot.content import Content
from bot.crypto.fields import FieldCrypto
from bot.crypto.keyring import Keyring
from bot.services.audit import AuditService
from bot.services.menus import CommandMenus
from bot.services.people import PeopleService


@dataclass
class Services:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    content: Content
    keyring: Keyring
    people: PeopleService
    menus: CommandMenus
    crypto: FieldCrypto  # encrypted columns: data keys (key store) + cache; sessions use it
    audit: AuditService
    callbacks: CallbackCodec  # signed button payloads

    async def close(self) -> None:
        try:
            await self.crypto.aclose()
        finally:
            await self.engine.dispose()
