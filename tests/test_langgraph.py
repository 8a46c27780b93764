"""chatmemory.langgraph: the LangGraph checkpointer on a real Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from langchain.agents import create_agent
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    ToolMessage,
    messages_from_dict,
)
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import tool
from langgraph.checkpoint.base import (
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.report import CapabilityReport
from langgraph.checkpoint.conformance.test_utils import (
    generate_checkpoint,
    generate_config,
    generate_metadata,
)
from langgraph.types import Command, interrupt

from chatmemory import store
from chatmemory.checks import check_agent_mode
from chatmemory.exceptions import SessionNotFound
from chatmemory.langgraph import (
    MUST_EXIST,
    DjangoRedisSaver,
    thread_records,
    title_from_messages,
)
from tests.admin_helpers import (
    LIST_URL,
    chat,
    delete_url,
    export_url,
    rows,
    text,
    transcript_url,
)


class SyncDrivenSaver(DjangoRedisSaver):
    """Its async methods run the sync ones: the conformance suite is async only,
    so this is how it exercises the sync path."""

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self.get_tuple(config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        for item in self.list(config, filter=filter, before=before, limit=limit):
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return self.put(config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        self.put_writes(config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        self.delete_thread(thread_id)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self.copy_thread(source_thread_id, target_thread_id)

    async def aprune(
        self, thread_ids: Sequence[str], *, strategy: str = "keep_latest", keep: int = 1
    ) -> None:
        self.prune(thread_ids, strategy=strategy, keep=keep)


def failures(report: CapabilityReport) -> dict[str, list[str]]:
    return {
        name: result.failures
        for name, result in report.results.items()
        if result.passed is False
    }


@pytest.mark.parametrize("saver_class", [DjangoRedisSaver, SyncDrivenSaver])
async def test_conformance_suite(saver_class: type[DjangoRedisSaver]) -> None:
    @checkpointer_test(name=saver_class.__name__)
    async def factory() -> AsyncIterator[DjangoRedisSaver]:
        yield saver_class()

    report = await validate(factory)
    assert failures(report) == {}
    tested = {name for name, result in report.results.items() if result.passed}
    assert tested == {
        "put",
        "put_writes",
        "get_tuple",
        "list",
        "delete_thread",
        "copy_thread",
        "prune",
    }


# ---------------------------------------------------------------------------
# Agents on the checkpointer (LangChain's create_agent, a fake model)


class ToolCallingModel(BaseChatModel):
    """A chat model that decides from its input alone (so a rerun repeats it).

    A human message naming tools ("use: a, b") gets one AI message calling each
    of them, in parallel; tool results get a summary of them; anything else
    gets every human text so far, so a test can see what the model was given.
    """

    @property
    def _llm_type(self) -> str:
        return "test-tool-calling"

    def bind_tools(self, tools: Any, **kwargs: Any) -> ToolCallingModel:  # type: ignore[override]
        return self

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        last = messages[-1]
        if isinstance(last, ToolMessage):
            results = [m.text for m in messages if isinstance(m, ToolMessage)]
            reply = AIMessage(content="tools said: " + ", ".join(sorted(results)))
        elif last.type == "human" and last.text.startswith("use: "):
            names = last.text.removeprefix("use: ").split(", ")
            reply = AIMessage(
                content="",
                tool_calls=[
                    {
                        "name": name,
                        "args": {"x": i},
                        "id": f"call-{i}",
                        "type": "tool_call",
                    }
                    for i, name in enumerate(names)
                ],
            )
        else:
            humans = [m.text for m in messages if m.type == "human"]
            reply = AIMessage(content="you said: " + " | ".join(humans))
        return ChatResult(generations=[ChatGeneration(message=reply)])


def config_for(thread_id: str, **extra: Any) -> RunnableConfig:
    return {"configurable": {"thread_id": thread_id, **extra}}


def test_a_put_that_must_find_its_thread_writes_nothing_once_it_is_gone() -> None:
    agent = create_agent(ToolCallingModel(), [], checkpointer=DjangoRedisSaver())
    agent.invoke({"messages": [("user", "Hi! I'm bob")]}, config_for("t-gone"))
    saver = DjangoRedisSaver()
    latest = saver.get_tuple(config_for("t-gone"))
    assert latest is not None
    must = config_for("t-gone", **{MUST_EXIST: True})
    # While the thread is there, the flag changes nothing.
    agent.invoke({"messages": [("user", "again")]}, must)
    assert store.get_session("t-gone") is not None
    saver.delete_thread("t-gone")
    with pytest.raises(SessionNotFound):
        saver.put(must, latest.checkpoint, latest.metadata, {})
    assert store.get_session("t-gone") is None
    assert saver.get_tuple(config_for("t-gone")) is None
    assert store.list_sessions().total == 0
    # Without the flag a put makes the thread anew, as LangGraph expects.
    saver.put(config_for("t-gone"), latest.checkpoint, latest.metadata, {})
    assert store.get_session("t-gone") is not None


async def test_an_async_put_that_must_find_its_thread_writes_nothing() -> None:
    saver = DjangoRedisSaver()
    agent = create_agent(ToolCallingModel(), [], checkpointer=saver)
    await agent.ainvoke({"messages": [("user", "Hi")]}, config_for("t-agone"))
    latest = await saver.aget_tuple(config_for("t-agone"))
    assert latest is not None
    await saver.adelete_thread("t-agone")
    must = config_for("t-agone", **{MUST_EXIST: True})
    with pytest.raises(SessionNotFound):
        await saver.aput(must, latest.checkpoint, latest.metadata, {})
    assert await store.aget_session("t-agone") is None


def test_two_turns_remember_bob() -> None:
    agent = create_agent(ToolCallingModel(), [], checkpointer=DjangoRedisSaver())
    agent.invoke({"messages": [("user", "Hi! I'm bob")]}, config_for("t1"))
    # A new saver (and graph): what the second turn knows came from Redis.
    agent = create_agent(ToolCallingModel(), [], checkpointer=DjangoRedisSaver())
    result = agent.invoke({"messages": [("user", "What's my name?")]}, config_for("t1"))
    assert result["messages"][-1].text == "you said: Hi! I'm bob | What's my name?"
    assert [m.type for m in result["messages"]] == ["human", "ai", "human", "ai"]


async def test_two_turns_remember_bob_async() -> None:
    agent = create_agent(ToolCallingModel(), [], checkpointer=DjangoRedisSaver())
    await agent.ainvoke({"messages": [("user", "Hi! I'm bob")]}, config_for("t1"))
    agent = create_agent(ToolCallingModel(), [], checkpointer=DjangoRedisSaver())
    result = await agent.ainvoke(
        {"messages": [("user", "What's my name?")]}, config_for("t1")
    )
    assert "bob" in result["messages"][-1].text
    assert len(result["messages"]) == 4


def test_interrupt_and_resume() -> None:
    asked: list[Any] = []

    @tool
    def book(x: int) -> str:
        """Book a table, after asking a human."""
        answer = interrupt({"question": "book it?", "x": x})
        asked.append(answer)
        return f"booked: {answer}"

    agent = create_agent(ToolCallingModel(), [book], checkpointer=DjangoRedisSaver())
    paused = agent.invoke({"messages": [("user", "use: book")]}, config_for("t2"))
    assert paused["__interrupt__"][0].value == {"question": "book it?", "x": 0}
    assert asked == []

    agent = create_agent(ToolCallingModel(), [book], checkpointer=DjangoRedisSaver())
    state = agent.get_state(config_for("t2"))
    assert state.next == ("tools",)
    assert state.interrupts[0].value == {"question": "book it?", "x": 0}
    done = agent.invoke(Command(resume="yes please"), config_for("t2"))
    assert asked == ["yes please"]
    assert done["messages"][-1].text == "tools said: booked: yes please"


def test_time_travel_from_an_earlier_checkpoint() -> None:
    saver = DjangoRedisSaver()
    agent = create_agent(ToolCallingModel(), [], checkpointer=saver)
    agent.invoke({"messages": [("user", "I'm bob")]}, config_for("t3"))
    agent.invoke({"messages": [("user", "I like tea")]}, config_for("t3"))
    history = list(agent.get_state_history(config_for("t3")))
    after_first = next(
        s for s in history if len(s.values.get("messages", ())) == 2 and not s.next
    )
    latest = history[0]

    forked = agent.invoke({"messages": [("user", "I like coffee")]}, after_first.config)
    assert forked["messages"][-1].text == "you said: I'm bob | I like coffee"
    # The thread's head is the new branch; the old branch is intact.
    head = agent.get_state(config_for("t3"))
    assert [m.text for m in head.values["messages"]][-2:] == [
        "I like coffee",
        "you said: I'm bob | I like coffee",
    ]
    old = agent.get_state(latest.config)
    assert old.values["messages"][-1].text == "you said: I'm bob | I like tea"
    assert head.parent_config is not None
    parent = head.parent_config["configurable"]["checkpoint_id"]
    assert parent != latest.config["configurable"]["checkpoint_id"]


def test_parallel_tool_writes_survive_a_crash() -> None:
    calls = {"a": 0, "b": 0}
    # The two tools run in parallel threads: b crashes only once a's result
    # is stored as a pending write (on a loaded machine b could otherwise
    # crash the step before a finished, and there would be nothing to reuse).

    def a_result_stored() -> bool:
        pending = DjangoRedisSaver().get_tuple(config_for("t4"))
        writes = pending.pending_writes or () if pending else ()
        return any(w[1] == "messages" for w in writes)

    @tool
    def a(x: int) -> str:
        """Tool a."""
        calls["a"] += 1
        return "a done"

    @tool
    def b(x: int) -> str:
        """Tool b: crashes the first time."""
        calls["b"] += 1
        if calls["b"] == 1:
            deadline = time.monotonic() + 30
            while not a_result_stored() and time.monotonic() < deadline:
                time.sleep(0.01)
            raise RuntimeError("crash between put_writes and put")
        return "b done"

    agent = create_agent(ToolCallingModel(), [a, b], checkpointer=DjangoRedisSaver())
    with pytest.raises(RuntimeError, match="crash between"):
        agent.invoke({"messages": [("user", "use: a, b")]}, config_for("t4"))
    assert calls == {"a": 1, "b": 1}
    saver = DjangoRedisSaver()
    pending = saver.get_tuple(config_for("t4"))
    assert pending is not None
    written = [w[2] for w in pending.pending_writes or () if w[1] == "messages"]
    assert [[m.text for m in messages] for messages in written] == [["a done"]]

    # A new process: tool a's result is reused from its pending write.
    agent = create_agent(ToolCallingModel(), [a, b], checkpointer=saver)
    result = agent.invoke(None, config_for("t4"))
    assert calls == {"a": 1, "b": 2}
    assert result["messages"][-1].text == "tools said: a done, b done"


# ---------------------------------------------------------------------------
# Threads are conversations: metadata, indexes, TTL, owner, prune


def test_a_thread_is_listed_like_a_session(settings: Any) -> None:
    agent = create_agent(ToolCallingModel(), [], checkpointer=DjangoRedisSaver())
    agent.invoke(
        {"messages": [("user", "Hi! I'm bob,   and this title is long " + "x" * 80)]},
        config_for("t5", owner="42"),
    )
    info = store.get_session("t5")
    assert info is not None
    assert info.title.startswith("Hi! I'm bob, and this title is long x")
    assert len(info.title) == 80 and info.title.endswith("\u2026")
    assert info.owner == "42"
    assert info.message_count == 2
    assert info.created <= info.updated
    assert [s.session_id for s in store.list_sessions().sessions] == ["t5"]
    assert [s.session_id for s in store.list_sessions(owner="42").sessions] == ["t5"]
    assert store.list_sessions(owner="7").sessions == []
    assert store.list_sessions(ownerless=True).sessions == []

    # The next turn keeps the title and owner, counts the messages anew.
    agent.invoke({"messages": [("user", "again")]}, config_for("t5"))
    again = store.get_session("t5")
    assert again is not None
    assert (again.title, again.owner, again.message_count) == (info.title, "42", 4)
    assert again.updated >= info.updated


def test_a_thread_without_an_owner_is_in_the_no_owner_index() -> None:
    saver = DjangoRedisSaver()
    agent = create_agent(ToolCallingModel(), [], checkpointer=saver)
    agent.invoke({"messages": [("user", "hi")]}, config_for("anon-thread"))
    ownerless = store.list_sessions(ownerless=True)
    assert [s.session_id for s in ownerless.sessions] == ["anon-thread"]
    assert store.check_consistency().ok
    saver.delete_thread("anon-thread")
    assert store.list_sessions(ownerless=True).total == 0


def test_another_owner_cannot_write_to_a_thread() -> None:
    agent = create_agent(ToolCallingModel(), [], checkpointer=DjangoRedisSaver())
    agent.invoke({"messages": [("user", "mine")]}, config_for("t6", owner="1"))
    with pytest.raises(ValueError, match="belongs to owner '1'"):
        agent.invoke({"messages": [("user", "yours?")]}, config_for("t6", owner="2"))
    state = agent.get_state(config_for("t6"))
    assert [m.text for m in state.values["messages"]] == ["mine", "you said: mine"]


def test_a_history_session_id_is_not_a_thread() -> None:
    store.append_records("s1", [{"type": "human", "data": {"content": "hello"}}])
    agent = create_agent(ToolCallingModel(), [], checkpointer=DjangoRedisSaver())
    with pytest.raises(ValueError, match="is a chat history session"):
        agent.invoke({"messages": [("user", "hi")]}, config_for("s1"))
    # Deleting a thread of that id leaves the session alone.
    DjangoRedisSaver().delete_thread("s1")
    assert list(store.read_records("s1")) == [
        {"type": "human", "data": {"content": "hello"}}
    ]


def test_an_empty_session_becomes_a_thread() -> None:
    store.create_session("s2", owner="5", title="named first")
    agent = create_agent(ToolCallingModel(), [], checkpointer=DjangoRedisSaver())
    agent.invoke({"messages": [("user", "hi")]}, config_for("s2", owner="5"))
    info = store.get_session("s2")
    assert info is not None
    assert (info.title, info.owner, info.message_count) == ("named first", "5", 2)


def test_delete_thread_removes_it_from_the_indexes(redis_client: Any) -> None:
    saver = DjangoRedisSaver()
    agent = create_agent(ToolCallingModel(), [], checkpointer=saver)
    agent.invoke({"messages": [("user", "hi")]}, config_for("t7", owner="9"))
    saver.delete_thread("t7")
    assert store.get_session("t7") is None
    assert store.list_sessions().total == 0
    assert store.list_sessions(owner="9").total == 0
    prefix = store.sessions_key().rsplit(":", 1)[0]
    assert sorted(redis_client.scan_iter(match=f"{prefix}:*")) == []


def test_every_key_of_a_thread_shares_its_hash_tag(redis_client: Any) -> None:
    agent = create_agent(ToolCallingModel(), [], checkpointer=DjangoRedisSaver())
    agent.invoke({"messages": [("user", "hi")]}, config_for("a{b}c"))
    prefix = store.sessions_key().rsplit(":", 1)[0]
    thread_keys = {
        key.decode()
        for key in redis_client.scan_iter(match=f"{prefix}:*")
        if b"%7B" in key
    }
    tag = f"{prefix}:{{a%7Bb%7Dc}}"
    assert thread_keys == {
        f"{tag}:meta",
        f"{tag}:checkpoints",
        f"{tag}:blobs",
        f"{tag}:writes",
    }


def test_channel_values_are_stored_once_per_version(redis_client: Any) -> None:
    saver = DjangoRedisSaver()
    agent = create_agent(ToolCallingModel(), [], checkpointer=saver)
    for said in ("one", "two", "three"):
        agent.invoke({"messages": [("user", said)]}, config_for("t8"))
    checkpoints = list(saver.list(config_for("t8")))
    versions = {
        (channel, version)
        for c in checkpoints
        for channel, version in c.checkpoint["channel_versions"].items()
    }
    tag = f"{store.sessions_key().rsplit(':', 1)[0]}:{{t8}}"
    blobs = redis_client.hlen(f"{tag}:blobs")
    # One blob per channel version; a copy per checkpoint would be one per
    # channel of every checkpoint.
    assert blobs <= len(versions)
    assert len(versions) < sum(
        len(c.checkpoint["channel_versions"]) for c in checkpoints
    )
    assert redis_client.zcard(f"{tag}:checkpoints") == len(checkpoints) > 3


def test_ttl_slides_with_every_write(settings: Any, redis_client: Any) -> None:
    settings.CHATMEMORY_TTL = 100
    saver = DjangoRedisSaver()
    agent = create_agent(ToolCallingModel(), [], checkpointer=saver)
    agent.invoke({"messages": [("user", "hi")]}, config_for("t9", owner="3"))
    tag = f"{store.sessions_key().rsplit(':', 1)[0]}:{{t9}}"
    keys = [f"{tag}:{name}" for name in ("meta", "checkpoints", "blobs", "writes")]
    for key in keys:
        redis_client.pexpire(key, 5000)
    agent.invoke({"messages": [("user", "again")]}, config_for("t9"))
    ttls = [redis_client.pttl(key) for key in keys]
    assert all(95_000 < ttl <= 100_000 for ttl in ttls), ttls
    # Its indexes live as long as it does.
    indexes = [store.sessions_key(), store.ids_key(), store.owner_key("3")]
    # (a 64th more: the writes that follow need not lengthen them)
    assert all(95_000 < redis_client.pttl(key) <= 101_562 for key in indexes)
    assert store.check_consistency().ok

    settings.CHATMEMORY_TTL = None
    agent.invoke({"messages": [("user", "forever")]}, config_for("t9"))
    assert [redis_client.pttl(key) for key in keys] == [-1, -1, -1, -1]
    assert [redis_client.pttl(key) for key in indexes] == [-1, -1, -1]


def test_prune_keeps_the_latest_n(redis_client: Any) -> None:
    saver = DjangoRedisSaver()
    agent = create_agent(ToolCallingModel(), [], checkpointer=saver)
    for said in ("one", "two", "three"):
        agent.invoke({"messages": [("user", said)]}, config_for("t10"))
    before = [c.config for c in saver.list(config_for("t10"))]
    tag = f"{store.sessions_key().rsplit(':', 1)[0]}:{{t10}}"
    blobs_before = redis_client.hlen(f"{tag}:blobs")

    saver.prune(["t10"], keep=2)
    after = [c.config for c in saver.list(config_for("t10"))]
    assert after == before[:2]
    assert redis_client.hlen(f"{tag}:blobs") < blobs_before
    # What is left still reads back whole, and the conversation goes on.
    result = agent.invoke({"messages": [("user", "four")]}, config_for("t10"))
    assert result["messages"][-1].text == "you said: one | two | three | four"

    with pytest.raises(ValueError, match="keep must be at least 1"):
        saver.prune(["t10"], keep=0)
    with pytest.raises(ValueError, match="unknown prune strategy"):
        saver.prune(["t10"], strategy="oldest")


# ---------------------------------------------------------------------------
# The optional dependency

WITHOUT_LANGGRAPH = r"""
import importlib.abc, os, sys

class Uninstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("langgraph", "langchain"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Uninstalled())
os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
import django
django.setup()
from django.conf import settings
from django.core.management import call_command
from django.test import Client, override_settings
from django.contrib.auth.models import User

with override_settings(CHATMEMORY_KEY_PREFIX=sys.argv[1]):
    call_command("migrate", verbosity=0)
    call_command("check")
    from chatmemory.history import DjangoRedisChatMessageHistory
    from langchain_core.messages import HumanMessage
    history = DjangoRedisChatMessageHistory("s1")
    history.add_messages([HumanMessage("hello")])
    assert [m.text for m in history.messages] == ["hello"]
    User.objects.create_superuser("admin", "a@example.com", "pw")
    client = Client()
    client.login(username="admin", password="pw")
    page = client.get("/admin/chatmemory/chatsession/")
    assert page.status_code == 200 and b"hello" in page.content, page.status_code
    # A thread written elsewhere (where LangGraph is installed) is listed, and
    # its transcript says what reading it needs.
    from chatmemory.store import keys
    from chatmemory.store.client import sync_client
    meta = {"kind": "thread", "created": 1, "updated": 1}
    sync_client().hset(keys.meta_key("t1"), mapping=meta)
    transcript = client.get("/admin/chatmemory/chatsession/t1/change/")
    assert transcript.status_code == 200, transcript.status_code
    assert b"reading it needs LangGraph" in transcript.content
    import io
    err = io.StringIO()
    call_command("chatmemory_export", "-o", os.devnull, "--session", "t1", stderr=err)
    print("export:", err.getvalue().strip())
    with override_settings(CHATMEMORY_CHAT_MODE="agent"):
        from chatmemory.checks import check_agent_mode
        print("check:", [(e.id, e.msg, e.hint) for e in check_agent_mode()])
    try:
        import chatmemory.langgraph
    except ImportError as exc:
        print("import:", exc)
    assert "langgraph" not in sys.modules and "langchain" not in sys.modules
"""


def test_chatmemory_works_without_langgraph(
    key_prefix: str, tmp_path: Any, redis_client: Any
) -> None:
    script = tmp_path / "without_langgraph.py"
    script.write_text(WITHOUT_LANGGRAPH)
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-W", "error", str(script), key_prefix + "-sub"],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    for key in redis_client.scan_iter(match=f"{key_prefix}-sub:*"):
        redis_client.delete(key)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "System check identified no issues (0 silenced)."
    export_line, check_line, import_line = lines[1:]
    assert export_line.startswith("export: Exported 0 sessions")
    assert "1 LangGraph threads left out: reading them needs pip install" in export_line
    assert check_line.startswith("check: [('chatmemory.E021', ")
    assert "pip install 'chatmemory[langgraph]'" in check_line
    assert import_line.startswith("import: chatmemory.langgraph needs LangGraph")
    assert "pip install 'chatmemory[langgraph]'" in import_line


@pytest.mark.parametrize(
    ("mode", "tools", "ids"),
    [
        ("chain", ["nowhere.tool"], []),
        ("agent", [], []),
        ("agent", ["tests.test_langgraph.lookup"], []),
        ("agent", ["tests.test_langgraph.nothing_here"], ["chatmemory.E022"]),
        ("agent", "not a list", ["chatmemory.E022"]),
        ("robot", [], ["chatmemory.E020"]),
    ],
)
def test_agent_mode_checks(
    settings: Any, mode: str, tools: Any, ids: list[str]
) -> None:
    settings.CHATMEMORY_CHAT_MODE = mode
    settings.CHATMEMORY_AGENT_TOOLS = tools
    assert [e.id for e in check_agent_mode()] == ids


def test_the_agent_mode_check_is_registered(settings: Any) -> None:
    settings.CHATMEMORY_CHAT_MODE = "robot"
    with pytest.raises(SystemCheckError, match="chatmemory.E020"):
        call_command("check")


@tool
def lookup(word: str) -> str:
    """Look a word up (a tool for the agent mode's tests)."""
    return f"{word}: a word"


def test_a_thread_id_is_not_a_history_session() -> None:
    agent = create_agent(ToolCallingModel(), [], checkpointer=DjangoRedisSaver())
    agent.invoke({"messages": [("user", "hi")]}, config_for("t11"))
    with pytest.raises(ValueError, match="is a LangGraph thread"):
        store.append_records("t11", [{"type": "human", "data": {"content": "x"}}])
    assert store.read_records("t11") == []
    info = store.get_session("t11")
    assert info is not None and info.kind == "thread"


def test_deleting_the_session_deletes_the_thread(redis_client: Any) -> None:
    saver = DjangoRedisSaver()
    agent = create_agent(ToolCallingModel(), [], checkpointer=saver)
    agent.invoke({"messages": [("user", "hi")]}, config_for("t12", owner="4"))
    assert store.delete_session("t12") is True
    assert saver.get_tuple(config_for("t12")) is None
    assert store.list_sessions(owner="4").total == 0
    prefix = store.sessions_key().rsplit(":", 1)[0]
    assert list(redis_client.scan_iter(match=f"{prefix}:*")) == []


def test_a_thread_is_consistent_for_the_doctor() -> None:
    agent = create_agent(ToolCallingModel(), [], checkpointer=DjangoRedisSaver())
    agent.invoke({"messages": [("user", "hi")]}, config_for("t13", owner="4"))
    report = store.check_consistency()
    assert report.ok, report.counts
    assert report.sessions == 1


# ---------------------------------------------------------------------------
# Threads in the admin


@pytest.mark.django_db
def test_the_admin_lists_shows_exports_and_deletes_a_thread(admin_client: Any) -> None:
    @tool
    def weather(x: int) -> str:
        """The weather."""
        return f"sunny {x}"

    agent = create_agent(ToolCallingModel(), [weather], checkpointer=DjangoRedisSaver())
    agent.invoke({"messages": [("user", "use: weather")]}, config_for("t14", owner="1"))
    # Activity is kept in milliseconds, and a tie lists the greater id first
    # ("t14"): the plain session is written a millisecond later at least.
    time.sleep(0.002)
    chat("s14", HumanMessage("a plain session"))

    listing = admin_client.get(LIST_URL)
    assert rows(listing) == ["s14", "t14"]
    row = text(listing).split("t14</a>", 1)[1].split("</tr>", 1)[0]
    assert "use: weather" in row and "(LangGraph thread)" in row
    assert '<td class="field-message_count">4</td>' in row

    page = text(admin_client.get(transcript_url("t14")))
    assert "a LangGraph thread: the messages of its latest checkpoint" in page
    assert (
        page.index("use: weather")
        < page.index("sunny 0")
        < page.index("tools said: sunny 0")
    )
    assert "weather" in page and "call-0" in page  # the tool call, shown

    exported = b"".join(admin_client.get(export_url("t14")).streaming_content)
    messages = messages_from_dict(json.loads(exported))
    assert [type(m).__name__ for m in messages] == [
        "HumanMessage",
        "AIMessage",
        "ToolMessage",
        "AIMessage",
    ]
    assert isinstance(messages[1], AIMessage)
    assert messages[1].tool_calls[0]["name"] == "weather"

    response = admin_client.post(delete_url("t14"), {"post": "yes"})
    assert response.status_code == 302
    assert DjangoRedisSaver().get_tuple(config_for("t14")) is None
    assert rows(admin_client.get(LIST_URL)) == ["s14"]


# ---------------------------------------------------------------------------
# The saver's API beyond what the conformance suite asks


def put_chain(
    saver: DjangoRedisSaver,
    thread_id: str,
    n: int,
    *,
    ns: str = "",
    channels: dict[str, Any] | None = None,
) -> list[RunnableConfig]:
    stored: list[RunnableConfig] = []
    for step in range(n):
        config = generate_config(thread_id, checkpoint_ns=ns)
        if stored:
            config["configurable"]["checkpoint_id"] = stored[-1]["configurable"][
                "checkpoint_id"
            ]
        values = dict(channels or {})
        versions = dict.fromkeys(values, f"{step + 1}.0")
        checkpoint = generate_checkpoint(
            channel_values=values, channel_versions=versions
        )
        metadata = generate_metadata(step=step, source="loop" if step else "input")
        stored.append(saver.put(config, checkpoint, metadata, versions))
    return stored


def ids(tuples: Any) -> list[str]:
    return [t.config["configurable"]["checkpoint_id"] for t in tuples]


async def aids(tuples: Any) -> list[str]:
    return [t.config["configurable"]["checkpoint_id"] async for t in tuples]


async def test_list_every_thread_and_one_checkpoint() -> None:
    saver = DjangoRedisSaver()
    a = put_chain(saver, "a", 3)
    b = put_chain(saver, "b", 2)
    everything = set(ids(saver.list(None)))
    assert everything == {c["configurable"]["checkpoint_id"] for c in a + b}
    assert set(await aids(saver.alist(None, filter={"step": 0}))) == {
        a[0]["configurable"]["checkpoint_id"],
        b[0]["configurable"]["checkpoint_id"],
    }
    one = a[1]["configurable"]["checkpoint_id"]
    assert ids(saver.list(generate_config("a", checkpoint_id=one))) == [one]
    assert await aids(saver.alist(generate_config("a", checkpoint_id=one))) == [one]
    before = {"configurable": {"checkpoint_id": one}}
    assert ids(saver.list(generate_config("a", checkpoint_id=one), before=before)) == []


async def test_list_across_namespaces() -> None:
    saver = DjangoRedisSaver()
    root = put_chain(saver, "n", 2)
    child = put_chain(saver, "n", 2, ns="child:1")
    every = sorted(
        (c["configurable"]["checkpoint_id"] for c in root + child), reverse=True
    )
    config: RunnableConfig = {"configurable": {"thread_id": "n"}}
    assert ids(saver.list(config)) == every
    assert await aids(saver.alist(config, limit=3)) == every[:3]
    before = {"configurable": {"checkpoint_id": every[1]}}
    assert ids(saver.list(config, before=before)) == every[2:]
    firsts = {c[0]["configurable"]["checkpoint_id"] for c in (root, child)}
    assert ids(saver.list(config, before=before, filter={"step": 0})) == [
        c for c in every[2:] if c in firsts
    ]
    assert await aids(saver.alist(config, filter={"step": 1}, limit=1)) == every[:1]
    assert ids(saver.list(config, limit=0)) == []
    assert ids(saver.list({"configurable": {"thread_id": "none"}})) == []


def test_names_with_separator_characters_round_trip() -> None:
    saver = DjangoRedisSaver()
    odd = "a\nb\x00c\x01d\x02e"
    stored = put_chain(saver, "odd", 2, ns=odd, channels={odd: "value", "x": 1})
    saver.put_writes(stored[-1], [(odd, "w")], task_id=odd, task_path=odd)
    latest = saver.get_tuple(generate_config("odd", checkpoint_ns=odd))
    assert latest is not None
    assert latest.config["configurable"]["checkpoint_ns"] == odd
    assert latest.checkpoint["channel_values"] == {odd: "value", "x": 1}
    assert latest.pending_writes == [(odd, odd, "w")]
    # Another namespace that starts with the same characters is another one.
    assert saver.get_tuple(generate_config("odd", checkpoint_ns="a")) is None
    assert len(list(saver.list(generate_config("odd", checkpoint_ns=odd)))) == 2


def test_next_version_and_titles() -> None:
    saver = DjangoRedisSaver()
    assert saver.get_next_version(None, None).startswith("0" * 31 + "1.")
    assert saver.get_next_version(4, None).startswith("0" * 31 + "5.")
    assert saver.get_next_version(saver.get_next_version(None, None), None).startswith(
        "0" * 31 + "2."
    )
    assert title_from_messages([AIMessage("hi"), HumanMessage("  "), "x"]) == ""
    assert title_from_messages([AIMessage("hi"), HumanMessage(" a\n b ")]) == "a b"


def test_thread_records_of_missing_or_odd_threads() -> None:
    assert thread_records("nothing") == []
    saver = DjangoRedisSaver()
    put_chain(saver, "no-messages", 1, channels={"messages": "not a list"})
    assert thread_records("no-messages") == []
