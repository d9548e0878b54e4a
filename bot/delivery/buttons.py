"""Buttons under outbox messages, made at send time for the recipient.

A reminder (kind ``reminder``) gets "Start now", "Snooze 15 min" and "Skip today": their
labels are content (``outbox.buttons.reminder.*``, in the recipient's language) and their
data is a signed payload (bot.callbacks) naming the outbox row, made for the recipient's
Telegram id, so only they can press it. handlers/exercises answers Start now,
handlers/reminders.py the other two.

An appointment reminder (content key ``outbox.appointment_reminder``; a notice, since the
outbox's kinds are fixed by the schema) gets "I'll be there" and "I need to reschedule",
answered by handlers/appointments.py. Its layout is chosen by content key
(``CONTENT_LAYOUTS``), labels under ``outbox.buttons.appointment.*``.
A check-in prompt or its reminder (kind ``check_in_prompt``) gets "Start my check-in"
(``outbox.buttons.check_in_prompt.start``), signed the same way and answered by
handlers/checkin.py, which checks that the row is the presser's own prompt.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from bot.callbacks import CallbackCodec
from bot.content import Content
from bot.db.delivery_models import OutboxKind

if TYPE_CHECKING:
    from bot.delivery.store import Claimed

# The signed actions under a delivered reminder (the id is the outbox row's). Start now is
# answered by handlers/exercises, Snooze and Skip by handlers/reminders.py.
REMINDER_START = "rem.start"
REMINDER_SNOOZE = "rem.snooze"
REMINDER_SKIP = "rem.skip"
# Under an appointment reminder (the id is the outbox row's): handlers/appointments.py.
APPOINTMENT_ATTENDING = "ap.yes"
APPOINTMENT_RESCHEDULE = "ap.resched"
APPOINTMENT_REMINDER_KEY = "outbox.appointment_reminder"
# Under a check-in prompt (the id is the outbox row's): handlers/checkin.py.
CHECK_IN_START = "ci.start"

#: kind -> rows of (label key under ``outbox.buttons.<kind>``, signed action)
LAYOUTS: dict[str, list[list[tuple[str, str]]]] = {
    OutboxKind.REMINDER.value: [
        [("start", REMINDER_START)],
        [("snooze", REMINDER_SNOOZE), ("skip", REMINDER_SKIP)],
    ],
    OutboxKind.CHECK_IN_PROMPT.value: [[("start", CHECK_IN_START)]],
}

#: content key -> (label group under ``outbox.buttons``, rows of (label key, signed action))
CONTENT_LAYOUTS: dict[str, tuple[str, list[list[tuple[str, str]]]]] = {
    APPOINTMENT_REMINDER_KEY: (
        "appointment",
        [[("attending", APPOINTMENT_ATTENDING)], [("reschedule", APPOINTMENT_RESCHEDULE)]],
    ),
}


class OutboxButtons:
    """``buttons(row)``: the inline keyboard for a claimed row, or None."""

    def __init__(self, content: Content, callbacks: CallbackCodec) -> None:
        self._content = content
        self._callbacks = callbacks

    def __call__(self, row: Claimed) -> InlineKeyboardMarkup | None:
        if row.body is not None:
            return None
        group, layout = str(row.kind), LAYOUTS.get(str(row.kind))
        if row.content_key in CONTENT_LAYOUTS:
            group, layout = CONTENT_LAYOUTS[row.content_key]
        if layout is None:
            return None
        return InlineKeyboardMarkup(
            [
                [
                    InlineKeyboardButton(
                        self._content.text(f"outbox.buttons.{group}.{label}", row.language),
                        callback_data=self._callbacks.pack(row.chat_id, action, row.id),
                    )
                    for label, action in buttons
                ]
                for buttons in layout
            ]
        )
