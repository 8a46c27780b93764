"""chatmemory.agent: the chat views' agent mode, on a real Redis.

The tests every chat view must pass in both modes are in test_views.py (its
``chat_mode`` fixture); these are the agent's own: tools, the thread as the
chat's memory, Stop and errors where a graph differs from a chain.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import AbstractBaseUser
from django.test import Client, override_settings
from django.urls import reverse
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.tools import tool

from chatmemory import store
from chatmemory.agent import NOT_RUN, AgentTurn, get_agent
from chatmemory.exceptions import SessionNotFound
from chatmemory.langgraph import thread_records
from chatmemory.llm import get_chat_model
from chatmemory.owners import owner_id
from chatmemory.records import INTERRUPTED
from tests.chat_models import HistoryModel
from tests.test_sse import parse as events

pytestmark = pytest.mark.django_db

FAST_DEMO = {"factory": "chatmemory.llm.DemoChatModel", "token_delay": 0}
HISTORY = {"factory": "tests.chat_models.HistoryModel"}
FAILING = {"factory": "tests.chat_models.failing_model", "fail_after": 3}
CHATTY = {"factory": "tests.test_agent.ChattyToolModel"}


@tool
def shout(text: str) -> str:
    """Say it louder."""
    return text.upper()


@tool
def slow(text: str) -> str:
    """Take a while."""
    time.sleep(1.0)
    return "slowly: " + text


class ChattyToolModel(BaseChatModel):
    """Says a few words, then calls the tool ``slow``; after a tool, sums up."""

    @property
    def _llm_type(self) -> str:
        return "test-chatty-tools"

    def bind_tools(self, tools: Any, **kwargs: Any) -> ChattyToolModel:  # type: ignore[override]
        return self

    def _chunks(self, messages: list[BaseMessage]) -> list[AIMessageChunk]:
        if isinstance(messages[-1], ToolMessage):
            return [AIMessageChunk(content=f"Done: {messages[-1].text}")]
        words = [AIMessageChunk(content=w) for w in ("Let ", "me ", "look.")]
        call = {
            "name": "slow",
            "args": json.dumps({"text": messages[-1].text}),
            "id": f"call-{len(messages)}",
            "index": 0,
            "type": "tool_call_chunk",
        }
        return [*words, AIMessageChunk(content="", tool_call_chunks=[call])]  # type: ignore[list-item]

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        chunks = self._chunks(messages)
        message = chunks[0] + chunks[1:]
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for chunk in self._chunks(messages):
            yield ChatGenerationChunk(message=chunk)


class CountingModel(BaseChatModel):
    """Answers "ok", reporting 40 input and 20 output tokens."""

    @property
    def _llm_type(self) -> str:
        return "test-counting"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        usage = {"input_tokens": 40, "output_tokens": 20, "total_tokens": 60}
        message = AIMessage(content="ok", usage_metadata=usage)  # type: ignore[arg-type]
        return ChatResult(generations=[ChatGeneration(message=message)])


@pytest.fixture(autouse=True)
def agent_mode(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with override_settings(
        CHATMEMORY_CHAT_MODE="agent",
        CHATMEMORY_CHAT_MODEL=FAST_DEMO,
        CHATMEMORY_AGENT_TOOLS=["tests.test_agent.shout", "tests.test_agent.slow"],
    ):
        yield


@pytest.fixture
def chat_id(alice_client: Client) -> str:
    """A new chat of alice's (not stored until its first message)."""
    response = alice_client.post("/chat/")
    return str(response["Location"].strip("/").split("/")[-1])


def history_model() -> Any:
    """The tests' HistoryModel (it binds no tools: none are configured)."""
    return override_settings(CHATMEMORY_CHAT_MODEL=HISTORY, CHATMEMORY_AGENT_TOOLS=[])


def stream(client: Client, chat_id: str, **data: str) -> list[tuple[str, str]]:
    response = client.post(f"/chat/{chat_id}/stream/", data)
    return events(b"".join(response.streaming_content))  # type: ignore[attr-defined]


def tokens(got: list[tuple[str, str]]) -> str:
    return "".join(data for name, data in got if name == "token")


def kinds(chat_id: str) -> list[str]:
    return [record["type"] for record in thread_records(chat_id)]


def test_a_tool_call_round_trip_through_the_chat_views(
    alice_client: Client, alice: AbstractBaseUser, chat_id: str
) -> None:
    got = stream(alice_client, chat_id, message="Please shout good morning")
    done = {"message_count": 4, "title": "Please shout good morning"}
    assert got[-1] == ("done", json.dumps(done))
    assert tokens(got).startswith("The tool shout answered: \u201cGOOD MORNING\u201d")
    saved = thread_records(chat_id)
    assert [r["type"] for r in saved] == ["human", "ai", "tool", "ai"]
    [call] = saved[1]["data"]["tool_calls"]
    assert call["name"] == "shout" and call["args"] == {"text": "good morning"}
    assert saved[2]["data"]["content"] == "GOOD MORNING"
    assert saved[3]["data"]["content"] == tokens(got)
    info = store.get_session(chat_id)
    assert info is not None and info.kind == "thread"
    assert info.owner == owner_id(alice) and info.message_count == 4
    assert info.title == "Please shout good morning"
    # The chat page shows the thread: title, sidebar, transcript.
    html = alice_client.get(f"/chat/{chat_id}/").content.decode()
    assert "<title>Please shout good morning" in html
    sidebar = html[html.index('id="cm-sidebar"') : html.index("</aside>")]
    assert 'aria-current="page">Please shout good morning' in sidebar
    transcript = html[html.index('id="cm-transcript"') :]
    assert transcript.count('class="cm-msg cm-human"') == 1
    assert "GOOD MORNING" in transcript and "cm-other" in transcript


def test_two_turns_remember(alice_client: Client, chat_id: str) -> None:
    with history_model():
        stream(alice_client, chat_id, message="Hi! I'm bob")
        got = stream(alice_client, chat_id, message="What's my name?")
    # The model got the system prompt, the first turn, and the question.
    assert tokens(got).strip() == "4 messages; you said: Hi! I'm bob | What's my name?"
    assert kinds(chat_id) == ["human", "ai", "human", "ai"]


def test_send_without_javascript_runs_the_agent(
    alice_client: Client, chat_id: str
) -> None:
    response = alice_client.post(
        f"/chat/{chat_id}/send/", {"message": "shout hello"}, follow=True
    )
    assert response.redirect_chain == [(f"/chat/{chat_id}/", 302)]
    assert "The tool shout answered" in response.content.decode()
    assert kinds(chat_id) == ["human", "ai", "tool", "ai"]


def test_a_model_error_leaves_the_thread_as_it_was(
    alice_client: Client, chat_id: str
) -> None:
    stream(alice_client, chat_id, message="first")
    before = thread_records(chat_id)
    with override_settings(CHATMEMORY_CHAT_MODEL=FAILING, CHATMEMORY_AGENT_TOOLS=[]):
        got = stream(alice_client, chat_id, message="second")
    assert [name for name, _ in got] == ["token"] * 3 + ["error"]
    assert "nothing was saved" in got[-1][1]
    assert thread_records(chat_id) == before
    info = store.get_session(chat_id)
    assert info is not None and info.message_count == 2 and info.title == "first"
    # The next turn goes on from there.
    with history_model():
        got = stream(alice_client, chat_id, message="third")
    assert "you said: first | third" in tokens(got)


def test_a_failing_tool_is_an_error_event_and_saves_nothing(
    alice_client: Client, chat_id: str
) -> None:
    with override_settings(CHATMEMORY_AGENT_TOOLS=["tests.test_agent.broken"]):
        got = stream(alice_client, chat_id, message="call broken now")
    assert got[-1][0] == "error" and "RuntimeError" in got[-1][1]
    assert store.get_session(chat_id) is None


@tool
def broken(text: str) -> str:
    """Always fails."""
    raise RuntimeError("the tool broke")


def test_stop_keeps_what_the_page_showed(alice_client: Client, chat_id: str) -> None:
    turn = uuid.uuid4().hex
    with override_settings(CHATMEMORY_CHAT_MODEL={**FAST_DEMO, "token_delay": 0.01}):
        response = alice_client.post(
            f"/chat/{chat_id}/stream/", {"message": "tell me", "turn": turn}
        )
        content = iter(response.streaming_content)  # type: ignore[arg-type]
        got = b"".join(next(content) for _ in range(4))  # opening + 3 tokens
        response.close()
    sent = tokens(events(got))
    saved = thread_records(chat_id)
    assert [r["type"] for r in saved] == ["human", "ai"]
    reply = saved[1]["data"]
    assert reply["content"] == sent and reply["response_metadata"][INTERRUPTED]
    # The page says it showed less: the reply becomes that.
    shown = sent.split(" ")[0]
    answer = alice_client.post(f"/chat/{chat_id}/stop/", {"turn": turn, "shown": shown})
    assert answer.status_code == 204
    assert thread_records(chat_id)[1]["data"]["content"] == shown
    # The thread goes on: the next question sees the stopped reply.
    with history_model():
        got_next = stream(alice_client, chat_id, message="again")
    assert "you said: tell me | again" in tokens(got_next)


def test_stop_while_a_tool_runs_leaves_a_thread_a_model_can_read(
    alice_client: Client, chat_id: str
) -> None:
    with override_settings(CHATMEMORY_CHAT_MODEL=CHATTY):
        response = alice_client.post(f"/chat/{chat_id}/stream/", {"message": "go"})
        content = iter(response.streaming_content)  # type: ignore[arg-type]
        got = b"".join(next(content) for _ in range(4))  # opening + 3 words
        time.sleep(0.3)  # the model is done; the tool is running
        response.close()
    assert tokens(events(got)) == "Let me look."
    saved = thread_records(chat_id)
    # Every tool call has its answer, so the next prompt is valid for a model.
    ais = [r["data"] for r in saved if r["type"] == "ai"]
    calls = [call["id"] for data in ais for call in data["tool_calls"]]
    answered = [r["data"]["tool_call_id"] for r in saved if r["type"] == "tool"]
    assert calls == answered == ["call-2"]
    assert saved[-1]["type"] == "ai"
    assert saved[-1]["data"]["response_metadata"][INTERRUPTED] is True
    stopped_tool = [r for r in saved if r["type"] == "tool"][0]
    assert stopped_tool["data"]["content"] in (NOT_RUN, "slowly: go")
    with history_model():
        got_next = stream(alice_client, chat_id, message="next")
    assert got_next[-1][0] == "done"


def test_stop_after_the_reply_was_saved_whole(
    alice_client: Client, chat_id: str
) -> None:
    turn = uuid.uuid4().hex
    got = stream(alice_client, chat_id, message="hello", turn=turn)
    assert got[-1][0] == "done"
    # The page stopped it, but the server had written it all already.
    shown = tokens(got)[:20]
    answer = alice_client.post(f"/chat/{chat_id}/stop/", {"turn": turn, "shown": shown})
    assert answer.status_code == 204
    reply = thread_records(chat_id)[-1]["data"]
    assert reply["content"] == shown
    # Never other words: a "shown" that is not where the reply starts is ignored.
    alice_client.post(f"/chat/{chat_id}/stop/", {"turn": turn, "shown": "Liar"})
    assert thread_records(chat_id)[-1]["data"]["content"] == shown


@override_settings(CHATMEMORY_AGENT_TOOLS=[])
async def test_an_async_turn_stopped_is_saved_as_far_as_it_got() -> None:
    model = HistoryModel(token_delay=0.01)
    turn = AgentTurn("async-stop", "one two three four", model=model)
    parts = turn.astream()
    seen = [await anext(parts) for _ in range(3)]
    await parts.aclose()
    saved = await store.aget_session("async-stop")
    assert saved is not None and saved.message_count == 2
    reply = thread_records("async-stop")[1]["data"]
    assert reply["content"] == "".join(seen)
    assert reply["response_metadata"][INTERRUPTED] is True


def test_continue_is_refused_with_a_reason(alice_client: Client, chat_id: str) -> None:
    stream(alice_client, chat_id, message="q")
    got = stream(alice_client, chat_id, message="q", action="continue")
    assert [name for name, _ in got] == ["error"]
    assert "cannot be continued" in got[0][1]
    assert kinds(chat_id) == ["human", "ai"]


def test_regenerate_after_a_tool_call_replaces_the_whole_last_turn(
    alice_client: Client, chat_id: str
) -> None:
    stream(alice_client, chat_id, message="first")
    stream(alice_client, chat_id, message="shout it")
    assert kinds(chat_id) == ["human", "ai", "human", "ai", "tool", "ai"]
    question = thread_records(chat_id)[2]
    with history_model():
        got = stream(alice_client, chat_id, message="x", action="regenerate")
    assert got[-1] == ("done", json.dumps({"message_count": 4, "title": ""}))
    saved = thread_records(chat_id)
    assert saved[2] == question  # the question as stored
    assert saved[3]["data"]["content"] == tokens(got)
    assert "you said: first | shout it" in tokens(got)


def test_a_chat_of_the_other_mode_is_refused_clearly(
    alice_client: Client, alice: AbstractBaseUser
) -> None:
    store.append_records(
        "chain-chat",
        [{"type": "human", "data": {"content": "old"}}],
        owner=owner_id(alice),
    )
    got = stream(alice_client, "chain-chat", message="hi")
    assert [name for name, _ in got] == ["error"]
    assert 'chat mode "chain"' in got[0][1]
    assert len(store.read_records("chain-chat")) == 1
    # An agent's chat in chain mode.
    store.create_session("agent-chat", owner=owner_id(alice))
    stream(alice_client, "agent-chat", message="hi")
    with override_settings(CHATMEMORY_CHAT_MODE="chain"):
        response = alice_client.post("/chat/agent-chat/stream/", {"message": "x"})
        sent = alice_client.post("/chat/agent-chat/send/", {"message": "x"})
        page = alice_client.get("/chat/agent-chat/")
    assert response.status_code == 409
    assert 'written by the agent (chat mode "agent")' in events(response.content)[0][1]
    assert "written by the agent" in sent.content.decode()
    assert kinds("agent-chat") == ["human", "ai"]
    # Both kinds still show their transcripts in either mode.
    assert "Hello! I am the offline demo model" in page.content.decode()
    assert "old" in alice_client.get("/chat/chain-chat/").content.decode()


def test_bad_tools_are_a_configuration_error(
    alice_client: Client, chat_id: str
) -> None:
    with override_settings(CHATMEMORY_AGENT_TOOLS=["tests.no_such.tool"]):
        response = alice_client.post(f"/chat/{chat_id}/stream/", {"message": "x"})
    assert response.status_code == 500
    assert "not configured correctly" in events(response.content)[0][1]


def test_the_agent_is_built_once_per_configuration() -> None:
    model = get_chat_model()
    both = get_agent(model)
    assert get_agent(model) is both
    with override_settings(CHATMEMORY_AGENT_TOOLS=["tests.test_agent.shout"]):
        one = get_agent(model)
        assert one is not both and get_agent(model) is one
    assert get_agent(HistoryModel()) is not both


def test_my_chats_download_holds_my_threads(alice_client: Client, chat_id: str) -> None:
    stream(alice_client, chat_id, message="shout it")
    response = alice_client.get(reverse("chatmemory:download_all"))
    [chat] = json.loads(b"".join(response.streaming_content))
    assert chat["id"] == chat_id and chat["kind"] == "thread"
    assert chat["messages"] == thread_records(chat_id)


def test_a_reply_past_the_time_limit_is_saved_as_stopped(
    alice_client: Client, chat_id: str
) -> None:
    with override_settings(
        CHATMEMORY_CHAT_MODEL={**FAST_DEMO, "token_delay": 0.02},
        CHATMEMORY_TURN_TIME_LIMIT=0.1,
    ):
        got = stream(alice_client, chat_id, message="talk for long")
    name, data = got[-1]
    assert name == "done" and json.loads(data)["stopped"] is True
    reply = thread_records(chat_id)[-1]["data"]
    assert reply["content"] == tokens(got) and reply["content"]
    assert reply["response_metadata"][INTERRUPTED] is True
    assert len(tokens(got)) < len("Hello! I am the offline demo model: no AI")


@override_settings(
    CHATMEMORY_TOKENS_PER_DAY=100,
    CHATMEMORY_CHAT_MODEL={"factory": "tests.test_agent.CountingModel"},
    CHATMEMORY_AGENT_TOOLS=[],
)
def test_an_agent_turns_tokens_count_towards_the_days_limit(
    alice_client: Client, alice: AbstractBaseUser, chat_id: str
) -> None:
    for _ in range(2):
        assert stream(alice_client, chat_id, message="q")[-1][0] == "done"
    today = store.day_of(int(time.time() * 1000))
    [usage] = store.owner_usage(owner_id(alice), [today])
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (
        80,
        40,
        120,
    )
    refused = alice_client.post(f"/chat/{chat_id}/stream/", {"message": "q"})
    assert refused.status_code == 429
    assert "today's allowance of 100 tokens" in events(refused.content)[0][1]


# --- a chat deleted while the agent answers stays deleted -------------------


@override_settings(CHATMEMORY_AGENT_TOOLS=[])
def test_a_chat_deleted_while_the_agent_answers_stays_deleted() -> None:
    model = HistoryModel(token_delay=0)
    AgentTurn("gone", "first", owner="7", model=model).run()
    assert kinds("gone") == ["human", "ai"]
    turn = AgentTurn("gone", "second", owner="7", model=model, must_exist=True)
    parts = turn.stream()
    next(parts)
    store.delete_session("gone")
    with pytest.raises(SessionNotFound):
        list(parts)
    assert store.get_session("gone") is None
    assert thread_records("gone") == []
    assert store.list_sessions(owner="7").total == 0


@override_settings(CHATMEMORY_AGENT_TOOLS=[])
def test_a_chat_deleted_then_stopped_stays_deleted() -> None:
    model = HistoryModel(token_delay=0)
    AgentTurn("gone2", "first", owner="7", model=model).run()
    turn = AgentTurn("gone2", "second words", owner="7", model=model, must_exist=True)
    parts = turn.stream()
    next(parts)
    store.delete_session("gone2")
    parts.close()  # Stop: nothing to keep, no error
    assert store.get_session("gone2") is None
    assert thread_records("gone2") == []


@override_settings(CHATMEMORY_AGENT_TOOLS=[])
async def test_an_async_agent_turn_on_a_chat_deleted_meanwhile_saves_nothing() -> None:
    model = HistoryModel(token_delay=0)
    await AgentTurn("agone", "first", owner="7", model=model).arun()
    turn = AgentTurn("agone", "second", owner="7", model=model, must_exist=True)
    parts = turn.astream()
    await anext(parts)
    await store.adelete_session("agone")
    with pytest.raises(SessionNotFound):
        async for _ in parts:
            pass
    assert await store.aget_session("agone") is None
    assert thread_records("agone") == []


def test_the_stream_view_tells_that_the_chat_was_deleted_meanwhile(
    alice_client: Client, chat_id: str
) -> None:
    stream(alice_client, chat_id, message="first")
    response = alice_client.post(f"/chat/{chat_id}/stream/", {"message": "again"})
    content = iter(response.streaming_content)  # type: ignore[attr-defined]
    first = b""
    while b"event: token" not in first:  # the agent is answering
        first += next(content)
    store.delete_session(chat_id)
    got = events(first + b"".join(content))
    assert got[-1][0] == "error"
    assert store.get_session(chat_id) is None
    assert thread_records(chat_id) == []
