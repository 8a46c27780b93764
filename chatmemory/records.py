"""The text form of a stored record: its role, text, tool calls, flag and title.

I have a record as the store returns it (``message_to_dict`` form) and I want
what to show of it::

    from chatmemory import records

    shown = records.read({"type": "ai", "data": {"content": "Hi"}})
    shown.role, shown.text, shown.tool_calls, shown.interrupted

The chat page, the admin transcript and the session titles all read records
through this module, so a message made of text blocks reads the same
everywhere: its text blocks joined by a blank line (the title folds that
whitespace into one line). It never raises, whatever the record holds: a value
that is not a message record comes back with ``kind == "unreadable"``.

This module does not import LangChain (the admin and the store use it, and
must survive LangChain 2.0).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Record = dict[str, Any]
"""One message in ``langchain_core.messages.message_to_dict`` form."""

INTERRUPTED = "interrupted"
"""The ``response_metadata`` key set (to True) on a reply the user stopped."""

TITLE_LENGTH = 80
"""Titles are the first human message, cut to this many characters."""

BLOCK_SEPARATOR = "\n\n"
"""What goes between the text blocks of one message."""

KINDS = ("human", "ai", "system", "chat", "tool", "function", "remove")
"""The record types LangChain writes (``message_to_dict``'s ``type``)."""

# Chunk records (written by other tools; chatmemory stores full messages) read
# as the message kind they stand for.
_CHUNK_KINDS = {
    "HumanMessageChunk": "human",
    "AIMessageChunk": "ai",
    "SystemMessageChunk": "system",
    "ChatMessageChunk": "chat",
    "ToolMessageChunk": "tool",
    "FunctionMessageChunk": "function",
}


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool call an AI message asked for."""

    name: str
    call_id: str
    arguments: str
    """The call's arguments as JSON text."""


@dataclass(frozen=True, slots=True)
class RecordText:
    """What one stored record says, in plain text."""

    kind: str
    """One of :data:`KINDS`, ``"other"`` (an unknown type) or ``"unreadable"``."""
    role: str
    """Who speaks: the kind, or a ``chat`` message's own role."""
    text: str = ""
    """The text: a string content, or its text blocks joined by a blank line."""
    blocks: tuple[str, ...] = ()
    """Content that is not text (images, reasoning...), each as JSON text."""
    tool_calls: tuple[ToolCall, ...] = ()
    interrupted: bool = False
    """Whether the user stopped this reply before it was complete."""
    problem: str = ""
    """Why the record is unreadable (``""`` when it is not)."""
    data: Mapping[str, Any] = field(default_factory=dict)
    """The record's ``data`` object (empty when it has none)."""


def read(record: object) -> RecordText:
    """The text form of one decoded record; never raises."""
    if not isinstance(record, dict):
        return unreadable(f"a JSON {type(record).__name__}, not a message record")
    kind = record.get("type")
    data = record.get("data")
    if not isinstance(kind, str) or not isinstance(data, dict):
        return unreadable("not a message record (no 'type' text and 'data' object)")
    content = data.get("content")
    if not isinstance(content, (str, list)):
        return unreadable(
            f"its content is a {type(content).__name__}, not text or a list of blocks"
        )
    kind = _CHUNK_KINDS.get(kind, kind)
    role = kind
    if kind == "chat" and isinstance(data.get("role"), str) and data["role"]:
        role = data["role"]
    text, blocks = content_text(content)
    metadata = data.get("response_metadata")
    return RecordText(
        kind=kind if kind in KINDS else "other",
        role=role,
        text=text,
        blocks=blocks,
        tool_calls=tool_calls(data.get("tool_calls")),
        interrupted=isinstance(metadata, dict) and metadata.get(INTERRUPTED) is True,
        data=data,
    )


def unreadable(problem: str) -> RecordText:
    """The text form of an entry that is not a message record."""
    return RecordText(kind="unreadable", role="unreadable", problem=problem)


def content_text(content: object) -> tuple[str, tuple[str, ...]]:
    """A message content's text, and its other blocks as JSON text.

    Content is a string, or a list of blocks: strings and ``{"type": "text",
    "text": ...}`` objects are text, joined by :data:`BLOCK_SEPARATOR`.
    """
    if isinstance(content, str):
        return content, ()
    if content is None:
        return "", ()
    if not isinstance(content, list):
        return "", (dumps(content),)
    texts: list[str] = []
    blocks: list[str] = []
    for block in content:
        if isinstance(block, str):
            texts.append(block)
        elif (
            isinstance(block, dict)
            and block.get("type") == "text"
            and isinstance(block.get("text"), str)
        ):
            texts.append(block["text"])
        else:
            blocks.append(dumps(block))
    return BLOCK_SEPARATOR.join(texts), tuple(blocks)


def tool_calls(value: object) -> tuple[ToolCall, ...]:
    """The tool calls of an AI message's ``tool_calls`` field (others skipped)."""
    if not isinstance(value, list):
        return ()
    return tuple(
        ToolCall(
            name=str(call.get("name") or "?"),
            call_id=str(call.get("id") or ""),
            arguments=dumps(call.get("args", {})),
        )
        for call in value
        if isinstance(call, dict)
    )


def title(records: Iterable[object]) -> str:
    """A session's title: its first human message's text on one line, cut."""
    for record in records:
        # The common case as read() sees it, without building a RecordText
        # (every write works out a title).
        if isinstance(record, dict):
            kind, data = record.get("type"), record.get("data")
            if kind in KINDS and isinstance(data, dict):
                content = data.get("content")
                if type(content) is str:
                    text = one_line(content) if kind == "human" else ""
                    if text:
                        return shorten(text, TITLE_LENGTH)
                    continue
        shown = read(record)
        if shown.kind != "human":
            continue
        text = one_line(shown.text)
        if text:
            return shorten(text, TITLE_LENGTH)
    return ""


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines too) made one space."""
    return " ".join(text.split())


def shorten(text: str, length: int) -> str:
    """Cut ``text`` to ``length`` characters, marking a cut with an ellipsis."""
    return text if len(text) <= length else text[: length - 1].rstrip() + "\u2026"


def dumps(value: object) -> str:
    """``value`` as compact JSON text, for showing (anything goes: ``str()``)."""
    # No indent: json's C encoder only runs without one (a 1,000-message
    # transcript dumps hundreds of values); pages wrap long lines.
    try:
        return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    # Keys of mixed types cannot be sorted; nesting can exceed the recursion limit.
    except (TypeError, ValueError, RecursionError):
        return repr(value)


__all__ = [
    "BLOCK_SEPARATOR",
    "INTERRUPTED",
    "KINDS",
    "TITLE_LENGTH",
    "Record",
    "RecordText",
    "ToolCall",
    "content_text",
    "dumps",
    "one_line",
    "read",
    "shorten",
    "title",
    "tool_calls",
    "unreadable",
]
