"""The Bot API emulator, exercised through python-telegram-bot's own HTTP client."""

from __future__ import annotations

import asyncio
import datetime as dtm
import os
import socket
from typing import Any

import aiohttp
import pytest
import telegram
from aiohttp import web
from telegram import BotCommand, BotCommandScopeChat, InlineKeyboardButton, InlineKeyboardMarkup, MessageEntity
from telegram.error import (
    BadRequest,
    Conflict,
    EndPointNotFound,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TimedOut,
)
from telegram.ext import ApplicationBuilder, CommandHandler, ContextTypes

from bot.sandbox.emulator import BotApiEmulator, FloodLimits
from bot.sandbox.emulator.markup import MarkupError, parse_text
from tests.fixtures_emulator import emu, eventually, png_bytes, tg_bot  # noqa: F401

pytestmark = pytest.mark.timeout(20)


@pytest.fixture(autouse=True)
def _retry_after_as_timedelta(monkeypatch: pytest.MonkeyPatch) -> None:
    """Opt in to PTB's future RetryAfter.retry_after type (and out of its deprecation warning)."""
    monkeypatch.setenv("PTB_TIMEDELTA", "true")

KEYBOARD = InlineKeyboardMarkup([[InlineKeyboardButton("Next", callback_data="next"),
                                  InlineKeyboardButton("Back", callback_data="back")],
                                 [InlineKeyboardButton("Site", url="https://example.org")]])


async def started_user(emu: BotApiEmulator, tg_bot: telegram.Bot, **kwargs: Any) -> Any:
    """A person who has written to the bot (so that it may write back), with their update confirmed."""
    user = emu.user(**kwargs)
    await user.send("/start")
    updates = await tg_bot.get_updates()
    await tg_bot.get_updates(offset=updates[-1].update_id + 1)
    return user


# ---------------------------------------------------------------------- identity & wire


async def test_get_me(tg_bot: telegram.Bot) -> None:
    me = await tg_bot.get_me()
    assert (me.id, me.username, me.first_name, me.is_bot) == (7000000001, "imrs_companion_bot", "ImRS Companion", True)
    assert tg_bot.token.split(":")[0] == "7000000001" and len(tg_bot.token.split(":")[1]) == 35


async def test_wrong_or_malformed_token_and_unknown_method(emu: BotApiEmulator, tg_bot: telegram.Bot) -> None:
    wrong = telegram.Bot(token="7000000001:" + "x" * 35, base_url=emu.base_url)
    with pytest.raises(InvalidToken, match="Unauthorized"):
        await wrong.get_me()
    malformed = telegram.Bot(token="not-a-token", base_url=emu.base_url)
    with pytest.raises(InvalidToken, match="Not Found"):
        await malformed.get_me()
    with pytest.raises(EndPointNotFound):
        await tg_bot.do_api_request("sendHologram", api_kwargs={"chat_id": 1})
    assert emu.calls[-1].method == "sendHologram"
    assert emu.failures[-1].status == 404


async def test_accepts_get_query_json_and_form_bodies(emu: BotApiEmulator, tg_bot: telegram.Bot) -> None:
    user = await started_user(emu, tg_bot)
    url = f"{emu.base_url}{emu.token}"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/GETME") as response:
            assert (await response.json())["result"]["username"] == "imrs_companion_bot"
        keyboard = {"inline_keyboard": [[{"text": "A", "callback_data": "a"}]]}
        body = {"chat_id": str(user.id), "text": "123", "reply_markup": keyboard}
        async with http.post(f"{url}/sendMessage", json=body) as response:
            assert response.status == 200
            assert (await response.json())["result"]["text"] == "123"
        form = {"chat_id": str(user.id), "text": "true", "protect_content": "true"}
        async with http.post(f"{url}/sendmessage", data=form) as response:
            answer = await response.json()
            assert answer["result"]["text"] == "true" and answer["result"]["has_protected_content"] is True
        async with http.post(f"{url}/sendMessage", data={"chat_id": str(user.id)}) as response:
            assert (response.status, await response.json()) == (
                400, {"ok": False, "error_code": 400, "description": "Bad Request: message text is empty"})
    assert emu.calls[-2] == ("sendMessage", {"chat_id": user.id, "text": "true", "protect_content": True})
    assert [m.text for m in user.messages] == ["123", "true"]
    assert user.messages[0].buttons == [[("A", "a")]]


# ------------------------------------------------------------------------------ updates


async def test_get_updates_redelivers_until_a_later_offset_confirms(emu: BotApiEmulator, tg_bot: telegram.Bot) -> None:
    user = emu.user()
    await user.send("one")
    await user.send("two")
    first = await tg_bot.get_updates()
    assert [u.message.text for u in first] == ["one", "two"]
    assert [u.update_id for u in await tg_bot.get_updates()] == [u.update_id for u in first]
    assert [u.message.text for u in await tg_bot.get_updates(offset=first[0].update_id + 1)] == ["two"]
    assert [u.message.text for u in await tg_bot.get_updates(limit=5)] == ["two"]
    assert await tg_bot.get_updates(offset=first[1].update_id + 1) == ()
    assert emu.pending_updates == []


async def test_long_poll_answers_as_soon_as_an_update_arrives(emu: BotApiEmulator, tg_bot: telegram.Bot) -> None:
    user = emu.user()
    loop = asyncio.get_running_loop()
    started = loop.time()
    poll = asyncio.create_task(tg_bot.get_updates(timeout=30))
    await asyncio.sleep(0.2)
    assert not poll.done()
    await user.send("hello")
    updates = await asyncio.wait_for(poll, 15)
    assert [u.message.text for u in updates] == ["hello"]
    assert loop.time() - started < 15  # well before the 30 s timeout, even on a busy machine


async def test_long_poll_without_updates_answers_after_timeout(tg_bot: telegram.Bot) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await tg_bot.get_updates(timeout=1) == ()
    assert 0.9 <= loop.time() - started < 5  # not at once, and not much later (busy machines)


async def test_new_get_updates_terminates_the_waiting_one(emu: BotApiEmulator, tg_bot: telegram.Bot) -> None:
    async with telegram.Bot(token=emu.token, base_url=emu.base_url) as second_instance:
        waiting = asyncio.create_task(tg_bot.get_updates(timeout=10))
        await asyncio.sleep(0.2)
        assert await second_instance.get_updates(timeout=0) == ()
        with pytest.raises(Conflict, match="terminated by other getUpdates request"):
            await asyncio.wait_for(waiting, 2)


async def test_allowed_updates_filters_new_updates(emu: BotApiEmulator, tg_bot: telegram.Bot) -> None:
    user = emu.user()
    await tg_bot.get_updates(allowed_updates=["callback_query"])
    await user.send("ignored")
    assert await tg_bot.get_updates() == ()
    await tg_bot.get_updates(allowed_updates=[])
    await user.send("seen")
    assert [u.message.text for u in await tg_bot.get_updates()] == ["seen"]


async def test_webhook_delivery_with_secret_and_retries(emu: BotApiEmulator, tg_bot: telegram.Bot) -> None:
    received: list[tuple[str | None, dict[str, Any]]] = []
    failures_left = [2]

    async def hook(request: web.Request) -> web.Response:
        received.append((request.headers.get("X-Telegram-Bot-Api-Secret-Token"), await request.json()))
        if failures_left[0]:
            failures_left[0] -= 1
            return web.Response(status=500)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    try:
        user = emu.user()
        assert await tg_bot.set_webhook(url, secret_token="s3cret_Token-1")
        await user.send("first")
        await user.send("second")
        await eventually(lambda: len(received) == 4 and not emu.pending_updates)
        assert [body["message"]["text"] for _, body in received] == ["first", "first", "first", "second"]
        assert {secret for secret, _ in received} == {"s3cret_Token-1"}

        info = await tg_bot.get_webhook_info()
        assert (info.url, info.pending_update_count) == (url, 0)
        assert info.last_error_message == "Wrong response from the webhook: 500 Internal Server Error"
        assert emu.webhook is not None and emu.webhook.secret_token == "s3cret_Token-1"
        with pytest.raises(Conflict, match="can't use getUpdates method while webhook is active"):
            await tg_bot.get_updates()

        assert await tg_bot.delete_webhook()
        await user.send("third")
        assert [u.message.text for u in await tg_bot.get_updates()] == ["third"]
        assert len(received) == 4
    finally:
        await runner.cleanup()


async def test_webhook_must_be_local(tg_bot: telegram.Bot) -> None:
    with pytest.raises(BadRequest, match="loopback"):
        await tg_bot.set_webhook("https://example.org/hook")


# --------------------------------------------------------------------------- validation


async def _send(bot: telegram.Bot, chat_id: int, **kwargs: Any) -> Any:
    return await bot.send_message(chat_id, **{"text": "x", **kwargs})


VALIDATION_CASES: dict[str, tuple[Any, str]] = {
    "empty text": (lambda b, c: _send(b, c, text=""), "message text is empty"),
    "blank text": (lambda b, c: _send(b, c, text=" \n\t "), "message text is empty"),
    "empty after markup": (lambda b, c: _send(b, c, text="<b> </b>", parse_mode="HTML"), "message text is empty"),
    "4097 characters": (lambda b, c: _send(b, c, text="a" * 4097), "message is too long"),
    "caption of 1025": (lambda b, c: b.send_document(c, b"x", filename="a.txt", caption="c" * 1025),
                        "message caption is too long"),
    "callback_data of 65 bytes": (
        lambda b, c: _send(b, c, reply_markup={"inline_keyboard": [[{"text": "B", "callback_data": "é" * 32 + "x"}]]}),
        "BUTTON_DATA_INVALID"),
    "button without action": (
        lambda b, c: _send(b, c, reply_markup={"inline_keyboard": [[{"text": "B"}]]}),
        "can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard"),
    "keyboard not an array": (
        lambda b, c: _send(b, c, reply_markup={"inline_keyboard": {"text": "B"}}),
        'field "inline_keyboard" of the InlineKeyboardMarkup must be an Array'),
    "row not an array": (
        lambda b, c: _send(b, c, reply_markup={"inline_keyboard": [{"text": "B", "callback_data": "b"}]}),
        'field "inline_keyboard" of the InlineKeyboardMarkup must be an Array of Arrays'),
    "unclosed HTML tag": (lambda b, c: _send(b, c, text="<b>bold", parse_mode="HTML"),
                          'can\'t parse entities: Can\'t find end tag corresponding to start tag "b"'),
    "unsupported HTML tag": (lambda b, c: _send(b, c, text="a <br> b", parse_mode="HTML"),
                             'can\'t parse entities: Unsupported start tag "br" at byte offset 2'),
    "mismatched HTML tags": (
        lambda b, c: _send(b, c, text="<b><i>x</b></i>", parse_mode="HTML"),
        'can\'t parse entities: Unmatched end tag at byte offset 7, expected "</i>", found "</b>"'),
    "unescaped MarkdownV2": (
        lambda b, c: _send(b, c, text="Done.", parse_mode="MarkdownV2"),
        "can't parse entities: Character '.' is reserved and must be escaped with the preceding '\\'"),
    "unclosed MarkdownV2": (lambda b, c: _send(b, c, text="*bold", parse_mode="MarkdownV2"),
                            "can't parse entities: Can't find end of Bold entity at byte offset 0"),
    "unknown parse_mode": (lambda b, c: _send(b, c, parse_mode="HTML5"), "unsupported parse_mode"),
    "unknown chat": (lambda b, c: _send(b, 424242), "chat not found"),
    "edit of an unknown message": (lambda b, c: b.edit_message_text("new", chat_id=c, message_id=999),
                                   "message to edit not found"),
    "delete of an unknown message": (lambda b, c: b.delete_message(c, 999), "message to delete not found"),
    "reply to an unknown message": (lambda b, c: _send(b, c, reply_to_message_id=999),
                                    "message to be replied not found"),
    "unknown file id": (lambda b, c: b.send_document(c, "BQACAgIAAxkBAAInvalid"),
                        "wrong file identifier/HTTP URL specified"),
    "photo from a URL": (lambda b, c: b.send_photo(c, "https://example.org/cat.jpg"), "failed to get HTTP URL content"),
    "photo that is no image": (lambda b, c: b.send_photo(c, b"not an image", filename="x.jpg"), "IMAGE_PROCESS_FAILED"),
}


@pytest.mark.parametrize("case", list(VALIDATION_CASES))
async def test_validation_answers_bad_request_like_telegram(case: str, emu: BotApiEmulator,
                                                            tg_bot: telegram.Bot) -> None:
    user = await started_user(emu, tg_bot)
    call, description = VALIDATION_CASES[case]
    with pytest.raises(BadRequest):
        await call(tg_bot, user.id)
    assert emu.failures[-1].status == 400
    assert emu.failures[-1].description == f"Bad Request: {description}"
    assert user.messages == []


async def test_limits_count_text_after_entity_parsing(emu: BotApiEmulator, tg_bot: telegram.Bot) -> None:
    user = await started_user(emu, tg_bot)
    await tg_bot.send_message(user.id, "<b>" + "a" * 4096 + "</b>", parse_mode="HTML")
    data_64_bytes = "é" * 32
    await tg_bot.send_message(user.id, "ok", reply_markup=InlineKeyboardMarkup(
        [[InlineKeyboardButton("B", callback_data=data_64_bytes)]]))
    assert [len(m.text or "") for m in user.messages] == [4096, 2]


async def test_parse_modes_store_plain_text_and_entities(emu: BotApiEmulator, tg_bot: telegram.Bot) -> None:
    user = await started_user(emu, tg_bot)
    html = "  <b>Hi</b> &amp; <a href='https://imrs.example/x'>link</a>\n"
    sent = await tg_bot.send_message(user.id, html, parse_mode="HTML")
    assert sent.text == "Hi & link"
    assert sent.entities == (MessageEntity("bold", 0, 2), MessageEntity("text_link", 5, 4, url="https://imrs.example/x"))
    await tg_bot.send_message(user.id, "*Step 1\\.* _calm_ 🌿 ||s||", parse_mode="MarkdownV2")
    await tg_bot.send_message(user.id, "*old* _style_", parse_mode="Markdown")
    markdown_v2, legacy = user.messages[1:]
    assert (markdown_v2.text, markdown_v2.parse_mode) == ("Step 1. calm 🌿 s", "MarkdownV2")
    assert [(e["type"], e["offset"], e["length"]) for e in markdown_v2.entities] == [
        ("bold", 0, 7), ("italic", 8, 4), ("spoiler", 16, 1)]  # 🌿 is two UTF-16 code units
    assert (legacy.text, [e["type"] for e in legacy.entities]) == ("old style", ["bold", "italic"])


MARKUP_ERRORS = [
    ("🏟 🏟&lt;<abacaba", "HTML", "Unclosed start tag at byte offset 13"),
    ("🏟 🏟&lt;<abac aba>", "HTML", 'Unsupported start tag "abac" at byte offset 13'),
    ("🏟 🏟&lt;<i   =aba>", "HTML", 'Empty attribute name in the tag "i" at byte offset 13'),
    ("🏟 🏟&lt;<i    aba  =  190azAz-.,", "HTML", "Unexpected end of name token at byte offset 27"),
    ("🏟 🏟&lt;<b></b></", "HTML", "Unexpected end tag at byte offset 20"),
    ("🏟 🏟&lt;<i>a</i   ", "HTML", "Unclosed end tag at byte offset 17"),
    ('<span class="x">a</span>', "HTML", 'Tag "span" must have class "tg-spoiler" at byte offset 0'),
    ("🏟 🏟_abac * asd ", "MarkdownV2", "Can't find end of Bold entity at byte offset 15"),
    ("🏟 🏟_🏟 🏟__", "MarkdownV2", "Can't find end of Underline entity at byte offset 19"),
    ("[telegram\\.org](asd", "MarkdownV2", "Can't find end of a URL at byte offset 16"),
    ("🏟 🏟```a ", "MarkdownV2", "Can't find end of PreCode entity at byte offset 9"),
    ("a > b", "MarkdownV2", "Character '>' is reserved and must be escaped with the preceding '\\'"),
    ("_x", "Markdown", "Can't find end of the entity starting at byte offset 0"),
]


@pytest.mark.parametrize(("markup", "mode", "error"), MARKUP_ERRORS)
def test_markup_errors_match_telegram(markup: str, mode: str, error: str) -> None:
    with pytest.raises(MarkupError) as caught:
        parse_text(markup, mode)
    assert str(caught.value) == error


MARKUP_RESULTS = [
    ("&ge;&lt;&gt;&amp;&quot;&#128578;&#x41;", "HTML", '&ge;<>&"🙂A', []),
    ("🏟 🏟<i>🏟 &gt;<b aba = caba>&lt🏟</b></i>", "HTML", "🏟 🏟🏟 ><🏟", [("italic", 5, 7), ("bold", 9, 3)]),
    ("<a>telegram.org</a> <a href=x>y</a>", "HTML", "telegram.org y", [("text_link", 0, 12)]),
    ('<pre><code class="language-py">x</code></pre>', "HTML", "x", [("pre", 0, 1)]),
    ("<blockquote expandable>q</blockquote><tg-spoiler>s</tg-spoiler>", "HTML", "qs",
     [("expandable_blockquote", 0, 1), ("spoiler", 1, 1)]),
    ("🏟 🏟_🏟 __🏟___", "MarkdownV2", "🏟 🏟🏟 🏟", [("italic", 5, 5), ("underline", 8, 2)]),
    ("abc\n>quoted\n>more\ndef", "MarkdownV2", "abc\nquoted\nmore\ndef", [("blockquote", 4, 12)]),
    ("`a_b` ```py\nprint(1)```", "MarkdownV2", "a_b print(1)", [("code", 0, 3), ("pre", 4, 8)]),
    ("[site](https://telegram.dog?)", "MarkdownV2", "site", [("text_link", 0, 4)]),
]


@pytest.mark.parametrize(("markup", "mode", "text", "entities"), MARKUP_RESULTS)
def test_markup_parses_like_telegram(markup: str, mode: str, text: str, entities: list[tuple[str, int, int]]) -> None:
    parsed_text, parsed = parse_text(markup, mode)
    assert parsed_text == text
    assert [(e["type"], e["offset"], e["length"]) for e in parsed] == entities


# ------------------------------------------------------------------- failures & limits


async def test_injected_429_raises_retry_after(emu: BotApiEmulator, tg_bot: telegram.Bot) -> None:
    user = await started_user(emu, tg_bot)
    fault = emu.inject("sendMessage", status=429, retry_after=7)
    with pytest.raises(RetryAfter) as caught:
        await tg_bot.send_message(user.id, "hi")
    assert caught.value.retry_after == dtm.timedelta(seconds=7)
    assert emu.failures[-1].description == "Too Many Requests: retry after 7"
    await tg_bot.send_message(user.id, "hi")  # count=1: only the first call was spoiled
    assert fault.hits == 1 and [m.text for m in user.messages] == ["hi"]


@pytest.mark.parametrize("status", [500, 502])
async def test_injected_5xx_raises_network_error(status: int, emu: BotApiEmulator, tg_bot: telegram.Bot) -> None:
    user = await started_user(emu, tg_bot)
    emu.inject(None, status=status, chat_id=user.id, count=None)
    with pytest.raises(NetworkError) as caught:
        await tg_bot.send_message(user.id, "hi")
    assert not isinstance(caught.value, BadRequest)
    with pytest.raises(NetworkError):
        await tg_bot.send_chat_action(user.id, "typing")
    assert (await tg_bot.get_me()).username  # other chats and chat-less calls are unaffected
    emu.clear_faults()
    await tg_bot.send_message(user.id, "hi")


async def test_blocked_user_raises_forbidden(emu: BotApiEmulator, tg_bot: telegram.Bot) -> None:
    user = await started_user(emu, tg_bot)
    user.block()
    with pytest.raises(Forbidden, match="bot was blocked by the user"):
        await tg_bot.send_message(user.id, "are you there?")
    update = (await tg_bot.get_updates())[-1]
    assert update.my_chat_member.new_chat_member.status == "kicked"
    user.unblock()
    await tg_bot.send_message(user.id, "welcome back")
    assert [m.text for m in user.messages] == ["welcome back"]


async def test_bot_cannot_write_first(emu: BotApiEmulator, tg_bot: telegram.Bot) -> None:
    stranger = emu.user()
    with pytest.raises(Forbidden, match="bot can't initiate conversation with a user"):
        await tg_bot.send_message(stranger.id, "hello?")


async def test_injected_delay_slows_the_answer(emu: BotApiEmulator, tg_bot: telegram.Bot) -> None:
    emu.inject("getMe", delay=0.4, count=2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert (await tg_bot.get_me()).id == 7000000001
    assert loop.time() - started >= 0.4
    with pytest.raises(TimedOut):
        await tg_bot.get_me(read_timeout=0.1)


async def test_a_fault_for_a_number_of_seconds_ends_by_itself(emu: BotApiEmulator, tg_bot: telegram.Bot) -> None:
    user = await started_user(emu, tg_bot)
    fault = emu.inject(None, status=502, count=None, seconds=0.3)
    with pytest.raises(NetworkError):
        await tg_bot.send_message(user.id, "hi")
    fault.until = 0.0  # as if the 0.3 s had passed
    await tg_bot.send_message(user.id, "hi")
    assert fault.hits == 1 and [m.text for m in user.messages] == ["hi"]


@pytest.mark.parametrize("mode", ["refuse", "close"])
async def test_going_down_and_coming_back(mode: str, emu: BotApiEmulator, tg_bot: telegram.Bot) -> None:
    user = await started_user(emu, tg_bot)
    calls = len(emu.calls)
    polling = asyncio.create_task(tg_bot.get_updates(timeout=5))  # a long poll in progress
    await eventually(lambda: len(emu.calls) > calls)
    await emu.go_down(mode)  # type: ignore[arg-type]
    with pytest.raises(NetworkError):
        await polling  # its connection was closed without an answer
    with pytest.raises(NetworkError):
        await tg_bot.send_message(user.id, "lost")
    if mode == "refuse":
        with pytest.raises(OSError):
            socket.create_connection((emu.host, emu.port), timeout=1).close()
    await emu.come_back()
    await tg_bot.send_message(user.id, "back")
    assert [m.text for m in user.messages] == ["back"]
    await emu.go_down(mode, seconds=0.2)  # type: ignore[arg-type]
    await eventually(lambda: emu.down is None)
    assert (await tg_bot.get_me()).id == 7000000001


async def test_overall_flood_limit(emu: BotApiEmulator, tg_bot: telegram.Bot) -> None:
    alice = await started_user(emu, tg_bot)
    bob = await started_user(emu, tg_bot)
    now = [0.0]  # the limits' clock, moved by the test: a slow machine refills nothing
    emu.flood_clock = lambda: now[0]
    emu.flood = FloodLimits(overall_per_second=2, overall_burst=3)
    for chat in (alice, bob, alice):
        await tg_bot.send_message(chat.id, "ok")
    with pytest.raises(RetryAfter):
        await tg_bot.send_message(bob.id, "too much")
    assert emu.failures[-1].description == "Too Many Requests: retry after 1"
    await tg_bot.get_me()  # not a message: not limited
    now[0] += 0.55
    await tg_bot.send_message(bob.id, "refilled")


async def test_per_chat_flood_limit(emu: BotApiEmulator, tg_bot: telegram.Bot) -> None:
    alice = await started_user(emu, tg_bot)
    bob = await started_user(emu, tg_bot)
    now = [0.0]  # the limits' clock, moved by the test: a slow machine refills nothing
    emu.flood_clock = lambda: now[0]
    emu.flood = FloodLimits(overall_per_second=None, per_chat_per_second=10, per_chat_burst=2)
    await tg_bot.send_message(alice.id, "1")
    await tg_bot.send_message(alice.id, "2")
    with pytest.raises(RetryAfter):
        await tg_bot.send_message(alice.id, "3")
    await tg_bot.send_message(bob.id, "other chats are fine")
    now[0] += 0.15
    await tg_bot.send_message(alice.id, "3 again")
    assert [m.text for m in alice.messages] == ["1", "2", "3 again"]


# ------------------------------------------------------------------------------- files


async def test_document_upload_get_file_and_download(emu: BotApiEmulator, tg_bot: telegram.Bot) -> None:
    user = await started_user(emu, tg_bot)
    content = os.urandom(200_000)
    sent = await tg_bot.send_document(user.id, content, filename="summary.pdf", caption="<b>Your</b> summary",
                                      parse_mode="HTML", protect_content=True)
    assert (sent.document.file_name, sent.document.mime_type, sent.document.file_size) == (
        "summary.pdf", "application/pdf", len(content))
    assert sent.caption == "Your summary" and sent.has_protected_content
    file = await tg_bot.get_file(sent.document.file_id)
    assert bytes(await file.download_as_bytearray()) == content
    message = await user.next_message()
    assert message.document is not None and message.document.data == content and message.protect_content
    again = await tg_bot.send_document(user.id, sent.document.file_id)
    assert again.document.file_id == sent.document.file_id
    with pytest.raises(BadRequest):
        await tg_bot.send_photo(user.id, sent.document.file_id)


async def test_photo_upload_get_file_and_download(emu: BotApiEmulator, tg_bot: telegram.Bot) -> None:
    user = await started_user(emu, tg_bot)
    image = png_bytes(3, 2)
    sent = await tg_bot.send_photo(user.id, image, caption="calm place")
    photo = sent.photo[-1]
    assert (photo.width, photo.height, sent.caption) == (3, 2, "calm place")
    file = await tg_bot.get_file(photo.file_id)
    assert bytes(await file.download_as_bytearray()) == image
    with pytest.raises(BadRequest, match="Wrong file_id"):
        await tg_bot.get_file("nope")


# ----------------------------------------------------------- buttons, edits, commands


async def test_press_produces_a_callback_query_ptb_parses(emu: BotApiEmulator, tg_bot: telegram.Bot) -> None:
    user = await started_user(emu, tg_bot, first_name="Robin", username="robin")
    sent = await tg_bot.send_message(user.id, "Ready?", reply_markup=KEYBOARD)
    message = await user.next_message()
    assert message.buttons == [[("Next", "next"), ("Back", "back")], [("Site", "https://example.org")]]
    query_id = await user.press("Back")
    query = (await tg_bot.get_updates())[-1].callback_query
    assert (query.id, query.data, query.from_user.username, query.message.message_id) == (
        query_id, "back", "robin", sent.message_id)
    assert query.message.reply_markup == KEYBOARD
    await query.answer("Going back", show_alert=True)
    answer = await user.wait_for_callback_answer(query_id)
    assert (answer.text, answer["show_alert"]) == ("Going back", True)
    with pytest.raises(BadRequest, match="Query is too old"):
        await query.answer()
    await user.press(0)
    assert (await tg_bot.get_updates())[-1].callback_query.data == "next"
    with pytest.raises(AssertionError, match="sends no callback query"):
        await user.press("Site")
    with pytest.raises(AssertionError, match="no button 'Forward'"):
        await user.press("Forward")


async def test_edits_keep_history_and_follow_telegram_rules(emu: BotApiEmulator, tg_bot: telegram.Bot) -> None:
    user = await started_user(emu, tg_bot)
    sent = await tg_bot.send_message(user.id, "Step 1", reply_markup=KEYBOARD)
    message = await user.next_message()
    waiting = asyncio.create_task(user.wait_for_edit(message, timeout=2))
    await tg_bot.edit_message_text("Step 2", chat_id=user.id, message_id=sent.message_id, reply_markup=KEYBOARD)
    assert await waiting is message
    assert (message.text, [v.text for v in message.edits], message.buttons[0][0].text) == ("Step 2", ["Step 1"], "Next")
    with pytest.raises(BadRequest, match="Message is not modified"):
        await tg_bot.edit_message_text("Step 2", chat_id=user.id, message_id=sent.message_id, reply_markup=KEYBOARD)
    await tg_bot.edit_message_text("Done", chat_id=user.id, message_id=sent.message_id)
    assert message.reply_markup is None  # like Telegram: an edit without reply_markup drops the keyboard
    await tg_bot.edit_message_reply_markup(chat_id=user.id, message_id=sent.message_id, reply_markup=KEYBOARD)
    assert message.version == 3 and message.button_list[0].text == "Next"
    with pytest.raises(BadRequest, match="There is no caption in the message to edit"):
        await tg_bot.edit_message_caption(chat_id=user.id, message_id=sent.message_id, caption="c")
    assert await tg_bot.delete_message(user.id, sent.message_id)
    assert message.deleted and user.last_message is None
    with pytest.raises(BadRequest, match="Message to edit not found"):
        await tg_bot.edit_message_text("late", chat_id=user.id, message_id=sent.message_id)
    assert await tg_bot.delete_messages(user.id, [sent.message_id, 9999])  # missing ones are skipped
    assert [e.kind for e in user.events] == ["message", "edit", "edit", "edit", "delete"]


async def test_message_ids_are_per_chat_and_shared_with_the_person(emu: BotApiEmulator, tg_bot: telegram.Bot) -> None:
    alice = await started_user(emu, tg_bot)  # her /start is message 1
    bob = await started_user(emu, tg_bot)
    first = await tg_bot.send_message(alice.id, "a")
    assert await alice.send("b") == first.message_id + 1
    assert (await tg_bot.send_message(bob.id, "c")).message_id == 2
    reply = await tg_bot.send_message(alice.id, "d", reply_to_message_id=first.message_id)
    assert reply.reply_to_message.text == "a" and reply.message_id == 4


async def test_deep_link_and_command_entities(emu: BotApiEmulator, tg_bot: telegram.Bot) -> None:
    user = emu.user()
    await user.send("/start abc")
    await user.send("/help@imrs_companion_bot now")
    await user.send("no /command here")
    start, help_, plain = [u.message for u in await tg_bot.get_updates()]
    assert start.text == "/start abc"
    assert start.entities == (MessageEntity("bot_command", 0, 6),)
    assert help_.parse_entities() == {MessageEntity("bot_command", 0, 24): "/help@imrs_companion_bot"}
    assert plain.entities == ()
    assert (start.chat.type, start.chat.id, start.from_user.id) == ("private", user.id, user.id)


async def test_commands_scopes_and_languages(emu: BotApiEmulator, tg_bot: telegram.Bot) -> None:
    user = await started_user(emu, tg_bot)
    await tg_bot.set_my_commands([BotCommand("start", "Begin"), BotCommand("help", "Help")])
    await tg_bot.set_my_commands([("start", "Anfangen")], language_code="de")
    await tg_bot.set_my_commands([("checkin", "Check in")], scope=BotCommandScopeChat(user.id))
    assert emu.commands[(("default",), "")] == [{"command": "start", "description": "Begin"},
                                                 {"command": "help", "description": "Help"}]
    assert [c.command for c in await tg_bot.get_my_commands(language_code="de")] == ["start"]
    assert emu.visible_commands(user.id) == [{"command": "checkin", "description": "Check in"}]
    await tg_bot.delete_my_commands(scope=BotCommandScopeChat(user.id))
    assert emu.visible_commands(user.id, language_code="de") == [{"command": "start", "description": "Anfangen"}]
    with pytest.raises(BadRequest, match="Bot_command_invalid"):
        await tg_bot.set_my_commands([("Start", "capital letters are not allowed")])
    await tg_bot.set_my_description("Between-session companion")
    await tg_bot.set_my_short_description("ImRS companion", language_code="en")
    assert (emu.descriptions, emu.short_descriptions) == ({"": "Between-session companion"}, {"en": "ImRS companion"})
    assert (await tg_bot.get_chat(user.id)).first_name == "Alex"


async def test_groups(emu: BotApiEmulator, tg_bot: telegram.Bot) -> None:
    group = emu.group(title="Skills group")
    member = emu.user(first_name="Kim")
    await group.send(member, "/help@imrs_companion_bot")
    message = (await tg_bot.get_updates())[-1].message
    assert (message.chat.type, message.chat.title, message.from_user.first_name) == ("group", "Skills group", "Kim")
    await message.reply_text("Here is help", reply_markup=KEYBOARD)
    assert (await group.next_message()).text == "Here is help"
    await group.press(member, "Next")
    query = (await tg_bot.get_updates())[-1].callback_query
    assert (query.message.chat.id, query.from_user.first_name) == (group.id, "Kim")
    with pytest.raises(Forbidden):  # writing in a group does not start a private chat
        await tg_bot.send_message(member.id, "psst")

    assert await tg_bot.leave_chat(group.id)
    left = (await tg_bot.get_updates())[-1].my_chat_member
    statuses = (left.old_chat_member.status, left.new_chat_member.status)
    assert statuses == ("member", "left") and left.from_user.id == tg_bot.id
    assert not group.bot_is_member
    with pytest.raises(Forbidden, match="bot is not a member of the group chat"):
        await tg_bot.send_message(group.id, "still here?")
    await group.send(member, "the bot does not see this")
    assert (await tg_bot.get_updates())[-1].my_chat_member is not None
    group.add_bot(member)
    assert (await tg_bot.get_updates())[-1].my_chat_member.new_chat_member.status == "member"
    await tg_bot.send_message(group.id, "back")


# --------------------------------------------------------------------- client helpers


async def test_next_message_timeout_explains_what_went_wrong(emu: BotApiEmulator, tg_bot: telegram.Bot) -> None:
    user = await started_user(emu, tg_bot)
    waiting = asyncio.create_task(user.next_message(timeout=0.5))
    await asyncio.sleep(0.05)
    with pytest.raises(BadRequest):
        await tg_bot.send_message(user.id, "<b>oops", parse_mode="HTML")
    await user.send("are you there?")
    with pytest.raises(AssertionError) as caught:
        await waiting
    report = str(caught.value)
    assert report.startswith(f"no new message from the bot in chat {user.id} within 0.5s")
    assert "failed call: sendMessage -> 400 Bad Request: can't parse entities" in report
    assert "1 update(s) still pending" in report


async def test_expect_silence(emu: BotApiEmulator, tg_bot: telegram.Bot) -> None:
    user = await started_user(emu, tg_bot)
    await user.expect_silence(0.1)

    async def speak_soon() -> None:
        await asyncio.sleep(0.05)
        await tg_bot.send_message(user.id, "boo")

    speaker = asyncio.create_task(speak_soon())
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(AssertionError, match="boo"):
        await user.expect_silence(20.0)
    assert loop.time() - started < 10.0  # fails as soon as the bot speaks, long before the window ends
    await speaker


# ---------------------------------------------------------------- a real Application


async def test_application_polling_loop_against_the_emulator(emu: BotApiEmulator) -> None:
    async def start(update: telegram.Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None
        await update.effective_message.reply_text(f"Welcome! payload={context.args}")

    app = ApplicationBuilder().token(emu.token).base_url(emu.base_url).base_file_url(emu.base_file_url).build()
    app.add_handler(CommandHandler("start", start))
    user = emu.user()
    async with app:
        await app.start()
        assert app.updater is not None
        await app.updater.start_polling(poll_interval=0, timeout=1)
        try:
            await user.send("/start abc")
            assert (await user.next_message()).text == "Welcome! payload=['abc']"
            await user.send("/start")
            assert (await user.next_message()).text == "Welcome! payload=[]"
        finally:
            await app.updater.stop()
            await app.stop()
    assert emu.pending_updates == []
    assert not [f for f in emu.failures if f.method != "getUpdates"]


async def test_application_webhook_mode_against_the_emulator(emu: BotApiEmulator) -> None:
    async def start(update: telegram.Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None
        await update.effective_message.reply_text("Hello over the webhook")

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = ApplicationBuilder().token(emu.token).base_url(emu.base_url).build()
    app.add_handler(CommandHandler("start", start))
    user = emu.user()
    async with app:
        await app.start()
        assert app.updater is not None
        await app.updater.start_webhook(listen="127.0.0.1", port=port, url_path="telegram",
                                        webhook_url=f"http://127.0.0.1:{port}/telegram", secret_token="s" * 32)
        try:
            await user.send("/start")
            assert (await user.next_message()).text == "Hello over the webhook"
            assert emu.webhook is not None and emu.webhook["delivered"] == 1
        finally:
            await app.updater.stop()
            await app.stop()
