from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator

import pytest
from django.test import override_settings

from chatmemory import records, sse, store
from chatmemory.turn import ChatTurn
from tests.chat_models import HistoryModel, ScriptedModel


def parse(body: bytes) -> list[tuple[str, str]]:
    """A Server-Sent Events body as (event, data) pairs, as a browser reads it."""
    parsed = []
    for block in body.decode().split("\n\n"):
        name, data = "message", []
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data:"):
                value = line[len("data:") :]
                data.append(value[1:] if value.startswith(" ") else value)
        if data:
            parsed.append((name, "\n".join(data)))
    return parsed


def test_every_line_gets_its_own_data_field() -> None:
    assert sse.event("token", "a\nb\r\nc\rd") == (
        b"event: token\ndata: a\ndata: b\ndata: c\ndata: d\n\n"
    )
    # A leading space survives: the parser drops only the one after "data:".
    assert parse(sse.event("token", " lead")) == [("token", " lead")]
    assert parse(sse.event("token", "x\n\ny")) == [("token", "x\n\ny")]


def saved_title(session_id: str) -> str:
    info = store.get_session(session_id)
    assert info is not None
    return info.title


def test_sync_events_stream_a_turn_then_done() -> None:
    question = "  hi\n\nthere " + "long " * 30
    turn = ChatTurn("sse1", question, model=HistoryModel())
    body = list(sse.sync_events(turn))
    assert body[0] == sse.OPEN
    parsed = parse(b"".join(body))
    assert {name for name, _ in parsed[:-1]} == {"token"}
    assert "".join(data for _, data in parsed[:-1]) == turn.reply
    name, data = parsed[-1]
    # The title the page shows is the one the store saved, cut the same way.
    title = saved_title("sse1")
    assert title.endswith("\u2026") and "\n" not in title
    assert name == "done"
    assert json.loads(data) == {"message_count": 2, "title": title}


def test_async_events_stream_a_turn_then_done() -> None:
    async def run() -> list[bytes]:
        turn = ChatTurn("sse2", "hi", model=HistoryModel())
        return [chunk async for chunk in sse.async_events(turn)]

    parsed = parse(b"".join(asyncio.run(run())))
    assert parsed[-1] == ("done", json.dumps({"message_count": 2, "title": "hi"}))


def test_done_says_the_tool_calls_of_a_reply_that_has_them() -> None:
    calls = [
        {"name": "get_weather", "args": {"city": "Paris"}},
        {"name": "lookup", "args": {}},
    ]
    model = ScriptedModel(reply="", tool_calls=calls)
    turn = ChatTurn("sse5", "weather?", model=model)
    parsed = parse(b"".join(sse.sync_events(turn)))
    assert [name for name, _ in parsed] == ["done"]  # no text at all
    done = json.loads(parsed[-1][1])
    saved = records.read(store.read_records("sse5")[-1]).tool_calls
    assert [call.name for call in saved] == ["get_weather", "lookup"]
    assert done["tool_calls"] == [
        {"name": call.name, "arguments": call.arguments} for call in saved
    ]
    assert json.loads(done["tool_calls"][0]["arguments"]) == {"city": "Paris"}
    # A rewrite that saves only a reply names nothing.
    again = ChatTurn("sse5", "", model=ScriptedModel(), rewrite="regenerate")
    done = json.loads(parse(b"".join(sse.sync_events(again)))[-1][1])
    assert done == {"message_count": 2, "title": ""}
    assert saved_title("sse5") == "weather?"


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_model_failure_is_an_error_event(mode: str) -> None:
    turn = ChatTurn("sse3", "hi", model=HistoryModel(fail_after=1))
    if mode == "sync":
        body = b"".join(sse.sync_events(turn))
    else:

        async def run() -> bytes:
            return b"".join([chunk async for chunk in sse.async_events(turn)])

        body = asyncio.run(run())
    name, data = parse(body)[-1]
    assert name == "error" and "nothing was saved" in data
    assert store.read_records("sse3") == []


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_redis_down_is_an_error_event(mode: str) -> None:
    down = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "chatmemory": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5},
        },
    }
    with override_settings(CACHES=down):
        turn = ChatTurn("sse4", "hi", model=HistoryModel())
        if mode == "sync":
            body = b"".join(sse.sync_events(turn))
        else:

            async def run() -> bytes:
                return b"".join([chunk async for chunk in sse.async_events(turn)])

            body = asyncio.run(run())
    assert parse(body)[-1] == ("error", str(sse.STORE_DOWN))


def test_responses_are_never_buffered_or_cached() -> None:
    def sync_body() -> Iterator[bytes]:
        yield b"x"

    async def async_body() -> AsyncIterator[bytes]:
        yield b"x"

    for streamed in (sse.response(sync_body()), sse.response(async_body())):
        assert streamed["Content-Type"] == "text/event-stream"
        assert streamed["Cache-Control"] == "no-cache"
        assert streamed["X-Accel-Buffering"] == "no"
    error = sse.error_response("No such chat.", 404)
    assert error.status_code == 404
    assert parse(error.content) == [("error", "No such chat.")]
