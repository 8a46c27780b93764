"""The transcript: what each stored entry of a session shows as.

Works on plain message dicts and never imports LangChain.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext as _

from .. import store

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
_CHUNK_TYPES = {
    "HumanMessageChunk": "human",
    "AIMessageChunk": "ai",
    "SystemMessageChunk": "system",
    "ToolMessageChunk": "tool",
    "FunctionMessageChunk": "function",
    "ChatMessageChunk": "chat",
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


@dataclass(slots=True)
class ToolCall:
    """A tool call an AI message asked for."""

    name: str
    call_id: str
    arguments: str


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
    """What the transcript shows of one stored entry."""
    if isinstance(entry, store.UnreadableEntry):
        return _unreadable(position, entry.reason, entry.raw.decode(errors="replace"))
    kind = entry.get("type")
    data = entry.get("data")
    if not isinstance(kind, str) or not isinstance(data, dict):
        return _unreadable(position, _("not a message record"), _dumps(entry))
    kind = _CHUNK_TYPES.get(kind, kind)
    role = _ROLES.get(kind, kind)
    if kind == "chat" and data.get("role"):
        role = str(data["role"])
    view = MessageView(
        position=position,
        kind=kind if kind in _ROLES else "other",
        role=role,
        message_id=str(data.get("id") or ""),
        name=str(data.get("name") or ""),
        tool_call_id=str(data.get("tool_call_id") or ""),
        status=str(data.get("status") or ""),
    )
    content = data.get("content")
    if isinstance(content, str):
        view.text = content
    elif isinstance(content, list):
        texts = []
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
                view.blocks.append(_dumps(block))
        view.text = "\n\n".join(texts)
    elif content is not None:
        view.blocks.append(_dumps(content))
    if len(view.text) > COLLAPSE_AFTER or view.text.count("\n") >= COLLAPSE_LINES:
        view.collapsed = True
        first = " ".join(view.text[:300].split())
        view.summary = first[:160].rstrip() + "\u2026"
    for call in data.get("tool_calls") or ():
        if isinstance(call, dict):
            view.tool_calls.append(
                ToolCall(
                    name=str(call.get("name") or "?"),
                    call_id=str(call.get("id") or ""),
                    arguments=_dumps(call.get("args", {})),
                )
            )
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
        view.details = _dumps(extra)
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


def _dumps(value: object) -> str:
    # No indent: json's C encoder only runs without one (a 1,000-message
    # transcript dumps hundreds of values); the page wraps long lines.
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def render_messages(views: Iterable[MessageView]) -> SafeString:
    """The transcript's rows as HTML, every value escaped.

    Built in Python rather than in a template loop: a template costs about a
    quarter of a millisecond per message, which a 1,000-message transcript
    would feel (see bench/bench_admin.py).
    """
    labels = {
        "result": _("result of tool call %(id)s"),
        "status": escape(_("status:")),
        "tool call": escape(_("Tool call:")),
        "usage": escape(_("Token usage")),
        "details": escape(_("Details")),
    }
    # Safe: _message_html escapes every value it puts in.
    return mark_safe("".join(_message_html(view, labels) for view in views))


def _escape(value: str) -> str:
    # django.utils.html.escape's escaping, without its lazy-string wrapper
    # (a third of the cost of rendering a transcript).
    return html.escape(value)


def _message_html(m: MessageView, labels: dict[str, str]) -> str:
    e = _escape
    head = [f'<span class="chatmemory-role">{e(m.role)}</span>']
    if m.name:
        head.append(f"<span>{e(m.name)}</span>")
    if m.tool_call_id:
        head.append(
            '<span class="chatmemory-quiet">'
            + e(labels["result"] % {"id": m.tool_call_id})
            + "</span>"
        )
    if m.status:
        head.append(
            f'<span class="chatmemory-quiet">{labels["status"]} {e(m.status)}</span>'
        )
    ident = f" · {e(m.message_id)}" if m.message_id else ""
    head.append(f'<span class="chatmemory-quiet">#{m.position}{ident}</span>')
    parts = [
        f'<li class="{e(m.kind)}" id="message-{m.position}">',
        f'<div class="chatmemory-head">{"".join(head)}</div>',
    ]
    if m.kind == "unreadable":
        parts.append(f"<p>{e(m.unreadable_reason)}</p><pre>{e(m.raw)}</pre></li>")
        return "".join(parts)
    if m.collapsed:
        parts.append(
            f"<details><summary>{e(m.summary)}</summary>"
            f'<p class="chatmemory-text">{e(m.text)}</p></details>'
        )
    elif m.text:
        parts.append(f'<p class="chatmemory-text">{e(m.text)}</p>')
    parts.extend(f"<pre>{e(block)}</pre>" for block in m.blocks)
    for call in m.tool_calls:
        call_id = (
            f' <span class="chatmemory-quiet">{e(call.call_id)}</span>'
            if call.call_id
            else ""
        )
        parts.append(
            f'<div class="chatmemory-tool-call"><strong>{labels["tool call"]} '
            f"{e(call.name)}</strong>{call_id}<pre>{e(call.arguments)}</pre></div>"
        )
    if m.usage:
        items = "".join(f"<li>{e(key)}: {e(value)}</li>" for key, value in m.usage)
        parts.append(
            '<ul class="chatmemory-usage chatmemory-quiet" '
            f'aria-label="{labels["usage"]}">{items}</ul>'
        )
    if m.details:
        parts.append(
            f"<details><summary>{labels['details']}</summary>"
            f"<pre>{e(m.details)}</pre></details>"
        )
    parts.append("</li>")
    return "".join(parts)
