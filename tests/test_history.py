"""Conformance suite of DjangoRedisChatMessageHistory against a real Redis."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import warnings
from typing import Any

import pytest
import redis
from django.test import override_settings
from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    HumanMessageChunk,
    SystemMessage,
    ToolMessage,
    messages_from_dict,
)
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder

from chatmemory import store
from chatmemory.exceptions import ChatMemoryError, OwnerMismatch, StoreUnavailable
from chatmemory.history import (
    DjangoRedisChatMessageHistory,
    message_to_record,
    messages_to_records,
    records_to_messages,
)
from chatmemory.store.client import is_cluster
from tests.topologies import command_calls


def every_kind_of_message() -> list[BaseMessage]:
    return [
        SystemMessage("You are terse.", id="sys-1"),
        HumanMessage("hi!", name="bob", id="h-1"),
        HumanMessage(
            content=[
                {"type": "text", "text": "What is in this image?"},
                {
                    "type": "image_url",
                    "image_url": {"url": "data:image/png;base64,AAA"},
                },
            ]
        ),
        AIMessage(
            content="",
            id="run-1",
            tool_calls=[
                {
                    "name": "weather",
                    "args": {"city": "Paris", "days": 3},
                    "id": "call-1",
                    "type": "tool_call",
                }
            ],
            invalid_tool_calls=[
                {
                    "name": "broken",
                    "args": "{not json",
                    "id": "call-2",
                    "error": "bad json",
                    "type": "invalid_tool_call",
                }
            ],
            usage_metadata={"input_tokens": 10, "output_tokens": 5, "total_tokens": 15},
            response_metadata={"model_name": "gpt-test", "finish_reason": "tool_calls"},
            additional_kwargs={"refusal": None},
        ),
        ToolMessage(
            "18 degrees", tool_call_id="call-1", name="weather", status="success"
        ),
        FunctionMessage(name="lookup", content='{"answer": 42}'),
        ChatMessage(role="critic", content="Too long."),
        AIMessage(content=[{"type": "text", "text": "It is ", "index": 0}], name="bot"),
        AIMessage(
            'Unicode: h\u00e9llo \u2603 \U0001f600 and "quotes" \\ and\nnewlines'
        ),
    ]


def test_seed_scenario() -> None:
    history = DjangoRedisChatMessageHistory("foo")
    history.add_user_message("hi!")
    history.add_ai_message("whats up?")

    assert history.messages == [HumanMessage("hi!"), AIMessage("whats up?")]
    assert isinstance(history, BaseChatMessageHistory)


def test_messages_of_every_type_come_back_equal() -> None:
    written = every_kind_of_message()
    history = DjangoRedisChatMessageHistory("fidelity")
    history.add_messages(written)

    read = DjangoRedisChatMessageHistory("fidelity").messages

    assert read == written
    assert [type(m) for m in read] == [type(m) for m in written]


def test_chunks_are_stored_as_full_messages() -> None:
    history = DjangoRedisChatMessageHistory("chunks")
    chunk = AIMessageChunk(content="Hel", id="run-9") + AIMessageChunk(content="lo")
    history.add_messages([HumanMessageChunk(content="hey"), chunk])

    read = history.messages

    assert read == [HumanMessage("hey"), AIMessage("Hello", id="run-9")]
    assert [type(m) for m in read] == [HumanMessage, AIMessage]


def test_chunk_records_written_by_other_tools_read_as_full_messages(
    redis_client: redis.Redis,
) -> None:
    import json

    from langchain_core.messages import message_to_dict

    chunk = AIMessageChunk(content="streamed", id="run-3")
    redis_client.rpush(
        store.messages_key("chunky"), json.dumps(message_to_dict(chunk)).encode()
    )

    (message,) = DjangoRedisChatMessageHistory("chunky").messages

    assert type(message) is AIMessage
    assert message.type == "ai"
    assert message == AIMessage("streamed", id="run-3")


def test_records_use_message_to_dict_form(redis_client: redis.Redis) -> None:
    DjangoRedisChatMessageHistory("format").add_messages(every_kind_of_message())
    raw = redis_client.lrange(store.messages_key("format"), 0, -1)
    import json

    assert messages_from_dict([json.loads(item) for item in raw]) == (
        every_kind_of_message()
    )


def test_records_leave_out_default_valued_fields(redis_client: redis.Redis) -> None:
    import json

    history = DjangoRedisChatMessageHistory("compact")
    history.add_messages(
        [
            HumanMessage("hi"),
            AIMessage("yo", id="run-1", tool_calls=[], response_metadata={}),
            ToolMessage("18", tool_call_id="c-1", status="error"),
        ]
    )

    raw = redis_client.lrange(store.messages_key("compact"), 0, -1)
    stored = [json.loads(item) for item in raw]
    for record in stored:
        del record["at"]  # when it was written: see below
    assert stored == [
        {"type": "human", "data": {"content": "hi"}},
        {"type": "ai", "data": {"content": "yo", "id": "run-1"}},
        {
            "type": "tool",
            "data": {"content": "18", "tool_call_id": "c-1", "status": "error"},
        },
    ]


def test_a_record_is_message_to_dict_without_its_defaults() -> None:
    from langchain_core.messages import message_to_dict

    for message in every_kind_of_message():
        full = message_to_dict(message)
        defaults = {
            name: field.get_default(call_default_factory=True)
            for name, field in type(message).model_fields.items()
            if not field.is_required()
        }
        expected = {
            name: value
            for name, value in full["data"].items()
            if name not in defaults or value != defaults[name]
        }

        assert message_to_record(message) == {"type": full["type"], "data": expected}


def test_the_unrolled_compaction_leaves_out_what_the_generic_rule_does() -> None:
    from chatmemory.history import _KINDS

    class Text(str):
        pass

    # Each field's default, equal values of other types (0 == False, 0 ==
    # 0.0), a str subclass equal to a default, empty and full containers.
    values = [None, False, True, 0, 1, 0.0, "", "ai", "success", Text("ai")]
    values += [Text("success"), {}, [], {"k": 1}, [1], (), "human", "tool"]
    for kind, how in _KINDS.items():
        for name in how.fields:
            for value in values:
                data = {**how.template, **how.fresh(), name: value}

                unrolled = how.compact_fields(data)

                assert unrolled == how.compact(data), (kind, name, value)
                assert list(unrolled) == list(how.compact(data))
                assert {type(v) for v in unrolled.values()} == {
                    type(v) for v in how.compact(data).values()
                }


def test_a_message_missing_a_required_field_is_compacted_too() -> None:
    # model_construct leaves a required field out of __dict__.
    message = AIMessage.model_construct(id="run-1", response_metadata={})

    assert message_to_record(message) == {"type": "ai", "data": {"id": "run-1"}}


def test_full_records_of_earlier_versions_and_other_tools_still_read(
    redis_client: redis.Redis,
) -> None:
    import json

    from langchain_core.messages import message_to_dict

    key = store.messages_key("older")
    written = every_kind_of_message()
    for message in written:
        # chatmemory before compact records; langchain_community's json.dumps.
        record = message_to_dict(message)
        redis_client.rpush(key, json.dumps(record, separators=(",", ":")))
        redis_client.rpush(key, json.dumps(record))

    read = DjangoRedisChatMessageHistory("older").messages

    assert read == [message for message in written for _ in range(2)]


def test_messages_read_from_compact_records_share_no_default() -> None:
    history = DjangoRedisChatMessageHistory("fresh-defaults")
    history.add_messages([AIMessage("one"), AIMessage("two")])
    first, second = history.messages

    first.additional_kwargs["k"] = 1
    first.tool_calls.append({"name": "t", "args": {}, "id": "1", "type": "tool_call"})

    assert second == AIMessage("two")
    assert AIMessage("three").additional_kwargs == {}


def test_values_only_model_dump_can_write_are_stored_as_before() -> None:
    import dataclasses
    import datetime
    import uuid

    from pydantic import BaseModel

    class Point(BaseModel):
        x: int

    @dataclasses.dataclass
    class Size:
        w: int

    history = DjangoRedisChatMessageHistory("dumped")
    history.add_messages(
        [
            AIMessage("m", additional_kwargs={"p": Point(x=1), "s": Size(w=2)}),
            AIMessage("t", response_metadata={"tuple": (1, 2)}),
        ]
    )

    assert history.messages == [
        AIMessage("m", additional_kwargs={"p": {"x": 1}, "s": {"w": 2}}),
        AIMessage("t", response_metadata={"tuple": [1, 2]}),
    ]
    # What json cannot write is refused, as before, and nothing is written.
    for value in (uuid.uuid4(), datetime.date(2026, 1, 1)):
        with pytest.raises(TypeError, match="not JSON serializable"):
            history.add_messages(
                [HumanMessage("x"), AIMessage("v", response_metadata={"v": value})]
            )
    assert len(history.messages) == 2


def test_nan_is_written_as_json_writes_it(redis_client: redis.Redis) -> None:
    history = DjangoRedisChatMessageHistory("nan")
    history.add_messages([AIMessage("n", response_metadata={"score": float("nan")})])

    (raw,) = redis_client.lrange(store.messages_key("nan"), 0, -1)
    (message,) = history.messages
    assert b'"score":NaN' in raw
    assert message.response_metadata["score"] != message.response_metadata["score"]


def test_order_is_kept_across_calls() -> None:
    history = DjangoRedisChatMessageHistory("order")
    for i in range(5):
        history.add_messages([HumanMessage(f"q{i}"), AIMessage(f"a{i}")])

    contents = [m.content for m in history.messages]

    assert contents == [x for i in range(5) for x in (f"q{i}", f"a{i}")]


def test_add_messages_is_one_round_trip_and_one_read(redis_client: redis.Redis) -> None:
    history = DjangoRedisChatMessageHistory("trips")
    history.add_messages([HumanMessage("warm up")])  # loads the script
    before = _commands(redis_client)
    history.add_messages([HumanMessage(str(i)) for i in range(10)])
    after_write = _commands(redis_client)
    assert len(history.messages) == 11
    after_read = _commands(redis_client)

    # One script and its own PTTLs (of the three indexes it keeps as long as
    # the session); on Redis Cluster, the index updates in its pipeline.
    indexes = {"eval": 3} if is_cluster() else {}
    assert after_write - before == {"evalsha": 1, "pttl": 3, **indexes}
    assert after_read - after_write == {"lrange": 1}


def _commands(client: redis.Redis) -> _Counts:
    calls = command_calls(client)
    return _Counts({k.removeprefix("cmdstat_"): v for k, v in calls.items()})


class _Counts(dict[str, int]):
    def __sub__(self, other: dict[str, int]) -> dict[str, int]:
        # Only the top-level commands clients send; INFO is the measurement
        # itself. COMMAND GETKEYS is what a cluster pipeline sends to route a
        # script it was not told the node of: a round trip more each.
        top_level = {"evalsha", "eval", "lrange", "script|load", "hgetall", "pttl"}
        top_level.add("command|getkeys")
        return {
            k: v - other.get(k, 0)
            for k, v in self.items()
            if k in top_level and v - other.get(k, 0)
        }


def test_large_batches_are_written_whole() -> None:
    history = DjangoRedisChatMessageHistory("large")
    history.add_messages([HumanMessage(str(i)) for i in range(2500)])

    assert [m.content for m in history.messages] == [str(i) for i in range(2500)]
    assert store.get_session("large").message_count == 2500  # type: ignore[union-attr]


def test_empty_add_messages_writes_nothing(redis_client: redis.Redis) -> None:
    DjangoRedisChatMessageHistory("nothing").add_messages([])

    assert store.get_session("nothing") is None


def test_add_messages_rejects_non_messages() -> None:
    with pytest.raises(TypeError, match="BaseMessage"):
        DjangoRedisChatMessageHistory("typed").add_messages(["hi"])  # type: ignore[list-item]


@override_settings(CHATMEMORY_MAX_MESSAGES=4)
def test_cap_keeps_the_newest_messages() -> None:
    history = DjangoRedisChatMessageHistory("capped")
    history.add_messages([HumanMessage(str(i)) for i in range(3)])
    history.add_messages([HumanMessage(str(i)) for i in range(3, 6)])

    assert [m.content for m in history.messages] == ["2", "3", "4", "5"]
    assert store.get_session("capped").message_count == 4  # type: ignore[union-attr]


@override_settings(CHATMEMORY_TTL=1)
def test_ttl_slides_with_every_write(redis_client: redis.Redis) -> None:
    history = DjangoRedisChatMessageHistory("sliding", owner=7)
    history.add_user_message("one")
    for key in (store.messages_key("sliding"), store.meta_key("sliding")):
        assert 0 < redis_client.pttl(key) <= 1000

    time.sleep(0.6)
    history.add_ai_message("two")  # restarts the TTL
    time.sleep(0.6)
    assert [m.content for m in history.messages] == ["one", "two"]

    time.sleep(0.6)  # more than a second since the last write
    assert history.messages == []
    assert store.get_session("sliding") is None
    assert store.list_sessions().sessions == []
    assert store.list_sessions(owner="7").sessions == []


@override_settings(CHATMEMORY_TTL=1, CHATMEMORY_REFRESH_TTL_ON_READ=True)
def test_ttl_refresh_on_read(redis_client: redis.Redis) -> None:
    history = DjangoRedisChatMessageHistory("read-refresh", owner=3)
    history.add_user_message("one")
    for _ in range(3):
        time.sleep(0.5)
        assert [m.content for m in history.messages] == ["one"]

    assert [s.session_id for s in store.list_sessions().sessions] == ["read-refresh"]
    assert [s.session_id for s in store.list_sessions(owner="3").sessions] == [
        "read-refresh"
    ]
    time.sleep(1.1)
    assert history.messages == []


@override_settings(CHATMEMORY_TTL=60)
def test_removing_the_ttl_setting_persists_sessions(redis_client: redis.Redis) -> None:
    history = DjangoRedisChatMessageHistory("persist")
    history.add_user_message("one")
    assert redis_client.pttl(store.messages_key("persist")) > 0

    with override_settings(CHATMEMORY_TTL=None):
        history.add_user_message("two")

    assert redis_client.pttl(store.messages_key("persist")) == -1
    assert redis_client.pttl(store.meta_key("persist")) == -1


def test_concurrent_writers_never_interleave() -> None:
    threads, calls, batch = 8, 50, 10  # 8 threads x 500 messages
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def writer(t: int) -> None:
        try:
            history = DjangoRedisChatMessageHistory("busy")
            start.wait()
            for c in range(calls):
                history.add_messages(
                    [HumanMessage(f"{t}:{c}:{i}") for i in range(batch)]
                )
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    workers = [threading.Thread(target=writer, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []

    contents = [str(m.content) for m in DjangoRedisChatMessageHistory("busy").messages]

    assert len(contents) == threads * calls * batch
    assert len(set(contents)) == len(contents)
    for offset in range(0, len(contents), batch):
        group = [c.rsplit(":", 1) for c in contents[offset : offset + batch]]
        assert {call for call, _ in group} == {group[0][0]}
        assert [int(i) for _, i in group] == list(range(batch))
    per_thread: dict[str, list[int]] = {}
    for offset in range(0, len(contents), batch):
        t, c, _ = contents[offset].split(":")
        per_thread.setdefault(t, []).append(int(c))
    assert all(cs == list(range(calls)) for cs in per_thread.values())


def test_a_reader_never_sees_half_a_write() -> None:
    history = DjangoRedisChatMessageHistory("halves")
    stop = threading.Event()
    sizes: set[int] = set()

    def reader() -> None:
        while not stop.is_set():
            sizes.add(len(DjangoRedisChatMessageHistory("halves").messages))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(200):
            history.add_messages([HumanMessage(f"{i}-{j}") for j in range(5)])
    finally:
        stop.set()
        thread.join()

    assert sizes <= set(range(0, 1001, 5))


async def test_async_methods_match_sync() -> None:
    written = every_kind_of_message()
    sync_history = DjangoRedisChatMessageHistory("parity-sync", owner=1)
    async_history = DjangoRedisChatMessageHistory("parity-async", owner=1)

    await asyncio.to_thread(sync_history.add_messages, written)
    await async_history.aadd_messages(written)

    assert await async_history.aget_messages() == written
    assert await asyncio.to_thread(lambda: async_history.messages) == written
    assert await sync_history.aget_messages() == written
    sync_info = await asyncio.to_thread(store.get_session, "parity-sync")
    async_info = await store.aget_session("parity-async")
    assert sync_info is not None and async_info is not None
    assert (sync_info.title, sync_info.owner, sync_info.message_count) == (
        async_info.title,
        async_info.owner,
        async_info.message_count,
    )

    await async_history.aclear()
    assert await async_history.aget_messages() == []
    assert await store.aget_session("parity-async") is None


async def test_async_client_is_one_per_event_loop() -> None:
    history = DjangoRedisChatMessageHistory("loops")
    await history.aadd_messages([HumanMessage("a")])
    first = store.client.async_client()

    def other_loop() -> object:
        async def run() -> object:
            await history.aadd_messages([HumanMessage("b")])
            client = store.client.async_client()
            await store.aclose_clients()
            return client

        return asyncio.run(run())

    second = await asyncio.to_thread(other_loop)

    assert store.client.async_client() is first
    assert second is not first
    assert [m.content for m in await history.aget_messages()] == ["a", "b"]


@override_settings(CHATMEMORY_TTL=1, CHATMEMORY_REFRESH_TTL_ON_READ=True)
async def test_async_read_refreshes_the_ttl(redis_client: redis.Redis) -> None:
    history = DjangoRedisChatMessageHistory("async-refresh")
    await history.aadd_messages([HumanMessage("x")])
    await asyncio.sleep(0.6)
    assert len(await history.aget_messages()) == 1
    await asyncio.sleep(0.6)
    assert len(await history.aget_messages()) == 1


def test_clear_removes_messages_meta_and_index_entries(
    redis_client: redis.Redis,
) -> None:
    history = DjangoRedisChatMessageHistory("to-clear", owner=5)
    history.add_user_message("bye")
    DjangoRedisChatMessageHistory("kept", owner=5).add_user_message("stay")

    history.clear()

    assert history.messages == []
    assert not redis_client.exists(
        store.messages_key("to-clear"), store.meta_key("to-clear")
    )
    for key in (store.sessions_key(), store.owner_key("5"), store.ids_key()):
        assert redis_client.zscore(key, "to-clear") is None
        assert redis_client.zscore(key, "kept") is not None


def test_corrupt_entries_are_skipped_with_a_warning(
    redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    history = DjangoRedisChatMessageHistory("corrupt")
    history.add_user_message("before")
    key = store.messages_key("corrupt")
    redis_client.rpush(
        key,
        b"not json {",
        b'"a string"',
        b'{"type": "martian", "data": {"content": "x"}}',
        b'{"type": "human"}',
        b'{"type": "tool", "data": {"content": "no tool_call_id"}}',
        b'{"type": "human", "data": {"content": 42}}',
        b'{"type": "ToolMessageChunk", "data": {"content": "no tool_call_id"}}',
        b"\xff\xfe",
    )
    history.add_ai_message("after")

    with caplog.at_level(logging.WARNING, logger="chatmemory"):
        messages = history.messages

    assert messages == [HumanMessage("before"), AIMessage("after")]
    assert len(caplog.records) == 8
    assert all("'corrupt'" in r.getMessage() for r in caplog.records)
    assert "unknown message type 'martian'" in caplog.text
    assert "not JSON" in caplog.text


def test_records_missing_optional_fields_are_validated() -> None:
    # Records written by other tools (or older LangChain) may omit fields.
    entries: list[Any] = [
        {"type": "ai", "data": {"content": "short", "tool_calls": []}},
        {"type": "human", "data": {"content": "hi", "extra_field": 1}},
    ]

    messages = records_to_messages(entries)

    assert messages == [AIMessage("short"), HumanMessage("hi", extra_field=1)]


@pytest.mark.parametrize(
    ("session_id", "message"),
    [
        ("", "must not be empty"),
        (None, "must be a str, not NoneType"),
        (42, "must be a str, not int"),
        (b"foo", "must be a str, not bytes"),
        ("x" * 201, "201 characters long; the limit is 200"),
        ("\ud800", "not valid Unicode"),
    ],
)
def test_bad_session_ids_fail_at_construction(session_id: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DjangoRedisChatMessageHistory(session_id)


@override_settings(CHATMEMORY_MAX_SESSION_ID_LENGTH=5)
def test_session_id_limit_is_a_setting() -> None:
    DjangoRedisChatMessageHistory("12345")
    with pytest.raises(ValueError, match="limit is 5"):
        DjangoRedisChatMessageHistory("123456")


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("a}:meta", "a"),
        ("{x}", "%7Bx%7D"),
        ("a:b", "a"),
        ("%", "%25"),
        ("x}", "x%7D"),
    ],
)
def test_no_session_id_reaches_another_sessions_keys(a: str, b: str) -> None:
    DjangoRedisChatMessageHistory(a).add_user_message("from a")
    DjangoRedisChatMessageHistory(b).add_user_message("from b")

    assert [m.content for m in DjangoRedisChatMessageHistory(a).messages] == ["from a"]
    assert [m.content for m in DjangoRedisChatMessageHistory(b).messages] == ["from b"]
    keys = {
        store.messages_key(a),
        store.meta_key(a),
        store.messages_key(b),
        store.meta_key(b),
    }
    assert len(keys) == 4


def test_odd_but_valid_ids_work() -> None:
    for session_id in ("foo", "with space", "\u00e9\u2603", "{}", "a\nb", "x" * 200):
        history = DjangoRedisChatMessageHistory(session_id)
        history.add_user_message(session_id)
        assert [m.content for m in history.messages] == [session_id]


def closed_port_caches() -> dict[str, Any]:
    from tests.redis_server import free_port

    return {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "chatmemory": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5},
        },
    }


def test_redis_down_raises_store_unavailable() -> None:
    with override_settings(CACHES=closed_port_caches()):
        history = DjangoRedisChatMessageHistory("down")
        for action in (
            lambda: history.messages,
            lambda: history.add_user_message("x"),
            history.clear,
        ):
            with pytest.raises(StoreUnavailable) as excinfo:
                action()
            assert isinstance(excinfo.value, ChatMemoryError)
            assert "CACHES['chatmemory']" in str(excinfo.value)
            assert "127.0.0.1:" in str(excinfo.value)
            assert excinfo.value.alias == "chatmemory"


async def test_redis_down_raises_store_unavailable_async() -> None:
    with override_settings(CACHES=closed_port_caches()):
        history = DjangoRedisChatMessageHistory("down")
        with pytest.raises(StoreUnavailable, match="CACHES\\['chatmemory'\\]"):
            await history.aget_messages()
        with pytest.raises(StoreUnavailable):
            await history.aadd_messages([HumanMessage("x")])
        with pytest.raises(StoreUnavailable):
            await history.aclear()


def test_repr() -> None:
    assert repr(DjangoRedisChatMessageHistory("foo")) == (
        "DjangoRedisChatMessageHistory('foo')"
    )


def test_owner_is_recorded_on_first_write() -> None:
    DjangoRedisChatMessageHistory("owned", owner=12).add_user_message("mine")
    with pytest.raises(OwnerMismatch, match="belongs to owner '12', not '99'"):
        DjangoRedisChatMessageHistory("owned", owner=99).add_user_message("not yours")
    DjangoRedisChatMessageHistory("owned").add_ai_message("anyone may add")

    info = store.get_session("owned")

    assert info is not None and info.owner == "12" and info.message_count == 2
    assert [s.session_id for s in store.list_sessions(owner="12").sessions] == ["owned"]
    assert store.list_sessions(owner="99").sessions == []


class HistoryEchoModel(BaseChatModel):
    """Answers with the first thing the human said earlier, and the turn count."""

    @property
    def _llm_type(self) -> str:
        return "history-echo"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, **kwargs: Any
    ) -> ChatResult:
        humans = [m.content for m in messages if isinstance(m, HumanMessage)]
        if len(humans) > 1:
            reply = f"Earlier you said: {humans[0]} ({len(humans) - 1} turns before)"
        else:
            reply = "Nice to meet you."
        return ChatResult(generations=[ChatGeneration(message=AIMessage(reply))])


def test_runnable_with_message_history_seed_chain() -> None:
    # The one place RunnableWithMessageHistory is used: proving compatibility.
    from langchain_core._api import LangChainDeprecationWarning
    from langchain_core.runnables.history import RunnableWithMessageHistory

    prompt = ChatPromptTemplate.from_messages(
        [
            ("system", "You're an assistant."),
            MessagesPlaceholder(variable_name="history"),
            ("human", "{question}"),
        ]
    )
    chain = prompt | HistoryEchoModel()
    with warnings.catch_warnings():
        # Deprecated upstream (removed in LangChain 2.0); our code does not use it.
        warnings.filterwarnings(
            "ignore",
            message="RunnableWithMessageHistory is deprecated",
            category=LangChainDeprecationWarning,
        )
        with_history = RunnableWithMessageHistory(
            chain,  # type: ignore[arg-type]
            lambda session_id: DjangoRedisChatMessageHistory(session_id),
            input_messages_key="question",
            history_messages_key="history",
        )
    config: Any = {"configurable": {"session_id": "foo"}}

    first = with_history.invoke({"question": "Hi! I'm bob"}, config=config)
    second = with_history.invoke({"question": "Whats my name"}, config=config)

    assert first.content == "Nice to meet you."
    assert second.content == "Earlier you said: Hi! I'm bob (1 turns before)"
    assert [m.content for m in DjangoRedisChatMessageHistory("foo").messages] == [
        "Hi! I'm bob",
        "Nice to meet you.",
        "Whats my name",
        second.content,
    ]


def test_each_record_says_when_it_was_stored(redis_client: redis.Redis) -> None:
    history = DjangoRedisChatMessageHistory("stamped")
    before = time.time_ns() // 1_000_000
    history.add_messages([HumanMessage("when?"), AIMessage("now")])
    after = time.time_ns() // 1_000_000
    import json

    raw = [
        json.loads(item)
        for item in redis_client.lrange(store.messages_key("stamped"), 0, -1)
    ]

    assert [sorted(record) for record in raw] == [["at", "data", "type"]] * 2
    assert all(before <= record["at"] <= after for record in raw)
    # What the history gives back is unchanged: the messages as written.
    assert history.messages == [HumanMessage("when?"), AIMessage("now")]
    assert messages_from_dict(raw) == history.messages


def test_a_record_time_can_be_given() -> None:
    records = messages_to_records([HumanMessage("then")], at=1_700_000_000_000)

    assert records[0]["at"] == 1_700_000_000_000
