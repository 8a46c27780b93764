from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.conf import settings
from django.test import override_settings
from langchain_core.language_models.fake_chat_models import (
    GenericFakeChatModel,
)
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
)
from langchain_core.outputs import ChatGenerationChunk
from langchain_openai import ChatOpenAI

from chatmemory import store
from chatmemory.exceptions import StoreUnavailable, TurnInProgress
from chatmemory.turn import (
    INTERRUPTED,
    ChatTurn,
    ModelFailed,
    achat,
    build_prompt,
    chat,
)
from tests.chat_models import HistoryModel, WholeAnswerModel
from tests.openai_server import openai_server

DOWN = {
    **settings.CACHES,
    "down": {
        "BACKEND": "django_redis.cache.RedisCache",
        # Port 1 on loopback: nothing listens, so connecting fails at once.
        "LOCATION": "redis://127.0.0.1:1/0",
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5},
    },
}


def stored(session_id: str) -> list[dict[str, Any]]:
    records = store.read_records(session_id)
    assert all(isinstance(record, dict) for record in records)
    return records  # type: ignore[return-value]


def texts(session_id: str) -> list[tuple[str, str]]:
    return [(r["type"], r["data"]["content"]) for r in stored(session_id)]


# --- the prompt -------------------------------------------------------------


def test_prompt_puts_system_history_question_in_order() -> None:
    history = [HumanMessage("hi"), AIMessage("hello")]
    with override_settings(CHATMEMORY_SYSTEM_PROMPT="Be brief, {not a variable}."):
        messages = build_prompt().invoke(
            {"history": history, "question": "and {this}?"}
        )
    assert messages.to_messages() == [
        SystemMessage("Be brief, {not a variable}."),
        HumanMessage("hi"),
        AIMessage("hello"),
        HumanMessage("and {this}?"),
    ]


# --- a turn -----------------------------------------------------------------


def test_turn_streams_tokens_and_saves_both_messages_once(
    redis_client: redis.Redis,
) -> None:
    model = GenericFakeChatModel(messages=iter([AIMessage("Paris is the capital")]))
    turn = ChatTurn("s1", "Capital of France?", owner="7", model=model)
    tokens = []
    for token in turn.stream():
        tokens.append(token)
        assert store.read_records("s1") == []  # nothing saved before the end
    assert len(tokens) > 2
    assert "".join(tokens) == "Paris is the capital" == turn.reply
    assert texts("s1") == [
        ("human", "Capital of France?"),
        ("ai", "Paris is the capital"),
    ]
    assert turn.message_count == 2
    info = store.get_session("s1")
    assert info is not None and info.owner == "7"
    assert info.title == "Capital of France?"
    assert turn.message is not None
    assert not turn.message.response_metadata.get(INTERRUPTED)


async def test_async_turn_streams_and_saves() -> None:
    model = GenericFakeChatModel(messages=iter([AIMessage("one two three")]))
    turn = ChatTurn("a1", "count", model=model)
    tokens = [token async for token in turn.astream()]
    assert len(tokens) == 5  # words and the spaces between them
    assert texts("a1") == [("human", "count"), ("ai", "one two three")]
    assert turn.message_count == 2


async def test_an_async_turn_makes_no_task_per_token() -> None:
    # A ``prompt | model`` sequence hands every chunk on in an asyncio task of
    # its own (two event loop iterations a token); the turn streams the model
    # on the prompt's messages, so a long reply costs no more tasks than a
    # short one.
    loop = asyncio.get_running_loop()
    created: list[object] = []

    def counting(
        loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any
    ) -> asyncio.Task[Any]:
        created.append(coro)
        return asyncio.Task(coro, loop=loop, **kwargs)

    model = GenericFakeChatModel(messages=iter([AIMessage(" ".join(["word"] * 50))]))
    loop.set_task_factory(counting)
    try:
        tokens = [token async for token in ChatTurn("a2", "go", model=model).astream()]
    finally:
        loop.set_task_factory(None)
    assert len(tokens) == 99  # the words and the spaces between them
    assert len(created) < 10
    assert texts("a2")[-1] == ("ai", " ".join(["word"] * 50))


class MetadataModel(GenericFakeChatModel):
    """Streams chunks carrying usage and response metadata, as providers do."""

    def _stream(self, *args: Any, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        for position, word in enumerate(["one", " two", " three"]):
            yield ChatGenerationChunk(
                message=AIMessageChunk(
                    content=word,
                    usage_metadata={
                        "input_tokens": 5 if position == 0 else 0,
                        "output_tokens": 1,
                        "total_tokens": 6 if position == 0 else 1,
                    },
                    response_metadata={"model_name": "m"} if position == 2 else {},
                )
            )


def test_the_saved_reply_merges_every_chunk() -> None:
    turn = ChatTurn("m1", "count", model=MetadataModel(messages=iter([])))
    assert "".join(turn.stream()) == "one two three"
    assert turn.message is not None
    assert turn.message.text == "one two three"
    assert turn.message.usage_metadata == {
        "input_tokens": 5,
        "output_tokens": 3,
        "total_tokens": 8,
    }
    assert turn.message.response_metadata["model_name"] == "m"
    saved = stored("m1")[-1]["data"]
    assert saved["content"] == "one two three"
    assert saved["usage_metadata"]["output_tokens"] == 3


def test_the_model_gets_the_history_and_remembers() -> None:
    model = HistoryModel()
    chat("h1", "my name is Ada", model=model)
    reply = chat("h1", "what is my name?", model=model)
    # system, first question, first answer, second question
    assert reply.text.startswith("4 messages; you said: my name is Ada | what is")
    assert [m.type for m in model.seen[-1]] == ["system", "human", "ai", "human"]
    assert len(stored("h1")) == 4


async def test_async_chat_gets_the_history() -> None:
    model = HistoryModel()
    await achat("h2", "first", model=model)
    reply = await achat("h2", "second", model=model)
    assert "first | second" in reply.text
    assert len(await store.aread_records("h2")) == 4


def test_history_is_trimmed_to_the_prompt_budget() -> None:
    model = HistoryModel()
    for number in range(6):
        chat("t1", f"question {number} " + "word " * 40, model=model)
    with override_settings(CHATMEMORY_PROMPT_MAX_TOKENS=600):
        chat("t1", "last", model=model)
    prompt = model.seen[-1]
    assert prompt[0].type == "system"
    assert prompt[1].type == "human"  # trimming starts on a human message
    assert 3 <= len(prompt) < 14  # some history kept, not all of it
    assert prompt[-1].text == "last"
    assert len(stored("t1")) == 14  # trimming never touches what is stored


def test_a_model_without_streaming_still_works() -> None:
    reply = chat("w1", "hi", model=WholeAnswerModel(reply="in one go"))
    assert reply.text == "in one go"
    assert texts("w1")[-1] == ("ai", "in one go")


def test_a_model_failure_saves_nothing() -> None:
    turn = ChatTurn("f1", "hello", model=HistoryModel(fail_after=2))
    tokens = []
    with pytest.raises(ModelFailed, match="RuntimeError") as info:
        for token in turn.stream():
            tokens.append(token)
    assert len(tokens) == 2  # it failed mid-stream
    assert "nothing was saved" in info.value.user_message
    assert store.read_records("f1") == []
    assert store.get_session("f1") is None


async def test_an_async_model_failure_saves_nothing() -> None:
    turn = ChatTurn("f2", "hello", model=HistoryModel(fail_after=0))
    with pytest.raises(ModelFailed):
        await turn.arun()
    assert await store.aread_records("f2") == []


def test_a_stopped_reply_is_saved_as_far_as_it_got() -> None:
    turn = ChatTurn("x1", "tell me", model=HistoryModel())
    stream = turn.stream()
    got = [next(stream), next(stream), next(stream)]
    stream.close()
    records = stored("x1")
    assert [r["type"] for r in records] == ["human", "ai"]
    assert records[1]["data"]["content"] == "".join(got)
    assert records[1]["data"]["response_metadata"][INTERRUPTED] is True
    assert turn.message_count == 2


def test_a_reply_stopped_before_any_token_keeps_the_question() -> None:
    turn = ChatTurn("x2", "tell me", model=HistoryModel())
    stream = turn.stream()
    stream.close()  # never started: nothing to save
    assert store.read_records("x2") == []
    stream = turn.stream()
    next(stream)
    turn._chunks.clear()  # as if the model had produced nothing yet
    stream.close()
    records = stored("x2")
    assert [r["data"]["content"] for r in records] == ["tell me", ""]
    assert records[1]["data"]["response_metadata"][INTERRUPTED] is True


async def test_an_async_stopped_reply_is_saved() -> None:
    turn = ChatTurn("x3", "tell me", model=HistoryModel())
    stream = turn.astream()
    first = await anext(stream)
    await stream.aclose()
    records = await store.aread_records("x3")
    assert records[1]["data"]["content"] == first  # type: ignore[index]
    assert records[1]["data"]["response_metadata"][INTERRUPTED]  # type: ignore[index]


async def test_a_cancelled_async_turn_is_saved_as_interrupted() -> None:
    turn = ChatTurn("x4", "slowly", model=HistoryModel(token_delay=0.05))
    received: list[str] = []

    async def consume() -> None:
        async for token in turn.astream():
            received.append(token)

    task = asyncio.create_task(consume())
    while len(received) < 2:
        await asyncio.sleep(0.01)
    task.cancel()  # what an ASGI server does when the client goes away
    with pytest.raises(asyncio.CancelledError):
        await task
    records = await store.aread_records("x4")
    assert records[1]["data"]["content"] == "".join(received)  # type: ignore[index]
    assert records[1]["data"]["response_metadata"][INTERRUPTED]  # type: ignore[index]


def test_a_stopped_reply_that_cannot_be_saved_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    turn = ChatTurn("x5", "tell me", model=HistoryModel())
    stream = turn.stream()
    next(stream)
    with override_settings(CACHES=DOWN, CHATMEMORY_CACHE_ALIAS="down"):
        stream.close()
    assert "could not save the stopped reply" in caplog.text
    assert store.read_records("x5") == []


async def test_an_async_stopped_reply_that_cannot_be_saved_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    turn = ChatTurn("x6", "tell me", model=HistoryModel())
    stream = turn.astream()
    await anext(stream)
    with override_settings(CACHES=DOWN, CHATMEMORY_CACHE_ALIAS="down"):
        await stream.aclose()
    assert "could not save the stopped reply" in caplog.text


def test_redis_down_before_the_turn_raises_store_unavailable() -> None:
    with (
        override_settings(CACHES=DOWN, CHATMEMORY_CACHE_ALIAS="down"),
        pytest.raises(StoreUnavailable),
    ):
        chat("d1", "hello", model=HistoryModel())


def test_bad_session_ids_fail_at_construction() -> None:
    with pytest.raises(ValueError, match="empty"):
        ChatTurn("", "hi", model=HistoryModel())


def pairs_intact(records: list[dict[str, Any]]) -> bool:
    """Each human message is followed by the answer to exactly it."""
    if len(records) % 2:
        return False
    for human, ai in zip(records[::2], records[1::2], strict=True):
        if human["type"] != "human" or ai["type"] != "ai":
            return False
        if human["data"]["content"] not in ai["data"]["content"]:
            return False
    return True


def test_concurrent_turns_on_one_session_never_interleave() -> None:
    model = HistoryModel(token_delay=0.005)
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def run(number: int) -> None:
        try:
            barrier.wait()
            chat("c1", f"question-{number}", model=model)
        except BaseException as exc:  # reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    records = stored("c1")
    assert len(records) == 8
    assert pairs_intact(records)
    # They really overlapped: some turn did not see the others' messages.
    assert min(len(prompt) for prompt in model.seen) < 8


async def test_concurrent_async_turns_never_interleave() -> None:
    model = HistoryModel(token_delay=0.005)
    await asyncio.gather(*(achat("c2", f"question-{n}", model=model) for n in range(4)))
    records = await store.aread_records("c2")
    assert pairs_intact(records)  # type: ignore[arg-type]
    assert len(records) == 8


# --- the real ChatOpenAI client against a loopback server --------------------


def openai_model(base_url: str, **kwargs: Any) -> ChatOpenAI:
    return ChatOpenAI(
        model="fake-model",
        base_url=base_url,
        api_key="test",  # type: ignore[arg-type]
        max_retries=0,
        **kwargs,
    )


def test_chatopenai_streams_a_reply_over_http() -> None:
    with openai_server() as server:
        model = openai_model(server.base_url, timeout=5)
        chat("o1", "first", model=model)
        turn = ChatTurn("o1", "second question", model=model)
        tokens = list(turn.stream())
    assert len(tokens) > 3
    assert turn.reply == "I got 4 messages. You said: second question"
    request = server.requests[-1]
    assert request["stream"] is True
    assert request["model"] == "fake-model"
    assert [m["role"] for m in request["messages"]] == [
        "system",
        "user",
        "assistant",
        "user",
    ]
    assert texts("o1")[-1] == ("ai", turn.reply)


async def test_chatopenai_streams_async() -> None:
    with openai_server() as server:
        model = openai_model(server.base_url, timeout=5)
        reply = await achat("o2", "hi there", model=model)
    assert reply.text == "I got 2 messages. You said: hi there"
    assert len(await store.aread_records("o2")) == 2


@pytest.mark.parametrize(
    ("mode", "words"),
    [
        ("404", 'HTTP 404): model "fake-model" not found, try pulling it first'),
        ("429", "HTTP 429"),
        ("500", "HTTP 500"),
        ("slow", "did not answer in time"),
        ("break", "nothing was saved"),
    ],
)
def test_chatopenai_failures_save_nothing(mode: str, words: str) -> None:
    with openai_server() as server:
        server.mode = mode
        server.delay = 2.0
        model = openai_model(server.base_url, timeout=0.5)
        with pytest.raises(ModelFailed) as info:
            chat("o3", "hello", model=model)
    assert words in info.value.user_message
    assert store.read_records("o3") == []
    assert len(server.requests) == 1  # max_retries=0: one request, no retry


@pytest.mark.parametrize("mode", ["429", "500", "slow"])
async def test_chatopenai_failures_save_nothing_async(mode: str) -> None:
    with openai_server() as server:
        server.mode = mode
        model = openai_model(server.base_url, timeout=0.5)
        with pytest.raises(ModelFailed):
            await achat("o4", "hello", model=model)
    assert await store.aread_records("o4") == []


# --- odd stored records -------------------------------------------------------


def good_and_bad(session_id: str) -> None:
    human = {"type": "human", "data": {"content": "", "additional_kwargs": {}}}
    store.append_records(
        session_id,
        [
            {"type": "human", "data": {"content": "I like tea"}},
            {"type": "ai", "data": {"content": "noted"}},
            {"type": "remove", "data": {"content": "", "id": "m1"}},
            # Fields the fast reader takes as they are, with the wrong types.
            {**human, "data": {**human["data"], "content": [5]}},
            {"type": "ai", "data": {"content": "x", "tool_calls": "abc"}},
            {"type": "ai", "data": {"content": "y", "id": 5}},  # coerced: usable
        ],
    )


def test_records_a_model_cannot_take_are_left_out_of_the_prompt(
    caplog: pytest.LogCaptureFixture,
) -> None:
    good_and_bad("bad1")
    model = HistoryModel()
    reply = chat("bad1", "what do I like?", model=model)
    assert "I like tea" in reply.text
    prompt = model.seen[-1]
    assert [m.text for m in prompt[1:]] == [
        "I like tea",
        "noted",
        "y",
        "what do I like?",
    ]
    assert len(stored("bad1")) == 8  # nothing stored is dropped
    assert "RemoveMessage" in caplog.text and "out of the prompt" in caplog.text


async def test_async_turns_leave_them_out_too() -> None:
    good_and_bad("bad2")
    model = HistoryModel()
    await achat("bad2", "and now?", model=model)
    texts = [m.text for m in model.seen[-1][1:]]
    assert texts == ["I like tea", "noted", "y", "and now?"]


def test_a_record_that_breaks_trimming_is_left_out() -> None:
    store.append_records(
        "bad3",
        [
            {"type": "human", "data": {"content": "hello", "name": 5}},
            {"type": "human", "data": {"content": "I like tea"}},
            {"type": "ai", "data": {"content": "noted"}},
        ],
    )
    model = HistoryModel()
    chat("bad3", "what do I like?", model=model)
    assert [m.text for m in model.seen[-1][1:]] == [
        "I like tea",
        "noted",
        "what do I like?",
    ]


def test_a_prompt_that_cannot_be_built_is_a_model_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: object) -> object:
        raise KeyError("boom")

    monkeypatch.setattr(ChatTurn, "_fit", broken)
    with pytest.raises(ModelFailed, match="could not be turned into a prompt"):
        chat("bad4", "hello", model=HistoryModel())
    assert stored("bad4") == []


def test_prompt_problem_names_what_is_wrong() -> None:
    from langchain_core.messages import RemoveMessage

    from chatmemory.turn import prompt_problem

    assert prompt_problem(HumanMessage("fine")) == ""
    assert "RemoveMessage" in prompt_problem(RemoveMessage(id="x"))
    odd = AIMessage.model_construct(content="x", tool_calls="abc")
    assert "AttributeError" in prompt_problem(odd)
    blocks = HumanMessage.model_construct(content=[5])
    assert "ValidationError" in prompt_problem(blocks)


BAD_RECORDS = {
    "additional_kwargs not a dict": {
        "type": "human",
        "data": {"content": "bad", "additional_kwargs": 5},
    },
    "response_metadata not a dict": {
        "type": "ai",
        "data": {"content": "bad", "response_metadata": [1]},
    },
    "name not text": {"type": "human", "data": {"content": "bad", "name": 5}},
    "id not text": {"type": "human", "data": {"content": "bad", "id": [1]}},
    "another type inside": {"type": "human", "data": {"content": "bad", "type": "ai"}},
    "content not text or blocks": {"type": "ai", "data": {"content": [5]}},
    "tool calls not a list": {
        "type": "ai",
        "data": {"content": "x", "tool_calls": "a"},
    },
    "tool call without a name": {
        "type": "ai",
        "data": {"content": "bad", "tool_calls": [{"args": {}, "id": "1"}]},
    },
    "tool call name not text": {
        "type": "ai",
        "data": {"content": "bad", "tool_calls": [{"name": 5, "args": {}, "id": "1"}]},
    },
    "tool call args not a dict": {
        "type": "ai",
        "data": {
            "content": "bad",
            "tool_calls": [{"name": "f", "args": "", "id": "1"}],
        },
    },
    "tool call with a stray key": {
        "type": "ai",
        "data": {
            "content": "bad",
            "tool_calls": [{"name": "f", "args": {}, "id": "1", "index": 0}],
        },
    },
    "invalid tool calls not a list": {
        "type": "ai",
        "data": {"content": "bad", "invalid_tool_calls": "x"},
    },
    "provider tool calls that parse to a bad one": {
        "type": "ai",
        "data": {
            "content": "bad",
            "additional_kwargs": {
                "tool_calls": [
                    {
                        "function": {"name": 5, "arguments": "{}"},
                        "id": "1",
                        "type": "function",
                    }
                ]
            },
        },
    },
    "usage without a total": {
        "type": "ai",
        "data": {
            "content": "bad",
            "usage_metadata": {"input_tokens": 1, "output_tokens": 1},
        },
    },
    "usage count not a number": {
        "type": "ai",
        "data": {
            "content": "bad",
            "usage_metadata": {
                "input_tokens": "many",
                "output_tokens": 1,
                "total_tokens": 2,
            },
        },
    },
    "a RemoveMessage": {"type": "remove", "data": {"content": "", "id": "m1"}},
    "a block whose tokens cannot be counted": {
        "type": "human",
        "data": {"content": [{"type": {"not": "hashable"}, "text": "bad"}]},
    },
}


@pytest.mark.parametrize("kind", BAD_RECORDS)
def test_a_malformed_record_of_each_kind_is_left_out_with_a_warning(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    store.append_records(
        "odd",
        [
            {"type": "human", "data": {"content": "I like tea"}},
            {"type": "ai", "data": {"content": "noted"}},
            BAD_RECORDS[kind],
            {"type": "human", "data": {"content": "and coffee"}},
            {"type": "ai", "data": {"content": "noted too"}},
        ],
    )
    model = HistoryModel()
    chat("odd", "what do I like?", model=model)
    assert [m.text for m in model.seen[-1][1:]] == [
        "I like tea",
        "noted",
        "and coffee",
        "noted too",
        "what do I like?",
    ]
    assert "out of the prompt" in caplog.text


def _messages_of_every_shape() -> list[BaseMessage]:
    call = {"name": "lookup", "args": {"q": "tea"}, "id": "c1", "type": "tool_call"}
    usage = {
        "input_tokens": 10,
        "output_tokens": 5,
        "total_tokens": 15,
        "input_token_details": {"cache_read": 2},
        "output_token_details": {"reasoning": 1},
    }
    return [
        HumanMessage("hello there"),
        HumanMessage("hi", id="m1", name="ada"),
        AIMessage("a reply", response_metadata={"model_name": "gpt"}),
        AIMessage("", tool_calls=[call]),
        AIMessage("with usage", usage_metadata=usage, id="r1"),  # type: ignore[arg-type]
        AIMessage([{"type": "text", "text": "block"}, "and text"]),
        SystemMessage("be brief"),
    ]


def test_the_common_shapes_go_to_the_prompt_without_a_full_validation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from chatmemory.history import messages_to_records, records_to_messages
    from chatmemory.turn import prompt_problem

    def refuse(cls: object, *args: object, **kwargs: object) -> object:
        raise AssertionError("validated in full")

    messages = _messages_of_every_shape()
    read_back = records_to_messages(messages_to_records(messages))
    for cls in (HumanMessage, AIMessage, SystemMessage):
        monkeypatch.setattr(cls, "model_validate", classmethod(refuse))
    assert [prompt_problem(m) for m in messages + read_back] == [""] * 14


def test_a_message_passed_without_validation_always_validates() -> None:
    import random

    from chatmemory.turn import _well_formed

    good_call = {"name": "f", "args": {"a": 1}, "id": "1"}
    choices: dict[str, list[Any]] = {
        "content": ["x", "", [], ["a", {"type": "text", "text": "t"}], [5], None, 5],
        "additional_kwargs": [{}, {"k": 1}, 5, None, {"tool_calls": "zzz"}],
        "response_metadata": [{}, {"a": 1}, 5, None, []],
        "type": ["human", "ai", "system", "tool", 5, None],
        "name": [None, "bob", "", 5, ["x"]],
        "id": [None, "m1", 5, 1.5, ["x"]],
        "tool_calls": [
            [],
            [good_call],
            [{**good_call, "type": "tool_call"}],
            [{**good_call, "id": None}],
            [{**good_call, "type": "other"}],
            [{**good_call, "index": 0}],
            [{**good_call, "name": 5}],
            [{**good_call, "args": "s"}],
            [{**good_call, "args": {1: 2}}],
            [{"name": "f", "args": {}}],
            [5],
            "abc",
            None,
        ],
        "invalid_tool_calls": [[], [{"name": "f", "args": "{", "id": "1"}], "x"],
        "usage_metadata": [
            None,
            {"input_tokens": 1, "output_tokens": 2, "total_tokens": 3},
            {
                "input_tokens": 1,
                "output_tokens": 2,
                "total_tokens": 3,
                "input_token_details": {"audio": 1},
            },
            {"input_tokens": 1, "output_tokens": 2, "total_tokens": True},
            {"input_tokens": 1, "output_tokens": 2, "total_tokens": 3.0},
            {"input_tokens": 1, "output_tokens": 2},
            {"input_tokens": 1, "output_tokens": 2, "total_tokens": 3, "x": 1},
            {
                "input_tokens": 1,
                "output_tokens": 2,
                "total_tokens": 3,
                "output_token_details": {"thinking": 1},
            },
            5,
        ],
    }
    rng = random.Random(8)
    passed = 0
    for _ in range(4000):
        cls = rng.choice([HumanMessage, AIMessage, SystemMessage])
        message = cls.model_construct(content="x")
        values = message.__dict__
        values["type"] = values["type"]  # the right type, unless picked below
        for field in rng.sample(sorted(values), rng.randint(1, 3)):
            values[field] = rng.choice(choices[field])
        if rng.random() < 0.05:
            del values[rng.choice(sorted(values))]
        if rng.random() < 0.05:
            values["extra"] = 1
        if _well_formed(message):
            passed += 1
            cls.model_validate(dict(values))  # raises if the look was wrong
            message.text  # noqa: B018
    assert 400 < passed < 3600  # both answers were put to the test


def test_a_text_record_is_measured_as_its_message_would_be() -> None:
    import random

    from chatmemory.history import records_to_messages
    from chatmemory.turn import _cost, _record_tokens

    choices: dict[str, list[Any]] = {
        "content": ["x", "", "é" * 9, [], [{"type": "text", "text": "t"}], None, 5],
        "type": ["human", "ai", "system", 5, None, ["human"]],
        "id": [None, "m1", 5, ["x"]],
        "name": [None, "", "bob", 5],
        "additional_kwargs": [{}, {"k": 1}, {"tool_calls": [{"id": "1"}]}, 5, []],
        "response_metadata": [{}, {"a": 1}, 5, None],
        "tool_calls": [[], [{"name": "f", "args": {}, "id": "1"}], "x", None],
        "invalid_tool_calls": [[], [{"name": "f", "args": "{", "id": "1"}], 5],
        "usage_metadata": [
            None,
            {"input_tokens": 1, "output_tokens": 2, "total_tokens": 3},
            {"input_tokens": 1, "output_tokens": 2},
            {"input_tokens": 1, "output_tokens": 2, "total_tokens": "3"},
            5,
        ],
        "example": [False, True],
    }
    rng = random.Random(12)
    measured = 0
    for _ in range(4000):
        kind = rng.choice(["human", "ai", "ai", "human", "system", "tool", 5])
        data: dict[str, Any] = {"content": "a question of some length"}
        for field in rng.sample(sorted(choices), rng.randint(0, 3)):
            data[field] = rng.choice(choices[field])
        if rng.random() < 0.05:
            del data["content"]
        record = {"type": kind, "data": data}
        tokens = _record_tokens(record)
        if tokens is not None:
            measured += 1
            [message] = records_to_messages([record])
            assert _cost(message) == tokens, record
    assert 400 < measured < 3600  # both answers were put to the test


def test_message_tokens_is_the_approximate_count_and_adds_up() -> None:
    from langchain_core.messages import ToolMessage
    from langchain_core.messages.utils import count_tokens_approximately

    from chatmemory.turn import message_tokens

    messages = [
        *_messages_of_every_shape(),
        HumanMessage(""),
        HumanMessage("x" * 13, name=""),
        AIMessage("é" * 7),
        AIMessage([{"type": "image_url", "image_url": {"url": "data:,"}}]),
        ToolMessage("42", tool_call_id="c1"),
    ]
    assert [message_tokens(m) for m in messages] == [
        count_tokens_approximately([m]) for m in messages
    ]
    assert sum(map(message_tokens, messages)) == count_tokens_approximately(messages)


def _random_history(rng: Any) -> list[BaseMessage]:
    from langchain_core.messages import RemoveMessage, ToolMessage

    makers = [
        lambda: HumanMessage("q " * rng.randint(0, 60)),
        lambda: AIMessage("a " * rng.randint(0, 120)),
        lambda: AIMessage("", tool_calls=[{"name": "f", "args": {}, "id": "c"}]),
        lambda: ToolMessage("result " * rng.randint(0, 9), tool_call_id="c"),
        lambda: HumanMessage("named", name="ada"),
        lambda: SystemMessage("mid-chat system " * rng.randint(0, 5)),
        lambda: HumanMessage.model_construct(content=[5]),  # unusable
        lambda: RemoveMessage(id="r"),  # unusable
    ]
    weights = [30, 30, 4, 4, 3, 2, 2, 2]
    history = [rng.choices(makers, weights)[0]() for _ in range(rng.randint(0, 40))]
    if history and rng.random() < 0.3:
        history[0] = SystemMessage("system " * rng.randint(0, 40))
    return history


def test_the_prompt_is_what_trim_messages_keeps_of_the_usable_messages() -> None:
    import random

    from langchain_core.messages import trim_messages

    from chatmemory.turn import prompt_problem

    rng = random.Random(88)
    turn = ChatTurn("trim", "q", model=HistoryModel())
    for _ in range(400):
        history = _random_history(rng)
        budget = rng.randint(0, 600)
        usable = [m for m in history if not prompt_problem(m)]
        expected = trim_messages(
            usable,
            max_tokens=budget,
            token_counter="approximate",
            strategy="last",
            start_on="human",
            include_system=True,
        )
        with override_settings(CHATMEMORY_PROMPT_MAX_TOKENS=budget):
            kept = turn.prompt_input(history)["history"]
        assert [id(m) for m in kept] == [id(m) for m in expected]


# --- the time limit ---------------------------------------------------------------


def test_a_reply_over_the_time_limit_is_stopped_and_saved_as_stopped() -> None:
    turn = ChatTurn("tl1", "tell me", model=HistoryModel(token_delay=0.05))
    with override_settings(CHATMEMORY_TURN_TIME_LIMIT=0.12):
        tokens = list(turn.stream())
    assert turn.timed_out
    assert 1 <= len(tokens) < 6  # the full reply has 8 tokens
    records = stored("tl1")
    assert records[1]["data"]["content"] == "".join(tokens)
    assert records[1]["data"]["response_metadata"][INTERRUPTED] is True
    assert turn.message_count == 2


async def test_an_async_reply_over_the_time_limit_is_stopped() -> None:
    turn = ChatTurn("tl2", "tell me", model=HistoryModel(token_delay=0.05))
    with override_settings(CHATMEMORY_TURN_TIME_LIMIT=0.12):
        tokens = [token async for token in turn.astream()]
    assert turn.timed_out and 1 <= len(tokens) < 6
    assert stored("tl2")[1]["data"]["response_metadata"][INTERRUPTED] is True


def model_streams() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "chatmemory-model-stream"]


@pytest.mark.parametrize(
    ("pauses", "tokens_before"),
    [({0: 0.6, 1: 5}, 0), ({2: 0.6, 3: 5}, 2)],
    ids=["slow first token", "stall mid-stream"],
)
def test_the_time_limit_holds_while_the_model_sends_nothing(
    pauses: dict[int, float], tokens_before: int
) -> None:
    session_id = f"tl-silent-{tokens_before}"
    turn = ChatTurn(session_id, "tell me", model=HistoryModel(pauses=pauses))
    started = time.monotonic()
    with override_settings(CHATMEMORY_TURN_TIME_LIMIT=0.15):
        tokens = list(turn.stream())
    assert time.monotonic() - started < 0.45  # not after the model's pause
    assert turn.timed_out and len(tokens) == tokens_before
    # The question and the reply so far, marked stopped.
    records = stored(session_id)
    assert [r["type"] for r in records] == ["human", "ai"]
    assert records[0]["data"]["content"] == "tell me"
    assert records[1]["data"]["content"] == "".join(tokens)
    assert records[1]["data"]["response_metadata"][INTERRUPTED] is True
    # The thread reading the model stops at its next chunk (not after the
    # next pause).
    for thread in model_streams():
        thread.join(timeout=2)
    assert not model_streams()


@pytest.mark.parametrize(
    ("pauses", "tokens_before"),
    [({0: 0.6, 1: 5}, 0), ({2: 0.6, 3: 5}, 2)],
    ids=["slow first token", "stall mid-stream"],
)
async def test_the_async_time_limit_holds_while_the_model_sends_nothing(
    pauses: dict[int, float], tokens_before: int
) -> None:
    session_id = f"atl-silent-{tokens_before}"
    turn = ChatTurn(session_id, "tell me", model=HistoryModel(pauses=pauses))
    started = time.monotonic()
    with override_settings(CHATMEMORY_TURN_TIME_LIMIT=0.15):
        tokens = [token async for token in turn.astream()]
    assert time.monotonic() - started < 0.45
    assert turn.timed_out and len(tokens) == tokens_before
    records = stored(session_id)
    assert [r["type"] for r in records] == ["human", "ai"]
    assert records[1]["data"]["content"] == "".join(tokens)
    assert records[1]["data"]["response_metadata"][INTERRUPTED] is True


def test_a_model_error_under_the_time_limit_is_still_a_model_failure() -> None:
    turn = ChatTurn("tl-fail", "tell me", model=HistoryModel(fail_after=2))
    with override_settings(CHATMEMORY_TURN_TIME_LIMIT=5), pytest.raises(ModelFailed):
        list(turn.stream())
    assert stored("tl-fail") == []


def test_a_reply_stopped_under_the_time_limit_is_saved_as_far_as_it_was_read() -> None:
    turn = ChatTurn("tl-stop", "tell me", model=HistoryModel(pauses={3: 0.3}))
    with override_settings(CHATMEMORY_TURN_TIME_LIMIT=5):
        tokens = turn.stream()
        shown = [next(tokens), next(tokens)]
        tokens.close()
    records = stored("tl-stop")
    assert records[1]["data"]["content"] == "".join(shown)
    assert records[1]["data"]["response_metadata"][INTERRUPTED] is True
    for thread in model_streams():
        thread.join(timeout=2)
    assert not model_streams()


def test_without_a_time_limit_a_slow_reply_completes() -> None:
    turn = ChatTurn("tl3", "tell me", model=HistoryModel(token_delay=0.02))
    with override_settings(CHATMEMORY_TURN_TIME_LIMIT=None):
        turn.run()
    assert not turn.timed_out
    assert INTERRUPTED not in stored("tl3")[1]["data"].get("response_metadata", {})


# --- one exclusive turn at a time ---------------------------------------------------


def test_an_exclusive_turn_refuses_to_run_beside_another() -> None:
    assert store.lock_turn("ex1", "other", seconds=30)
    turn = ChatTurn("ex1", "hi", model=HistoryModel(), exclusive=True)
    with pytest.raises(TurnInProgress) as info:
        turn.run()
    assert "already being written" in info.value.user_message
    assert stored("ex1") == []
    chat("ex1", "not exclusive: runs", model=HistoryModel())  # the Python API
    assert len(stored("ex1")) == 2


def test_an_exclusive_turn_releases_its_lock_when_done_or_stopped() -> None:
    ChatTurn("ex2", "hi", model=HistoryModel(), exclusive=True).run()
    stream = ChatTurn("ex2", "again", model=HistoryModel(), exclusive=True).stream()
    next(stream)
    assert not store.lock_turn("ex2", "probe", seconds=30)  # held while it runs
    stream.close()  # the user stopped it
    assert store.lock_turn("ex2", "probe", seconds=30)
    assert stored("ex2")[3]["data"]["response_metadata"][INTERRUPTED] is True


async def test_an_async_exclusive_turn_locks_too() -> None:
    assert await store.alock_turn("ex3", "other", seconds=30)
    with pytest.raises(TurnInProgress):
        await ChatTurn("ex3", "hi", model=HistoryModel(), exclusive=True).arun()
    assert await store.aunlock_turn("ex3", "other")
    turn = ChatTurn("ex3", "hi", model=HistoryModel(), exclusive=True)
    stream = turn.astream()
    await stream.__anext__()
    assert not await store.alock_turn("ex3", "probe", seconds=30)
    await stream.aclose()
    assert await store.alock_turn("ex3", "probe", seconds=30)
    assert len(stored("ex3")) == 2


# --- the tail read, write ids, a chat deleted meanwhile -------------------------


def _long_session(session_id: str, n: int) -> None:
    store.append_records(
        session_id,
        [
            {
                "type": "human" if i % 2 == 0 else "ai",
                "data": {"content": f"message {i} " + "word " * (i % 13)},
            }
            for i in range(n)
        ],
    )


@pytest.mark.parametrize(("n", "budget"), [(10, 3000), (2000, 3000), (2000, 200)])
def test_the_tail_read_gives_the_prompt_the_whole_history_would(
    n: int, budget: int
) -> None:
    from chatmemory.history import records_to_messages

    _long_session("long", n)
    with override_settings(CHATMEMORY_PROMPT_MAX_TOKENS=budget):
        turn = ChatTurn("long", "and now?", model=HistoryModel())
        tail = turn.load_history()
        whole = records_to_messages(store.read_records("long"), session_id="long")

        assert len(tail) < n or n == 10  # the long session was not read whole
        assert turn.prompt_input(tail) == turn.prompt_input(whole)


async def test_the_async_tail_read_gives_the_same_prompt() -> None:
    _long_session("along", 1000)
    turn = ChatTurn("along", "and now?", model=HistoryModel())
    tail = await turn.aload_history()
    assert len(tail) < 1000
    assert turn.prompt_input(tail) == turn.prompt_input(turn.load_history())


def _counting(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count the tail reads and the records turned into messages."""
    counts = {"reads": 0, "built": 0}
    read_tail, history = store.read_tail, ChatTurn._history

    def counted_read(session_id: str, count: int) -> Any:
        counts["reads"] += 1
        return read_tail(session_id, count)

    def counted_history(turn: ChatTurn, records: list[Any]) -> Any:
        counts["built"] += len(records)
        return history(turn, records)

    monkeypatch.setattr(store, "read_tail", counted_read)
    monkeypatch.setattr(ChatTurn, "_history", counted_history)
    return counts


def test_a_turn_builds_only_the_messages_its_budget_needs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from chatmemory.turn import message_tokens

    _long_session("short", 2000)  # about 6 tokens a message
    counts = _counting(monkeypatch)
    turn = ChatTurn("short", "and now?", model=HistoryModel())
    tail = turn.load_history()
    tokens = [message_tokens(m) for m in tail]
    # The shortest run of the newest messages that passes the budget...
    assert sum(tokens[1:]) <= 3000 < sum(tokens)
    # ...and nothing else became a message, though the first read fell short.
    assert counts == {"reads": 2, "built": len(tail)}


def test_a_chat_of_short_messages_is_read_in_one_round_trip(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store.append_records(
        "chatty",
        [
            {"type": "human" if i % 2 == 0 else "ai", "data": {"content": "w " * 40}}
            for i in range(1000)
        ],
    )
    counts = _counting(monkeypatch)
    tail = ChatTurn("chatty", "and now?", model=HistoryModel()).load_history()
    assert counts == {"reads": 1, "built": len(tail)}
    assert len(tail) < 150


@pytest.mark.parametrize("rewrite", ["regenerate", "edit", "continue"])
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_rewrite_of_a_long_chat_reads_only_its_tail(
    rewrite: str, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chatmemory.history import records_to_messages

    _long_session("long", 2000)  # about 6 tokens a message: two reads
    store.append_records(
        "long",
        [
            {"type": "human", "data": {"content": "last question"}},
            {"type": "ai", "data": {"content": "last answer"}},
        ],
    )
    whole = records_to_messages(store.read_records("long"), session_id="long")
    sizes: list[int] = []
    read, aread = store.read_snapshot, store.aread_snapshot

    def counted(session_id: str, count: int = 0) -> store.Snapshot:
        snapshot = read(session_id, count)
        sizes.append(len(snapshot.raw))
        return snapshot

    async def acounted(session_id: str, count: int = 0) -> store.Snapshot:
        snapshot = await aread(session_id, count)
        sizes.append(len(snapshot.raw))
        return snapshot

    monkeypatch.setattr(store, "read_snapshot", counted)
    monkeypatch.setattr(store, "aread_snapshot", acounted)
    model = HistoryModel()
    model.seen.clear()
    turn = ChatTurn("long", "edited", model=model, rewrite=rewrite)
    if mode == "sync":
        turn.run()
    else:
        asyncio.run(turn.arun())

    assert len(sizes) > 1 and max(sizes) < 1000  # tails, never the whole chat
    prompt = model.seen[-1]
    kept = whole if rewrite == "continue" else whole[:-2]
    expected = ChatTurn("long", "x", model=model).prompt_input(kept)["history"]
    assert prompt[1:-1] == expected  # the system prompt, history, question
    assert len(store.read_records("long")) == 2002
    assert texts("long")[-2][1] == ("last question" if rewrite != "edit" else "edited")


@pytest.mark.parametrize("budget", [3000, 200])
async def test_malformed_records_in_the_tail_leave_room_for_older_ones(
    budget: int,
) -> None:
    from chatmemory.history import records_to_messages
    from chatmemory.turn import message_tokens

    _long_session("holes", 1000)
    store.append_records("holes", list(BAD_RECORDS.values()) * 3)
    _long_session("holes", 10)
    with override_settings(CHATMEMORY_PROMPT_MAX_TOKENS=budget):
        turn = ChatTurn("holes", "and now?", model=HistoryModel())
        whole = records_to_messages(store.read_records("holes"), session_id="holes")
        expected = turn.prompt_input(whole)
        tail = turn.load_history()
        assert len(tail) < len(whole)
        assert turn.prompt_input(tail) == expected
        assert turn.prompt_input(await turn.aload_history()) == expected
        # Older messages fill the room the malformed ones left.
        tokens = sum(map(message_tokens, expected["history"]))
        assert budget - 50 < tokens <= budget


def test_a_turn_saves_with_its_write_id_once() -> None:
    turn = ChatTurn("wid", "hello", model=HistoryModel())
    turn.run()
    # The same save again (a retry after a timeout) changes nothing.
    again = store.append_records(
        "wid",
        [{"type": "human", "data": {"content": "hello"}}],
        write_id=turn.write_id,
    )
    assert again == 2
    assert [kind for kind, _ in texts("wid")] == ["human", "ai"]
    assert ChatTurn("wid", "x", model=HistoryModel()).write_id != turn.write_id


def test_a_chat_deleted_while_its_reply_streams_stays_deleted() -> None:
    from chatmemory.exceptions import SessionNotFound

    store.create_session("gone", owner="7")
    turn = ChatTurn("gone", "hi", owner="7", model=HistoryModel(), must_exist=True)
    tokens = turn.stream()
    next(tokens)
    store.delete_session("gone")
    with pytest.raises(SessionNotFound):
        list(tokens)
    assert store.get_session("gone") is None
    assert store.list_sessions(owner="7").total == 0


async def test_an_async_turn_on_a_deleted_chat_saves_nothing() -> None:
    from chatmemory.exceptions import SessionNotFound

    store.create_session("agone", owner="7")
    turn = ChatTurn("agone", "hi", owner="7", model=HistoryModel(), must_exist=True)
    store.delete_session("agone")
    with pytest.raises(SessionNotFound):
        await turn.arun()
    assert store.get_session("agone") is None


def test_an_exclusive_turn_gives_its_stream_slot_back_with_its_lock() -> None:
    limits = store.Limits(concurrent_streams=1)
    admission = store.admit_turn("7", limits)
    turn = ChatTurn("slot", "q", exclusive=True, model=HistoryModel(token_delay=0))
    turn.admission = admission
    assert not store.admit_turn("7", limits).admitted
    turn.run()
    assert turn.admission is None  # given back: the caller has nothing to do
    assert store.admit_turn("7", limits).admitted


async def test_an_async_exclusive_turn_gives_its_stream_slot_back() -> None:
    limits = store.Limits(concurrent_streams=1)
    turn = ChatTurn("slot", "q", exclusive=True, model=HistoryModel(token_delay=0))
    turn.admission = await store.aadmit_turn("7", limits)
    await turn.arun()
    assert turn.admission is None
    assert (await store.aadmit_turn("7", limits)).admitted
