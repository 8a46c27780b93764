"""chatmemory.langgraph: the LangGraph checkpointer on a real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
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
from langgraph.types import Command, interrupt

from chatmemory.langgraph import DjangoRedisSaver


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
