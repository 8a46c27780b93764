"""The transcript: what each stored entry of a session shows as, a page at a time.

:func:`message_view` turns one stored entry into a :class:`MessageView`; the
template ``admin/chatmemory/chatsession/transcript_message.html`` renders one
(override it by path). :class:`TranscriptPage` is one page of a session, so a
100,000-message session costs what one page of it costs. Works on plain
message dicts and never imports LangChain.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from django.core.paginator import Paginator
from django.http import Http404
from django.utils.translation import gettext as _

from .. import records, store
from .changelist import MAX_OFFSET

logger = logging.getLogger("chatmemory")

COLLAPSE_AFTER = 600
"""Message text longer than this (characters) is collapsed on the transcript."""

COLLAPSE_LINES = 12
"""Message text of more lines than this is collapsed on the transcript."""

RAW_PREVIEW = 2000
"""How much of an unreadable entry the transcript shows, in characters."""

_ROLES = {
    "human": "Human",
    "ai": "AI",
    "system": "System",
    "tool": "Tool",
    "function": "Function",
    "chat": "Chat",
    "remove": "Remove",
}
# Message fields shown on their own; the rest of a record goes under "Details".
_SHOWN_FIELDS = frozenset(
    {
        "content",
        "type",
        "id",
        "name",
        "role",
        "tool_calls",
        "tool_call_id",
        "status",
        "usage_metadata",
    }
)


ToolCall = records.ToolCall
"""A tool call an AI message asked for."""


@dataclass(slots=True)
class MessageView:
    """One transcript row: a message, or an entry that could not be read."""

    position: int
    kind: str
    role: str
    text: str = ""
    collapsed: bool = False
    summary: str = ""
    blocks: list[str] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    interrupted: bool = False
    tool_call_id: str = ""
    status: str = ""
    usage: list[tuple[str, str]] = field(default_factory=list)
    details: str = ""
    message_id: str = ""
    name: str = ""
    unreadable_reason: str = ""
    raw: str = ""


def message_view(
    position: int, entry: store.Record | store.UnreadableEntry
) -> MessageView:
    """What the transcript shows of one stored entry; never raises for odd data.

    A record of a shape nobody foresaw shows as an unreadable row (and is
    logged) rather than breaking the page.
    """
    try:
        return _message_view(position, entry)
    except (TypeError, ValueError, AttributeError, RecursionError) as exc:
        logger.warning("chatmemory admin: entry %d cannot be shown: %r", position, exc)
        return _unreadable(position, _("cannot be shown (%s)") % exc, repr(entry))


def _message_view(
    position: int, entry: store.Record | store.UnreadableEntry
) -> MessageView:
    if isinstance(entry, store.UnreadableEntry):
        return _unreadable(position, entry.reason, entry.raw.decode(errors="replace"))
    record = records.read(entry)
    if record.kind == "unreadable":
        return _unreadable(position, record.problem, records.dumps(entry))
    data = record.data
    view = MessageView(
        position=position,
        kind=record.kind,
        role=_ROLES.get(record.role, record.role),
        text=record.text,
        blocks=list(record.blocks),
        tool_calls=list(record.tool_calls),
        interrupted=record.interrupted,
        message_id=str(data.get("id") or ""),
        name=str(data.get("name") or ""),
        tool_call_id=str(data.get("tool_call_id") or ""),
        status=str(data.get("status") or ""),
    )
    if len(view.text) > COLLAPSE_AFTER or view.text.count("\n") >= COLLAPSE_LINES:
        view.collapsed = True
        first = " ".join(view.text[:300].split())
        view.summary = first[:160].rstrip() + "\u2026"
    usage = data.get("usage_metadata")
    if isinstance(usage, dict):
        view.usage = [
            (_label(key), _usage_value(value)) for key, value in usage.items()
        ]
    extra = {
        key: value
        for key, value in data.items()
        if key not in _SHOWN_FIELDS and value not in (None, {}, [], "")
    }
    if extra:
        view.details = records.dumps(extra)
    return view


def _label(key: object) -> str:
    return str(key).replace("_", " ")


def _usage_value(value: object) -> str:
    """A usage figure, or a breakdown like ``cache read 3, reasoning 0``."""
    if isinstance(value, dict):
        return ", ".join(f"{_label(k)} {v}" for k, v in value.items())
    return str(value)


def _unreadable(position: int, reason: str, raw: str) -> MessageView:
    if len(raw) > RAW_PREVIEW:
        raw = raw[:RAW_PREVIEW] + "\u2026"
    return MessageView(
        position=position,
        kind="unreadable",
        role=_("Unreadable entry"),
        unreadable_reason=reason,
        raw=raw,
    )


@dataclass(frozen=True, slots=True)
class TranscriptPage:
    """One page of a session's entries, as the transcript shows them."""

    messages: list[MessageView]
    number: int
    per_page: int
    count: int
    """Entries in the whole session (the stored list's length)."""

    @property
    def paginator(self) -> Paginator[int]:
        """A paginator over the session's positions (for page ranges)."""
        return Paginator(range(self.count), self.per_page)

    @property
    def first_position(self) -> int:
        """Position in the session of this page's first entry (0-based)."""
        return (self.number - 1) * self.per_page

    @property
    def last_position(self) -> int:
        """Position in the session of this page's last entry."""
        return self.first_position + len(self.messages) - 1

    def page_range(self) -> list[int | str]:
        """Page numbers to link to, elided around this one; empty for one page."""
        paginator = self.paginator
        if paginator.num_pages <= 1:
            return []
        return list(paginator.get_elided_page_range(self.number))


EXPORT_BATCH = 500
"""Records read from Redis per round trip while an export streams."""


def _read_range(
    session_id: str, offset: int, limit: int
) -> tuple[store.SessionInfo | None, int, list[store.Record | store.UnreadableEntry]]:
    info, count, entries = store.read_session_range(session_id, offset, limit)
    if info is not None and info.kind == "thread":
        # A thread's messages are one value of its latest checkpoint.
        everything = thread_entries(session_id)
        return info, len(everything), everything[offset : offset + limit]
    return info, count, entries


def thread_entries(thread_id: str) -> list[store.Record | store.UnreadableEntry]:
    """A LangGraph thread's messages: those of its latest checkpoint.

    Reading them takes LangGraph's serializer (chatmemory[langgraph]); without
    it the transcript says so in one unreadable row.
    """
    try:
        from ..langgraph import thread_records
    except ImportError as exc:
        reason = _(
            "this is a LangGraph thread; reading it needs LangGraph "
            "(pip install 'chatmemory[langgraph]'): %(error)s"
        ) % {"error": exc}
        return [store.UnreadableEntry(0, b"", reason)]
    return list(thread_records(thread_id))


def thread_reader() -> Callable[[str], list[store.Record]] | None:
    """What reads a LangGraph thread's messages for an export (None without
    LangGraph: the export then leaves threads out, and says so)."""
    try:
        from ..langgraph import thread_records
    except ImportError:
        return None
    return thread_records


def read_transcript_page(
    session_id: str, number: int, per_page: int
) -> tuple[store.SessionInfo | None, TranscriptPage]:
    """The session's metadata and its page ``number``: one round trip.

    Raises Http404 for a page past the last one (page 1 of an empty session
    exists).
    """
    offset = (number - 1) * per_page
    if offset >= MAX_OFFSET:
        raise Http404(_("No such page."))
    info, count, entries = _read_range(session_id, offset, per_page)
    if info is not None and number > 1 and offset >= count:
        raise Http404(_("No such page."))
    return info, transcript_page(entries, number=number, per_page=per_page, count=count)


def export_json(
    session_id: str, *, batch: int | None = None
) -> tuple[store.SessionInfo | None, Iterator[str]]:
    """The session's metadata and its readable records as a JSON array, in pieces.

    The first batch is read here, so a missing session or an unreachable
    Redis shows before a response starts; the rest is read as the body is
    sent, ``batch`` records per round trip.
    """
    batch = batch or EXPORT_BATCH
    info, count, first = _read_range(session_id, 0, batch)
    return info, _json_array(session_id, first, count, batch)


def _json_array(
    session_id: str,
    entries: list[store.Record | store.UnreadableEntry],
    count: int,
    batch: int,
) -> Iterator[str]:
    encode = json.JSONEncoder(ensure_ascii=False, indent=2).encode
    separator = "\n"
    yield "["
    offset = 0
    while True:
        parts = []
        for entry in entries:
            if isinstance(entry, dict):
                parts.append(separator + encode(entry))
                separator = ",\n"
        if parts:
            yield "".join(parts)
        offset += batch
        if offset >= count or not entries:
            break
        # Appends made while the export runs are read too (the list only grows
        # at its end); a session trimmed meanwhile may skip or repeat entries.
        _, count, entries = _read_range(session_id, offset, batch)
    yield "\n]\n"


def transcript_page(
    entries: list[store.Record | store.UnreadableEntry],
    *,
    number: int,
    per_page: int,
    count: int,
) -> TranscriptPage:
    """The page ``number`` made of ``entries``, the stored entries it holds."""
    first = (number - 1) * per_page
    return TranscriptPage(
        messages=[message_view(first + i, entry) for i, entry in enumerate(entries)],
        number=number,
        per_page=per_page,
        count=count,
    )
