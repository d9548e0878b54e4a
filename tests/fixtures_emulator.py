"""Fixtures and helpers for tests that run against the Bot API emulator.

Use with ``from tests.fixtures_emulator import emu, tg_bot  # noqa: F401`` (pytest finds imported fixtures).
"""

from __future__ import annotations

import asyncio
import struct
import zlib
from collections.abc import AsyncIterator, Callable

import pytest
import telegram

from bot.sandbox.emulator import BotApiEmulator


@pytest.fixture
async def emu() -> AsyncIterator[BotApiEmulator]:
    """A running emulator."""
    async with BotApiEmulator() as emulator:
        yield emulator


@pytest.fixture
async def tg_bot(emu: BotApiEmulator) -> AsyncIterator[telegram.Bot]:
    """python-telegram-bot's own Bot, talking HTTP to ``emu``."""
    async with telegram.Bot(token=emu.token, base_url=emu.base_url, base_file_url=emu.base_file_url) as bot:
        yield bot


async def eventually(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    """Wait until ``condition()`` holds, failing after ``timeout`` seconds (generous: it
    returns as soon as the condition holds, and a busy machine must not fail the test)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"condition still false after {timeout}s")
        await asyncio.sleep(0.01)


def png_bytes(width: int, height: int) -> bytes:
    """A valid, all-black RGB PNG image."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\x00\x00\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
