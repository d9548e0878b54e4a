"""Telegram's parse_mode handling: HTML, MarkdownV2 and legacy Markdown to plain text plus entities.

The parsers follow TDLib's (``td/telegram/MessageEntity.cpp``), which is what the Bot API server
runs, closely enough that the same markup is accepted or rejected with the same error text
("Unsupported start tag ...", "Character '.' is reserved ..."). Offsets and lengths of the
resulting entities are in UTF-16 code units, as in the Bot API; error positions are UTF-8 byte
offsets into the markup, as Telegram reports them.

Not emulated: ``tg-time`` tags, expandable block quotes in MarkdownV2 (``**>``) and the
automatic url/mention/hashtag entities Telegram adds to plain text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

Entity = dict[str, Any]

_HTML_TAGS = frozenset(
    {"a", "b", "strong", "i", "em", "s", "strike", "del", "u", "ins", "tg-spoiler", "tg-emoji",
     "span", "pre", "code", "blockquote"}
)
_HTML_ENTITY_TYPES = {
    "b": "bold", "strong": "bold", "i": "italic", "em": "italic", "u": "underline", "ins": "underline",
    "s": "strikethrough", "strike": "strikethrough", "del": "strikethrough",
    "span": "spoiler", "tg-spoiler": "spoiler", "code": "code", "pre": "pre",
}
_NAMED_HTML_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
# TDLib's is_space; "\0" doubles as the end-of-text sentinel, exactly as in the C++ original.
_SPACES = frozenset(" \t\r\n\0\v")
# Whitespace Telegram trims from both ends of a message text or caption.
_TRIMMED = " \t\r\n\v\f"
_MARKDOWN_V2_RESERVED = frozenset("_*[]()~`>#+-=|{}.!")
_URL_SCHEMES = frozenset({"http", "https", "ftp", "tg", "ton"})
_HTML_SPECIAL = re.compile("[<&]")
_HOST_RE = re.compile(r"^[A-Za-z0-9\-_.\u0080-\uffff]+$")


class MarkupError(ValueError):
    """The markup cannot be parsed; the message is Telegram's, without the "can't parse entities: " prefix."""


def utf16_len(text: str) -> int:
    """Length of ``text`` in UTF-16 code units, the unit of Bot API entity offsets."""
    return len(text.encode("utf-16-le")) // 2


def _byte_offset(text: str, index: int) -> int:
    return len(text[:index].encode("utf-8", "surrogatepass"))


def parse_text(text: str, parse_mode: str | None) -> tuple[str, list[Entity]]:
    """Parse ``text`` according to ``parse_mode`` (case-insensitive; None or "" = plain text).

    Returns the plain text, trimmed like Telegram trims it, and its entities. Raises
    :class:`MarkupError` for malformed markup and ``KeyError`` for an unknown parse mode.
    """
    mode = (parse_mode or "").lower()
    entities: list[Entity]
    if mode == "":
        plain, entities = text, []
    elif mode == "html":
        plain, entities = parse_html(text)
    elif mode == "markdownv2":
        plain, entities = parse_markdown_v2(text)
    elif mode == "markdown":
        plain, entities = parse_markdown(text)
    else:
        raise KeyError(parse_mode)
    return trim(plain, entities)


def trim(text: str, entities: list[Entity]) -> tuple[str, list[Entity]]:
    """Strip leading and trailing whitespace, clipping entities to what is left (as Telegram does)."""
    stripped_left = text.lstrip(_TRIMMED)
    result = stripped_left.rstrip(_TRIMMED)
    shift = utf16_len(text) - utf16_len(stripped_left)
    end = utf16_len(result)
    clipped: list[Entity] = []
    for entity in entities:
        start = max(entity["offset"] - shift, 0)
        stop = min(entity["offset"] + entity["length"] - shift, end)
        if stop > start:
            clipped.append({**entity, "offset": start, "length": stop - start})
    return result, clipped


def _sorted(entities: list[Entity]) -> list[Entity]:
    return sorted(entities, key=lambda e: (e["offset"], -e["length"]))


def normalize_url(url: str) -> str | None:
    """TDLib's check_url in short: a usable link gets a scheme and a path, anything else is None."""
    url = url.strip()
    if not url:
        return None
    scheme_match = re.match(r"^([A-Za-z][A-Za-z0-9+.\-]*):", url)
    if scheme_match and scheme_match.group(1).lower() in ("tg", "ton"):
        return url
    if scheme_match and url[scheme_match.end():].startswith("//"):
        scheme = scheme_match.group(1).lower()
        if scheme not in _URL_SCHEMES:
            return None
        rest = url[scheme_match.end() + 2:]
    else:
        scheme, rest = "http", url
    cut = min((rest.find(c) for c in "/?#" if c in rest), default=len(rest))
    authority, tail = rest[:cut], rest[cut:]
    host = authority.rsplit("@", 1)[-1].split(":", 1)[0]
    if not host or "." not in host.strip(".") or not _HOST_RE.match(host):
        return None
    if not tail.startswith("/"):
        tail = "/" + tail
    return f"{scheme}://{authority}{tail}"


# --------------------------------------------------------------------------------------- HTML


def _decode_html_entity(text: str, pos: int) -> tuple[str, int] | None:
    """Decode the character reference at ``text[pos] == "&"``: (character, index after it) or None."""
    n = len(text)
    end = pos + 1
    if end < n and text[end] == "#":
        end += 1
        code = 0
        hexadecimal = end < n and text[end] == "x"
        if hexadecimal:
            end += 1
        digits = "0123456789abcdefABCDEF" if hexadecimal else "0123456789"
        while end < n and text[end] in digits:
            code = code * (16 if hexadecimal else 10) + int(text[end], 16)
            end += 1
            if code >= 0x10FFFF:
                return None
        if code == 0 or end - pos >= 10:
            return None
        if 0xD800 <= code <= 0xDFFF:
            raise MarkupError(
                "Text contains invalid Unicode characters after decoding HTML entities, "
                "check for unmatched surrogate code units"
            )
        char = chr(code)
    else:
        while end < n and text[end].isascii() and text[end].isalpha():
            end += 1
        named = _NAMED_HTML_ENTITIES.get(text[pos + 1:end])
        if named is None:
            return None
        char = named
    if end < n and text[end] == ";":
        end += 1
    return char, end


@dataclass
class _OpenTag:
    name: str
    argument: str
    offset: int  # UTF-16 offset in the result
    begin: int  # index into the result list of pieces (characters or runs of them)
    expandable: bool = False


def parse_html(text: str) -> tuple[str, list[Entity]]:
    """Telegram's HTML style: https://core.telegram.org/bots/api#html-style"""
    n = len(text)

    def at(index: int) -> str:
        return text[index] if index < n else "\0"

    result: list[str] = []
    utf16 = 0
    stack: list[_OpenTag] = []
    entities: list[Entity] = []
    i = 0
    while i < n:
        char = text[i]
        if char == "&":
            decoded = _decode_html_entity(text, i)
            if decoded is not None:
                char, i = decoded
                result.append(char)
                utf16 += utf16_len(char)
                continue
        if char != "<":
            # The run of plain characters up to the next tag or entity, in one piece.
            stop = _HTML_SPECIAL.search(text, i + 1)
            run = text[i:stop.start() if stop else n]
            result.append(run)
            utf16 += utf16_len(run)
            i += len(run)
            continue

        begin = i
        i += 1
        if at(i) != "/":
            while at(i) not in _SPACES and at(i) != ">":
                i += 1
            if at(i) == "\0":
                raise MarkupError(f"Unclosed start tag at byte offset {_byte_offset(text, begin)}")
            tag = text[begin + 1:i].lower()
            if tag not in _HTML_TAGS:
                raise MarkupError(f'Unsupported start tag "{tag}" at byte offset {_byte_offset(text, begin)}')
            argument, expandable, i = _parse_html_attributes(text, tag, begin, i)
            stack.append(_OpenTag(tag, argument, utf16, len(result), expandable))
            i += 1
            continue

        if not stack:
            raise MarkupError(f"Unexpected end tag at byte offset {_byte_offset(text, begin)}")
        while at(i) not in _SPACES and at(i) != ">":
            i += 1
        end_name = text[begin + 2:i]
        while at(i) in _SPACES and at(i) != "\0":
            i += 1
        if at(i) != ">":
            raise MarkupError(f"Unclosed end tag at byte offset {_byte_offset(text, begin)}")
        open_tag = stack.pop()
        if end_name and end_name != open_tag.name:
            raise MarkupError(
                f"Unmatched end tag at byte offset {_byte_offset(text, begin)}, "
                f'expected "</{open_tag.name}>", found "</{end_name}>"'
            )
        if utf16 > open_tag.offset:
            _close_html_entity(open_tag, utf16 - open_tag.offset, "".join(result[open_tag.begin:]), entities)
        i += 1

    if stack:
        raise MarkupError(f'Can\'t find end tag corresponding to start tag "{stack[-1].name}"')
    for entity in entities:
        entity.pop("_language", None)
    return "".join(result), _sorted(entities)


def _parse_html_attributes(text: str, tag: str, begin: int, i: int) -> tuple[str, bool, int]:
    """Parse the attributes of the start tag ``tag``; ``i`` is just after the tag name.

    Returns the tag's argument (href, language, span class, emoji id), whether a blockquote is
    expandable, and the index of the closing ">".
    """
    n = len(text)

    def at(index: int) -> str:
        return text[index] if index < n else "\0"

    argument = ""
    expandable = False
    while at(i) != ">":
        while at(i) != "\0" and at(i) in _SPACES:
            i += 1
        if at(i) == ">":
            break
        name_begin = i
        while at(i) not in _SPACES and at(i) not in "=>":
            i += 1
        name = text[name_begin:i]
        if not name:
            raise MarkupError(f'Empty attribute name in the tag "{tag}" at byte offset {_byte_offset(text, begin)}')
        while at(i) != "\0" and at(i) in _SPACES:
            i += 1
        if at(i) != "=":
            expandable = expandable or (tag == "blockquote" and name == "expandable")
            continue
        i += 1
        while at(i) != "\0" and at(i) in _SPACES:
            i += 1
        if at(i) == "\0":
            raise MarkupError(f'Unclosed start tag "{tag}" at byte offset {_byte_offset(text, begin)}')

        value: list[str] = []
        if at(i) not in "'\"":
            # An unquoted value is an HTML 2.0 name token: letters, digits, "." and "-".
            token_begin = i
            while at(i).isascii() and (at(i).isalnum() or at(i) in ".-"):
                value.append(at(i))
                i += 1
            if at(i) not in _SPACES and at(i) != ">":
                raise MarkupError(f"Unexpected end of name token at byte offset {_byte_offset(text, token_begin)}")
        else:
            quote = at(i)
            i += 1
            while at(i) != quote and at(i) != "\0":
                if at(i) == "&":
                    decoded = _decode_html_entity(text, i)
                    if decoded is not None:
                        value.append(decoded[0])
                        i = decoded[1]
                        continue
                value.append(at(i))
                i += 1
            if at(i) == quote:
                i += 1
        if at(i) == "\0":
            raise MarkupError(f"Unclosed start tag at byte offset {_byte_offset(text, begin)}")

        joined = "".join(value)
        if tag == "a" and name == "href":
            argument = joined
        elif tag == "code" and name == "class" and joined.startswith("language-"):
            argument = joined[len("language-"):]
        elif tag == "span" and name == "class" and joined.startswith("tg-"):
            argument = joined[len("tg-"):]
        elif tag == "tg-emoji" and name == "emoji-id":
            argument = joined

    if tag == "span" and argument != "spoiler":
        raise MarkupError(f'Tag "span" must have class "tg-spoiler" at byte offset {_byte_offset(text, begin)}')
    return argument, expandable, i


def _close_html_entity(tag: _OpenTag, length: int, inner_text: str, entities: list[Entity]) -> None:
    """Append the entity a closed, non-empty HTML tag stands for."""
    offset = tag.offset
    previous = entities[-1] if entities else None
    same_range = previous is not None and previous["offset"] == offset and previous["length"] == length
    if tag.name == "a":
        url = normalize_url(tag.argument or inner_text)
        if url is not None:
            entities.append({"type": "text_link", "offset": offset, "length": length, "url": url})
    elif tag.name == "tg-emoji":
        if not tag.argument.isdigit() or tag.argument.startswith("0"):
            raise MarkupError("Invalid custom emoji identifier specified")
        entities.append({"type": "custom_emoji", "offset": offset, "length": length,
                         "custom_emoji_id": tag.argument})
    elif tag.name == "blockquote":
        kind = "expandable_blockquote" if tag.expandable else "blockquote"
        entities.append({"type": kind, "offset": offset, "length": length})
    elif tag.name == "pre" and same_range and previous is not None and previous["type"] == "code" \
            and previous.get("_language"):
        # <pre><code class="language-x">...</code></pre> is one pre entity with a language.
        entities[-1] = {"type": "pre", "offset": offset, "length": length, "language": previous["_language"]}
    elif tag.name == "code" and tag.argument and same_range and previous is not None \
            and previous["type"] == "pre":
        previous["language"] = tag.argument
    else:
        entity: Entity = {"type": _HTML_ENTITY_TYPES[tag.name], "offset": offset, "length": length}
        if tag.name == "code" and tag.argument:
            entity["_language"] = tag.argument  # only kept if a <pre> of the same range follows
        entities.append(entity)


# --------------------------------------------------------------------------------- MarkdownV2

_V2_TYPE_NAMES = {
    "bold": "Bold", "italic": "Italic", "underline": "Underline", "strikethrough": "Strikethrough",
    "spoiler": "Spoiler", "code": "Code", "pre": "Pre", "pre_code": "PreCode", "text_link": "TextUrl",
    "custom_emoji": "CustomEmoji",
}


@dataclass
class _OpenSpan:
    kind: str  # a key of _V2_TYPE_NAMES
    offset: int  # UTF-16 offset in the result
    byte_offset: int  # where the markup started, for error messages
    begin: int  # index into the result list of pieces (characters or runs of them)
    argument: str = ""


@dataclass
class _Quote:
    offset: int
    depth: int  # number of spans open when the quote started


def _is_line_start(text: str, i: int) -> bool:
    return i == 0 or text[i - 1] in "\r\n"


def parse_markdown_v2(text: str) -> tuple[str, list[Entity]]:
    """Telegram's MarkdownV2 style: https://core.telegram.org/bots/api#markdownv2-style"""
    n = len(text)

    def at(index: int) -> str:
        return text[index] if index < n else "\0"

    result: list[str] = []
    utf16 = 0
    stack: list[_OpenSpan] = []
    entities: list[Entity] = []
    quote: _Quote | None = None
    i = 0
    while i < n:
        char = text[i]
        in_code = bool(stack) and stack[-1].kind in ("code", "pre", "pre_code")

        if _is_line_start(text, i) and not in_code:
            if char == ">":
                if quote is None:
                    quote = _Quote(utf16, len(stack))
                i += 1
                continue
            if quote is not None:
                _close_quote(quote, utf16, stack, entities)
                quote = None

        if char == "\\" and 0 < ord(at(i + 1)) <= 126:
            result.append(text[i + 1])
            utf16 += 1
            i += 2
            continue
        reserved = frozenset("`") if in_code else _MARKDOWN_V2_RESERVED
        if char not in reserved:
            result.append(char)
            utf16 += utf16_len(char)
            i += 1
            continue

        if stack and _ends_span(stack[-1].kind, text, i):
            i = _close_v2_span(stack.pop(), text, i, utf16, result, entities)
            continue

        byte_offset = _byte_offset(text, i)
        argument = ""
        if char == "_":
            if at(i + 1) == "_":
                kind, i = "underline", i + 1
            else:
                kind = "italic"
        elif char == "*":
            kind = "bold"
        elif char == "~":
            kind = "strikethrough"
        elif char == "|" and at(i + 1) == "|":
            kind, i = "spoiler", i + 1
        elif char == "[":
            kind = "text_link"
        elif char == "!" and at(i + 1) == "[":
            kind, i = "custom_emoji", i + 1
        elif char == "`" and at(i + 1) == "`" and at(i + 2) == "`":
            kind, argument, i = _open_pre(text, i + 3)
        elif char == "`":
            kind = "code"
        else:
            raise MarkupError(f"Character '{char}' is reserved and must be escaped with the preceding '\\'")
        stack.append(_OpenSpan(kind, utf16, byte_offset, len(result), argument))
        i += 1

    if stack:
        last = stack[-1]
        raise MarkupError(f"Can't find end of {_V2_TYPE_NAMES[last.kind]} entity at byte offset {last.byte_offset}")
    if quote is not None:
        _close_quote(quote, utf16, stack, entities)
    return "".join(result), _sorted(entities)


def _ends_span(kind: str, text: str, i: int) -> bool:
    char = text[i]
    following = text[i + 1] if i + 1 < len(text) else "\0"
    if kind == "bold":
        return char == "*"
    if kind == "italic":
        return char == "_" and following != "_"
    if kind == "underline":
        return char == "_" and following == "_"
    if kind == "strikethrough":
        return char == "~"
    if kind == "spoiler":
        return char == "|" and following == "|"
    if kind == "code":
        return char == "`"
    if kind in ("pre", "pre_code"):
        return text[i:i + 3] == "```"
    return char == "]"  # text_link, custom_emoji


def _open_pre(text: str, i: int) -> tuple[str, str, int]:
    """After an opening ```: read the optional language and skip one newline; returns (kind, language, i - 1)."""
    n = len(text)
    kind, language = "pre", ""
    end = i
    while end < n and text[end] not in _SPACES and text[end] != "`":
        end += 1
    if end != i and end < n and text[end] != "`":
        kind, language, i = "pre_code", text[i:end], end
    if i < n and text[i] in "\r\n":
        i += 2 if i + 1 < n and text[i + 1] in "\r\n" and text[i] != text[i + 1] else 1
    return kind, language, i - 1


def _close_v2_span(span: _OpenSpan, text: str, i: int, utf16: int, result: list[str],
                   entities: list[Entity]) -> int:
    """Close ``span`` at ``text[i]``; returns the index after its closing markup."""
    length = utf16 - span.offset
    entity: Entity | None = None
    if span.kind in ("underline", "spoiler"):
        i += 1
    elif span.kind in ("pre", "pre_code"):
        i += 2
    if span.kind in ("text_link", "custom_emoji"):
        url, i = _read_link_target(text, i, "".join(result[span.begin:]), span.kind)
        if span.kind == "custom_emoji":
            emoji_id = _custom_emoji_id(url)
            entity = {"type": "custom_emoji", "custom_emoji_id": emoji_id}
        else:
            normalized = normalize_url(url)
            entity = {"type": "text_link", "url": normalized} if normalized else None
    elif span.kind == "pre_code":
        entity = {"type": "pre", "language": span.argument}
    else:
        entity = {"type": span.kind}
    if entity is not None and length > 0:
        entities.append({"type": entity.pop("type"), "offset": span.offset, "length": length, **entity})
    return i + 1


def _read_link_target(text: str, i: int, inner_text: str, kind: str) -> tuple[str, int]:
    """``text[i]`` is the "]" closing a link; read "(url)" after it. Returns (url, index of ")")."""
    n = len(text)
    if i + 1 >= n or text[i + 1] != "(":
        if kind == "custom_emoji":
            raise MarkupError("Custom emoji entity must contain a tg://emoji URL")
        return inner_text, i
    i += 2
    url_begin = i
    url: list[str] = []
    while i < n and text[i] != ")":
        if text[i] == "\\" and i + 1 < n and 0 < ord(text[i + 1]) <= 126:
            url.append(text[i + 1])
            i += 2
            continue
        url.append(text[i])
        i += 1
    if i >= n:
        raise MarkupError(f"Can't find end of a URL at byte offset {_byte_offset(text, url_begin)}")
    return "".join(url), i


def _custom_emoji_id(url: str) -> str:
    match = re.fullmatch(r"tg://emoji\?(?:.*&)?id=(\d+)(?:&.*)?", url, re.IGNORECASE)
    if match is None:
        raise MarkupError("Custom emoji URL must have an emoji identifier")
    if match.group(1).startswith("0"):
        raise MarkupError("Invalid custom emoji identifier specified")
    return match.group(1)


def _close_quote(quote: _Quote, utf16: int, stack: list[_OpenSpan], entities: list[Entity]) -> None:
    """End a block quote at a line that does not start with ">"; spans opened inside must be closed."""
    if len(stack) > quote.depth:
        last = stack[-1]
        raise MarkupError(f"Can't find end of {_V2_TYPE_NAMES[last.kind]} entity at byte offset {last.byte_offset}")
    if utf16 > quote.offset:
        entities.append({"type": "blockquote", "offset": quote.offset, "length": utf16 - quote.offset})


# ---------------------------------------------------------------------------- legacy Markdown


def parse_markdown(text: str) -> tuple[str, list[Entity]]:
    """Telegram's legacy Markdown style: https://core.telegram.org/bots/api#markdown-style"""
    n = len(text)
    result: list[str] = []
    utf16 = 0
    entities: list[Entity] = []
    i = 0
    while i < n:
        char = text[i]
        if char == "\\" and i + 1 < n and text[i + 1] in "_*`[":
            result.append(text[i + 1])
            utf16 += 1
            i += 2
            continue
        if char not in "_*`[":
            result.append(char)
            utf16 += utf16_len(char)
            i += 1
            continue

        begin = i
        end_char = "]" if char == "[" else char
        is_pre = char == "`" and text[i + 1:i + 3] == "``"
        language = ""
        i += 3 if is_pre else 1
        if is_pre:
            _, language, i = _open_pre(text, i)
            i += 1
        offset = utf16
        inner_begin = len(result)
        while i < n and (text[i] != end_char or (is_pre and text[i + 1:i + 3] != "``")):
            result.append(text[i])
            utf16 += utf16_len(text[i])
            i += 1
        if i >= n:
            raise MarkupError(f"Can't find end of the entity starting at byte offset {_byte_offset(text, begin)}")
        length = utf16 - offset
        if char == "[":
            url = "".join(result[inner_begin:])
            if i + 1 < n and text[i + 1] == "(":
                close = text.find(")", i + 2)
                if close < 0:
                    raise MarkupError(f"Can't find end of a URL at byte offset {_byte_offset(text, i + 2)}")
                url, i = text[i + 2:close], close
            normalized = normalize_url(url)
            if normalized and length:
                entities.append({"type": "text_link", "offset": offset, "length": length, "url": normalized})
        elif length:
            if is_pre:
                entity: Entity = {"type": "pre", "offset": offset, "length": length}
                if language:
                    entity["language"] = language
            else:
                entity = {"type": {"_": "italic", "*": "bold", "`": "code"}[char], "offset": offset, "length": length}
            entities.append(entity)
        i += 3 if is_pre else 1
    return "".join(result), _sorted(entities)
