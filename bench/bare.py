"""The views benchmark's reference: a bare Django view doing a chat turn.

``bench/bench_views.py`` serves this URLconf (the project's URLs plus
``bench/bare/<session id>/stream/``) with ``bench/bare_settings.py``. The view
does what any streamed chat turn must, and nothing more: the same two round
trips as chatmemory's turn (LRANGE of the session's messages; chatmemory's
append script by EVALSHA with the same keys and arguments), the records
decoded with orjson and turned into messages with LangChain's
``messages_from_dict``, the same model (``CHATMEMORY_CHAT_MODEL``) streamed on
system + history + question (no prompt template, no trimming: the benchmark
caps histories at 20 messages), each token sent as a Server-Sent Event, and
the question and the reply written with ``orjson.dumps(message_to_dict(m))``.
Like chatmemory's view it needs a logged-in user and the POST's CSRF token,
and returns a sync iterator under WSGI, an async one under ASGI (with
``redis.asyncio`` and the model's ``astream``); unlike it, it does not check
that the session exists or is the user's (that is chatmemory's third round
trip).
"""

from __future__ import annotations

import asyncio
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
import redis
import redis.asyncio
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, StreamingHttpResponse
from django.urls import path
from django.utils.module_loading import import_string
from django.views.decorators.http import require_POST
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    message_to_dict,
    messages_from_dict,
)

from project.urls import urlpatterns as project_urlpatterns

_spec = dict(settings.CHATMEMORY_CHAT_MODEL)
MODEL = import_string(_spec.pop("factory"))(**_spec)
PREFIX: str = settings.CHATMEMORY_KEY_PREFIX
TTL_MS = int((getattr(settings, "CHATMEMORY_TTL", None) or 0) * 1000)
CAP = getattr(settings, "CHATMEMORY_MAX_MESSAGES", None) or 0
SYSTEM = SystemMessage(
    getattr(settings, "CHATMEMORY_SYSTEM_PROMPT", "You are a helpful assistant.")
)
_URL = settings.CACHES["chatmemory"]["LOCATION"]


def _script_source() -> str:
    try:
        from chatmemory.store import scripts

        return scripts.source("append")
    except ImportError:  # the single-module store of earlier versions
        from chatmemory import store

        return str(store._SCRIPTS["append"])  # type: ignore[attr-defined]


_client = redis.Redis.from_url(_URL)
SHA: str = _client.script_load(_script_source())
_async_clients: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, redis.asyncio.Redis
] = weakref.WeakKeyDictionary()


def _aclient() -> redis.asyncio.Redis:
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        client = _async_clients[loop] = redis.asyncio.Redis.from_url(_URL)
    return client


def _history(raw: list[bytes]) -> list[BaseMessage]:
    loads = orjson.loads
    return messages_from_dict([loads(item) for item in raw])


def _append_args(session_id: str, owner: str, question: str, reply: str) -> list[Any]:
    """EVALSHA's arguments for chatmemory's append script (see its header)."""
    session = f"{PREFIX}:{{{session_id}}}"
    return [
        SHA,
        7,
        f"{session}:messages",
        f"{session}:meta",
        f"{session}:write-ids",
        f"{PREFIX}:sessions",
        f"{PREFIX}:session-ids",
        f"{PREFIX}:owner:{owner}",
        f"{PREFIX}:no-owner",
        session_id,
        time.time_ns() // 1_000_000,
        TTL_MS,
        CAP,
        question[:80],
        owner,
        owner,
        0,  # input, output, total tokens (none counted here)
        0,
        0,
        0,  # usage keys' ttl
        uuid.uuid4().hex,  # write id
        "0",  # the session need not exist
        -1,  # a plain append: no expected length, no expected last entries
        0,
        orjson.dumps(message_to_dict(HumanMessage(question))),
        orjson.dumps(message_to_dict(AIMessage(reply))),
    ]


def _event(token: str) -> bytes:
    return b"event: token\ndata: " + token.encode() + b"\n\n"


def _sync_events(session_id: str, owner: str, question: str) -> Iterator[bytes]:
    yield b": stream open\n\n"
    raw = _client.lrange(f"{PREFIX}:{{{session_id}}}:messages", 0, -1)
    prompt = [SYSTEM, *_history(raw), HumanMessage(question)]
    tokens = []
    for chunk in MODEL.stream(prompt):
        text = chunk.text
        tokens.append(text)
        yield _event(text)
    reply = "".join(tokens)
    count, *_ = _client.evalsha(*_append_args(session_id, owner, question, reply))
    yield b'event: done\ndata: {"message_count": %d}\n\n' % count


async def _async_events(
    session_id: str, owner: str, question: str
) -> AsyncIterator[bytes]:
    yield b": stream open\n\n"
    client = _aclient()
    raw = await client.lrange(f"{PREFIX}:{{{session_id}}}:messages", 0, -1)
    prompt = [SYSTEM, *_history(raw), HumanMessage(question)]
    tokens = []
    async for chunk in MODEL.astream(prompt):
        text = chunk.text
        tokens.append(text)
        yield _event(text)
    reply = "".join(tokens)
    count, *_ = await client.evalsha(*_append_args(session_id, owner, question, reply))
    yield b'event: done\ndata: {"message_count": %d}\n\n' % count


@login_required
@require_POST
def stream(request: HttpRequest, session_id: str) -> StreamingHttpResponse:
    """A streamed chat turn, bare (see the module docstring)."""
    question = request.POST.get("message", "")
    owner = str(request.user.pk)
    request.META.pop("HTTP_ACCEPT_ENCODING", None)
    if isinstance(request, ASGIRequest):
        events: Iterator[bytes] | AsyncIterator[bytes] = _async_events(
            session_id, owner, question
        )
    else:
        events = _sync_events(session_id, owner, question)
    response = StreamingHttpResponse(events, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


urlpatterns = [
    path("bench/bare/<str:session_id>/stream/", stream, name="bare-stream"),
    *project_urlpatterns,
]
