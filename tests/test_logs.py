"""The privacy filter: what people wrote never reaches a log line."""

from __future__ import annotations

import io
import logging

import pytest

from bot.logs import PrivacyFilter, SeenTexts, configure_logging

TOKEN = "123456789:AAAAbbbbCCCCddddEEEEffffGGGGhhhhIII"


@pytest.fixture
def captured():
    stream = io.StringIO()
    seen = SeenTexts()
    handler = logging.StreamHandler(stream)
    handler.addFilter(PrivacyFilter(token=TOKEN, seen=seen))
    root = logging.getLogger()
    old_handlers, old_level = root.handlers[:], root.level
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG)
    yield stream, seen
    root.handlers[:] = old_handlers
    root.setLevel(old_level)


def test_library_debug_records_are_dropped_and_arguments_scrubbed(captured):
    stream, _ = captured
    logging.getLogger("telegram.ext.ExtBot").debug("Calling sendMessage with %s", {"text": "secret words"})
    logging.getLogger("telegram.ext.Application").info("Processing %s update %d", "secret words", 7)
    logged = stream.getvalue()
    assert "secret words" not in logged
    assert "Calling sendMessage" not in logged
    assert "Processing <str> update 7" in logged


def test_exception_messages_are_withheld_but_frames_kept(captured):
    stream, _ = captured
    try:
        int("my private answer")
    except ValueError:
        logging.getLogger("bot.something").exception("Parsing failed")
    logged = stream.getvalue()
    assert "my private answer" not in logged
    assert "builtins.ValueError (message withheld)" in logged
    assert "test_logs.py" in logged


def test_texts_people_sent_are_redacted_everywhere(captured):
    stream, seen = captured
    seen.add("I feel unsafe tonight")
    logging.getLogger("handlers.oops").warning("Got %s", "I feel unsafe tonight, really")
    logged = stream.getvalue()
    assert "unsafe" not in logged and "[redacted], really" in logged


def test_the_token_is_never_printed(captured):
    stream, _ = captured
    logging.getLogger("bot.runtime").info("URL is https://api.telegram.org/bot%s/getMe", TOKEN)
    assert TOKEN not in stream.getvalue() and "<token>" in stream.getvalue()


def test_configure_logging_quiets_httpx():
    stream = io.StringIO()
    root = logging.getLogger()
    old_handlers, old_level = root.handlers[:], root.level
    try:
        configure_logging("DEBUG", stream=stream, token=TOKEN)
        logging.getLogger("httpx").info("HTTP Request: POST https://api.telegram.org/bot%s/getUpdates", TOKEN)
        assert stream.getvalue() == ""
    finally:
        root.handlers[:] = old_handlers
        root.setLevel(old_level)


def test_the_error_handler_logs_every_frame_and_no_message():
    from handlers.errors import stack_of

    def inner(secret: str) -> None:
        raise ValueError(f"bad value {secret}")

    def outer() -> None:
        try:
            inner("MARKER-typed-by-a-person")
        except ValueError as exc:
            raise RuntimeError("wrapped MARKER-typed-by-a-person") from exc

    try:
        outer()
    except RuntimeError as exc:
        stack = stack_of(exc)
    assert "MARKER" not in stack
    lines = stack.splitlines()
    assert lines[0] == "ValueError:" and "RuntimeError:" in lines
    assert any(line.strip().startswith("test_logs.py:") and line.endswith("in inner") for line in lines)
    assert any(line.endswith("in outer") for line in lines)
    assert any(line.endswith("in test_the_error_handler_logs_every_frame_and_no_message") for line in lines)
