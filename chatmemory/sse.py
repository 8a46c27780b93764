"""Server-Sent Events: a chat turn as ``token``, ``done`` and ``error`` events.

I have a :class:`~chatmemory.turn.ChatTurn` and I want it streamed to a browser::

    return sse.response(sse.sync_events(turn))  # under WSGI
    return sse.response(sse.async_events(turn))  # under ASGI

Django sends a streaming body as it comes only when the iterator matches the
server (a sync generator under WSGI, an async one under ASGI); a mismatch is
consumed whole, then sent. So there is one of each.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import aclosing, closing
from typing import TYPE_CHECKING

from django.http import HttpResponse, StreamingHttpResponse

from . import records
from .exceptions import (
    SESSION_DELETED,
    STORE_DOWN,
    ModelFailed,
    SessionNotFound,
    StoreUnavailable,
    TurnInProgress,
)

if TYPE_CHECKING:
    from .turn import ChatTurn

logger = logging.getLogger("chatmemory")

OPEN = b": stream open\n\n"
"""A comment sent first, so the headers leave before the model starts."""

_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def event(name: str, data: str) -> bytes:
    """One event; every line of ``data`` gets its own ``data:`` field."""
    lines = "".join(f"data: {line}\n" for line in _LINE_BREAK.split(data))
    return f"event: {name}\n{lines}\n".encode()


def done(turn: ChatTurn) -> bytes:
    """The ``done`` event closing a turn's stream, with what the page shows.

    ``message_count`` is the session's size; ``title`` the title the saved
    records give a session that has none yet (the one the store keeps, from
    :func:`chatmemory.records.title`; ``""`` when they give none);
    ``tool_calls`` the reply's tool calls (``name`` and ``arguments`` as JSON
    text), when it has any. ``"stopped": true`` says the reply was cut at the
    turn's time limit.
    """
    data: dict[str, object] = {
        "message_count": turn.message_count,
        "title": records.title(turn.records),
    }
    calls = records.read(turn.records[-1]).tool_calls if turn.records else ()
    if calls:
        data["tool_calls"] = [
            {"name": call.name, "arguments": call.arguments} for call in calls
        ]
    if turn.timed_out:
        data["stopped"] = True
    return event("done", json.dumps(data))


def sync_events(
    turn: ChatTurn, on_end: Callable[[], None] = lambda: None
) -> Iterator[bytes]:
    """The turn as events, for WSGI servers; ``on_end`` runs when the stream ends."""
    try:
        yield OPEN
        try:
            with closing(turn.stream()) as tokens:
                for token in tokens:
                    yield event("token", token)
        except (ModelFailed, TurnInProgress) as exc:
            yield event("error", exc.user_message)
            return
        except StoreUnavailable as exc:
            logger.exception("chatmemory: Redis unavailable during a turn")
            yield event("error", str(exc.user_message))
            return
        except SessionNotFound:
            yield event("error", str(SESSION_DELETED))
            return
        yield done(turn)
    finally:
        on_end()


async def _nothing() -> None:
    return None


async def async_events(
    turn: ChatTurn, on_end: Callable[[], Awaitable[None]] = _nothing
) -> AsyncIterator[bytes]:
    """The turn as events, for ASGI servers (native async Redis and model calls)."""
    try:
        yield OPEN
        try:
            async with aclosing(turn.astream()) as tokens:
                async for token in tokens:
                    yield event("token", token)
        except (ModelFailed, TurnInProgress) as exc:
            yield event("error", exc.user_message)
            return
        except StoreUnavailable as exc:
            logger.exception("chatmemory: Redis unavailable during a turn")
            yield event("error", str(exc.user_message))
            return
        except SessionNotFound:
            yield event("error", str(SESSION_DELETED))
            return
        yield done(turn)
    finally:
        await on_end()


def response(events: Iterator[bytes] | AsyncIterator[bytes]) -> StreamingHttpResponse:
    """A streaming response sending ``events`` as they come."""
    streamed = StreamingHttpResponse(events, content_type="text/event-stream")
    streamed["Cache-Control"] = "no-cache"
    streamed["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
    return streamed


def error_response(message: str, status: int) -> HttpResponse:
    """A complete event stream holding one ``error`` event."""
    answer = HttpResponse(
        event("error", message), status=status, content_type="text/event-stream"
    )
    answer["Cache-Control"] = "no-cache"
    return answer


__all__ = [
    "OPEN",
    "STORE_DOWN",
    "async_events",
    "done",
    "error_response",
    "event",
    "response",
    "sync_events",
]
