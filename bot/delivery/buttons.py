"""Buttons under outbox messages, made at send time for the recipient.

A reminder (kind ``reminder``) gets "Start now", "Snooze 15 min" and "Skip today": their
labels are content (``outbox.buttons.reminder.*``, in the recipient's language) and their
data is a signed payload (bot.callbacks) naming the outbox row, made for the recipient's
Telegram id, so only they can press it. handlers/reminders.py answers them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from bot.callbacks import CallbackCodec
from bot.content import Content
from bot.db.delivery_models import OutboxKind

if TYPE_CHECKING:
    from bot.delivery.store import Claimed

#: kind -> rows of (label key under ``outbox.buttons.<kind>``, signed action)
LAYOUTS: dict[str, list[list[tuple[str, str]]]] = {
    OutboxKind.REMINDER.value: [
        [("start", "rem.start")],
        [("snooze", "rem.snooze"), ("skip", "rem.skip")],
    ],
}


class OutboxButtons:
    """``buttons(row)``: the inline keyboard for a claimed row, or None."""

    def __init__(self, content: Content, callbacks: CallbackCodec) -> None:
        self._content = content
        self._callbacks = callbacks

    def __call__(self, row: Claimed) -> InlineKeyboardMarkup | None:
        layout = LAYOUTS.get(str(row.kind))
        if layout is None or row.body is not None:
            return None
        return InlineKeyboardMarkup(
            [
                [
                    InlineKeyboardButton(
                        self._content.text(f"outbox.buttons.{row.kind}.{label}", row.language),
                        callback_data=self._callbacks.pack(row.chat_id, action, row.id),
                    )
                    for label, action in buttons
                ]
                for buttons in layout
            ]
        )
