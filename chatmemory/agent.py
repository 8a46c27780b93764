"""One agent turn: a LangChain agent with tools, on the LangGraph checkpointer.

I have a chat's id (a LangGraph thread id) and a question, and I want an agent
with the tools of ``CHATMEMORY_AGENT_TOOLS`` to answer, its conversation kept
in the thread::

    from chatmemory.agent import AgentTurn

    turn = AgentTurn("foo", "What did I say first?", owner="42")
    for token in turn.stream():  # or: async for token in turn.astream()
        print(token, end="")
    turn.message_count  # the thread's messages after the turn

The chat views run it when ``CHATMEMORY_CHAT_MODE`` is ``"agent"``. It is a
:class:`~chatmemory.turn.ChatTurn` (same interface, same locking, errors and
time limit) whose model call is ``create_agent(model, tools,
checkpointer=DjangoRedisSaver())`` on the thread, streamed token by token
(``stream_mode="messages"``) and saved once, when the run ends
(``durability="exit"``).

- A failed run saves nothing: the thread is put back as it was before the turn.
- A stopped run keeps what the page showed: the reply so far (cut to the text
  the page reported, as in chain mode) is added to the thread, marked
  interrupted; tool calls that had not run get a tool message saying so.
- "regenerate" and "edit" replace the last turn (the question and everything
  after it) in the same run; "continue" is refused (a graph cannot be asked
  to go on with a reply it did not finish).

Needs ``pip install chatmemory[langgraph]``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator
from contextlib import aclosing, closing
from typing import Any, cast

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string
from django.utils.translation import gettext_lazy
from langchain.agents import create_agent
from langchain.agents.middleware import AgentMiddleware, ModelRequest, ModelResponse
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    AnyMessage,
    BaseMessage,
    HumanMessage,
    RemoveMessage,
    ToolMessage,
    message_to_dict,
    messages_from_dict,
    trim_messages,
)
from langchain_core.runnables import RunnableConfig
from langgraph.config import get_config
from langgraph.types import StateSnapshot

from . import store
from .conf import conf
from .exceptions import SessionNotFound, StoreUnavailable
from .langgraph import MUST_EXIST, DjangoRedisSaver
from .records import INTERRUPTED
from .store.codec import usage_of_records
from .store.turns import cut_reply
from .turn import NOTHING_TO_REDO, ChatTurn, TurnRefused

logger = logging.getLogger("chatmemory")

TURN_METADATA = "turn"
"""The ``response_metadata`` key naming the turn (the page's id) that wrote an
AI message of a thread, so that a Stop can find its reply."""

CONFIG_TURN = "chatmemory_turn"
"""The ``configurable`` key handing the turn id to the agent's middleware."""

NO_CONTINUE = gettext_lazy(
    "An agent's stopped reply cannot be continued. Regenerate it, or send a "
    "new message."
)
NOT_RUN = "The user stopped the reply before this tool ran."
"""The tool message answering a tool call that a Stop kept from running."""

SEPARATOR = "\n\n"
"""What the stream sends between the texts of two AI messages of one turn."""


# ---------------------------------------------------------------------------
# The agent


def load_tools() -> list[Any]:
    """The tools ``CHATMEMORY_AGENT_TOOLS`` names (dotted paths), imported."""
    tools = []
    for path in conf.AGENT_TOOLS:
        try:
            tools.append(import_string(path))
        # ImportError, or whatever the module raises while it is imported.
        except Exception as exc:
            raise ImproperlyConfigured(
                f"CHATMEMORY_AGENT_TOOLS names {path!r}, which cannot be "
                f"imported: {exc}"
            ) from exc
    return tools


def _trim(messages: list[AnyMessage]) -> list[AnyMessage]:
    # A suffix that starts on a human message: tool calls keep their results.
    return cast(
        "list[AnyMessage]",
        trim_messages(
            messages,
            max_tokens=conf.PROMPT_MAX_TOKENS,
            token_counter="approximate",
            strategy="last",
            start_on="human",
        ),
    )


def _stamp(response: ModelResponse[Any]) -> ModelResponse[Any]:
    turn = get_config().get("configurable", {}).get(CONFIG_TURN)
    if turn:
        for message in response.result:
            if isinstance(message, AIMessage):
                message.response_metadata[TURN_METADATA] = turn
    return response


class TurnMiddleware(AgentMiddleware):  # type: ignore[misc]
    """The model sees the thread trimmed to ``CHATMEMORY_PROMPT_MAX_TOKENS``
    (as in chain mode; the thread keeps everything), and every AI message a
    turn writes names the turn."""

    def wrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], ModelResponse[Any]],
    ) -> ModelResponse[Any]:
        """Trim the prompt, call the model, name the turn on its reply."""
        return _stamp(handler(request.override(messages=_trim(request.messages))))

    async def awrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], Awaitable[ModelResponse[Any]]],
    ) -> ModelResponse[Any]:
        """Async :meth:`wrap_model_call`."""
        trimmed = request.override(messages=_trim(request.messages))
        return _stamp(await handler(trimmed))


_agents: dict[tuple[int, tuple[str, ...], str], tuple[BaseChatModel, Any]] = {}


def get_agent(model: BaseChatModel) -> Any:
    """The agent graph for ``model``, the configured tools and system prompt.

    Built once per configuration (compiling a graph takes milliseconds).
    Raises ``ImproperlyConfigured`` when a tool cannot be imported.
    """
    key = (id(model), tuple(conf.AGENT_TOOLS), conf.SYSTEM_PROMPT)
    cached = _agents.get(key)
    if cached is not None and cached[0] is model:
        return cached[1]
    if len(_agents) >= 16:  # settings overridden in a loop (tests)
        _agents.clear()
    graph = create_agent(
        model,
        load_tools(),
        system_prompt=conf.SYSTEM_PROMPT,
        middleware=[TurnMiddleware()],
        checkpointer=DjangoRedisSaver(),
    )
    _agents[key] = (model, graph)
    return graph


# ---------------------------------------------------------------------------
# A turn


class AgentTurn(ChatTurn):
    """One question and the agent's answer on one thread (see the module).

    Iterate :meth:`stream` (or :meth:`astream`) once; after it,
    :attr:`message` is the last AI message of the turn and
    :attr:`message_count` the thread's message count. Raises
    :class:`~chatmemory.exceptions.ModelFailed` (nothing saved),
    :class:`~chatmemory.exceptions.TurnInProgress` or ``StoreUnavailable``.
    """

    def __init__(
        self,
        session_id: str,
        question: str,
        *,
        owner: str | None = None,
        model: BaseChatModel | None = None,
        exclusive: bool = False,
        turn_id: str | None = None,
        rewrite: str | None = None,
        must_exist: bool = False,
    ) -> None:
        super().__init__(
            session_id,
            question,
            owner=owner,
            model=model,
            exclusive=exclusive,
            turn_id=turn_id,
            rewrite=rewrite,
            must_exist=must_exist,
        )
        self.graph = get_agent(self.model)
        configurable: dict[str, Any] = {"thread_id": self.session_id}
        if owner is not None:
            configurable["owner"] = owner
        if self.turn_id is not None:
            configurable[CONFIG_TURN] = self.turn_id
        self.config: RunnableConfig = {"configurable": configurable}
        self._streamed: dict[str, list[AIMessageChunk]] = {}
        """The AI messages streamed so far (by id): their chunks."""
        self._starts: dict[str, int] = {}
        """Where each streamed message's text starts in :attr:`reply`."""
        self._last_id = ""
        self._values: dict[str, Any] = {}

    # --- the run ---------------------------------------------------------------

    def _input(self, before: StateSnapshot) -> dict[str, Any]:
        """The run's input: the question, after what a rewrite takes out."""
        if self.rewrite is None:
            return {"messages": [HumanMessage(content=self.question)]}
        if self.rewrite == "continue":
            raise TurnRefused(NO_CONTINUE)
        messages: list[BaseMessage] = before.values.get("messages", [])
        humans = [i for i, m in enumerate(messages) if m.type == "human"]
        last = messages[-1] if messages else None
        if (
            not humans
            or not isinstance(last, AIMessage)
            or last.tool_calls
            or humans[-1] == len(messages) - 1
        ):
            raise TurnRefused(NOTHING_TO_REDO)
        question, *replies = messages[humans[-1] :]
        if self.rewrite == "regenerate":
            # The question stays as stored; the model answers it again.
            self.question = question.text
            return {"messages": [RemoveMessage(id=str(m.id)) for m in replies]}
        removed = [RemoveMessage(id=str(m.id)) for m in (question, *replies)]
        return {"messages": [*removed, HumanMessage(content=self.question)]}

    def _refuse(self, info: store.SessionInfo | None) -> None:
        if info is not None and info.kind != "thread" and info.message_count:
            raise TurnRefused(CHAIN_CHAT)
        if info is None and self.must_exist:
            # Deleted before the turn began. (One deleted while the agent
            # answers: the run's save raises it, see MUST_EXIST.)
            raise SessionNotFound(self.session_id)

    def _saving(self, config: RunnableConfig) -> RunnableConfig:
        """``config`` for a save of this turn's: when the turn must find its
        chat (``must_exist``, which the views set after construction), every
        save is refused once the chat is gone, so a chat deleted while the
        agent answers stays deleted (see :data:`MUST_EXIST`)."""
        if not self.must_exist:
            return config
        configurable = {**config.get("configurable", {}), MUST_EXIST: True}
        return {**config, "configurable": configurable}

    def _stream(self) -> Generator[str]:
        info = store.get_session(self.session_id)
        self._refuse(info)
        before = self.graph.get_state(self.config)
        run_input = self._input(before)
        started = time.monotonic()
        parts = self.graph.stream(
            run_input,
            self._saving(self.config),
            stream_mode=["messages", "values"],
            durability="exit",
        )
        try:
            with closing(parts):
                for mode, data in parts:
                    text = self._take_part(mode, data)
                    if text:
                        yield text
                    if self._over_time(started):
                        self.timed_out = True
                        break
        except GeneratorExit:
            self._save_stopped()
            raise
        except SessionNotFound as exc:
            # Deleted while the agent answered: the run's save was refused.
            if isinstance(exc.__context__, GeneratorExit):
                return  # and the page stopped it: nothing to tell or keep
            raise
        except StoreUnavailable:
            raise
        # Any chat model or tool may raise anything: see ChatTurn.stream().
        except Exception as exc:
            self._undo(before, info)
            raise self._failed(exc) from exc
        if self.timed_out:
            self._save_stopped()
        else:
            self._finish()
            self._count_usage()

    async def _astream(self) -> AsyncGenerator[str]:
        info = await store.aget_session(self.session_id)
        self._refuse(info)
        before = await self.graph.aget_state(self.config)
        run_input = self._input(before)
        started = time.monotonic()
        parts = self.graph.astream(
            run_input,
            self._saving(self.config),
            stream_mode=["messages", "values"],
            durability="exit",
        )
        try:
            async with aclosing(parts):
                async for mode, data in parts:
                    text = self._take_part(mode, data)
                    if text:
                        yield text
                    if self._over_time(started):
                        self.timed_out = True
                        break
        # The consumer closed the stream (GeneratorExit) or the server cancelled
        # the task because the client went away (CancelledError).
        except (GeneratorExit, asyncio.CancelledError):
            await self._asave_stopped()
            raise
        except SessionNotFound as exc:
            # Deleted while the agent answered: the run's save was refused.
            stopped = exc.__context__
            if isinstance(stopped, asyncio.CancelledError):
                raise stopped from None
            if isinstance(stopped, GeneratorExit):
                return
            raise
        except StoreUnavailable:
            raise
        except Exception as exc:
            await self._aundo(before, info)
            raise self._failed(exc) from exc
        if self.timed_out:
            await self._asave_stopped()
        else:
            self._finish()
            await self._acount_usage()

    def _take_part(self, mode: str, data: Any) -> str:
        """The text a streamed part adds to the reply ('' for most parts)."""
        if mode == "values":
            self._values = data
            return ""
        chunk, _metadata = data
        if not isinstance(chunk, AIMessageChunk) or not chunk.id:
            return ""  # tool results, and the input as the graph takes it
        self._streamed.setdefault(chunk.id, []).append(chunk)
        text = str(chunk.text)
        if not text:
            return ""
        sent = text
        if chunk.id != self._last_id:
            if self.reply:
                self.reply += SEPARATOR
                sent = SEPARATOR + text
            self._starts[chunk.id] = len(self.reply)
            self._last_id = chunk.id
        self.reply += text
        return sent

    def _finish(self) -> None:
        messages = self._values.get("messages", [])
        replies = [m for m in messages if isinstance(m, AIMessage)]
        self.message = replies[-1] if replies else AIMessage(content="")
        self.message_count = len(messages)
        self._keep_records(messages)

    def _keep_records(self, messages: list[BaseMessage]) -> None:
        """:attr:`records`: the turn's messages (its question unless kept as
        it was, by a regenerate), as the ``done`` event reads them."""
        humans = [i for i, m in enumerate(messages) if m.type == "human"]
        start = humans[-1] if humans else 0
        if self.rewrite == "regenerate":
            start += 1
        self.records = [message_to_dict(m) for m in messages[start:]]

    # --- the day's tokens -----------------------------------------------------

    def _usage(self) -> tuple[int, int, int] | None:
        usage = usage_of_records(self.records)
        return usage if self.owner and any(usage) else None

    def _count_usage(self) -> None:
        """Add the turn's tokens to its owner's day (CHATMEMORY_TOKENS_PER_DAY),
        at most once per turn (its write id). The turn is saved by then: a
        Redis error here is logged, not shown."""
        if (usage := self._usage()) is None or self.owner is None:
            return
        try:
            store.add_usage(self.owner, usage, self.write_id)
        except StoreUnavailable:
            logger.warning("chatmemory: could not count a turn's tokens", exc_info=True)

    async def _acount_usage(self) -> None:
        if (usage := self._usage()) is None or self.owner is None:
            return
        try:
            await store.aadd_usage(self.owner, usage, self.write_id)
        except StoreUnavailable:
            logger.warning("chatmemory: could not count a turn's tokens", exc_info=True)

    # --- a failed run ----------------------------------------------------------

    def _undo(self, before: StateSnapshot, info: store.SessionInfo | None) -> None:
        """Put the thread back as it was before the turn (the run saved its
        input, and what it got to, when it ended)."""
        if before.config.get("configurable", {}).get("checkpoint_id"):
            self.graph.update_state(
                self._saving(before.config), None, as_node="__copy__"
            )
            return
        DjangoRedisSaver().delete_thread(self.session_id)
        if info is not None:  # a chat named (or made) before its first turn
            store.create_session(self.session_id, owner=info.owner, title=info.title)

    async def _aundo(
        self, before: StateSnapshot, info: store.SessionInfo | None
    ) -> None:
        if before.config.get("configurable", {}).get("checkpoint_id"):
            await self.graph.aupdate_state(
                self._saving(before.config), None, as_node="__copy__"
            )
            return
        await DjangoRedisSaver().adelete_thread(self.session_id)
        if info is not None:
            await store.acreate_session(
                self.session_id, owner=info.owner, title=info.title
            )

    # --- a stopped run ---------------------------------------------------------

    def _stopped_update(
        self, state: StateSnapshot, shown: str | None
    ) -> list[BaseMessage]:
        """What a stopped turn writes to the thread (as the model node).

        The reply is the AI message streamed last, with the text the stream
        sent of it (cut to ``shown``, what the page said it showed), marked
        interrupted. The run may have saved it whole (the model can be ahead
        of the stream): then it is replaced. Tool calls the Stop kept from
        running get a tool message saying so, so the thread stays valid for
        a model.
        """
        messages: list[BaseMessage] = state.values.get("messages", [])
        streamed = next(reversed(self._streamed), "")
        start = self._starts.get(streamed, len(self.reply))
        text = self.reply[start:]
        if shown is not None:
            text = _cut(text, shown[start:])
        metadata: dict[str, Any] = {INTERRUPTED: True}
        if self.turn_id is not None:
            metadata[TURN_METADATA] = self.turn_id
        # The turn's messages so far are written again (as themselves): the
        # last may be only a pending write of the model's task, which this
        # update, written as the model node, replaces.
        humans = [i for i, m in enumerate(messages) if m.type == "human"]
        carried = messages[humans[-1] + 1 :] if humans else list(messages)
        last = messages[-1] if messages else None
        if isinstance(last, AIMessage) and last.id == streamed and not last.tool_calls:
            # Saved whole, seen in part.
            reply = last.model_copy(
                update={
                    "content": text,
                    "response_metadata": {**last.response_metadata, **metadata},
                }
            )
            self.message, self.message_count = reply, len(messages)
            return [*carried[:-1], reply]
        saved = {m.id for m in messages}
        if streamed in saved:
            text = ""  # a message that is complete; the reply had not started
        answered = {m.tool_call_id for m in messages if isinstance(m, ToolMessage)}
        not_run: list[BaseMessage] = [
            ToolMessage(content=NOT_RUN, tool_call_id=call["id"], name=call["name"])
            for message in messages
            if isinstance(message, AIMessage)
            for call in message.tool_calls
            if call["id"] and call["id"] not in answered
        ]
        reply = AIMessage(content=text, response_metadata=metadata)
        if streamed and streamed not in saved:
            reply.id = streamed
        self.message = reply
        self.message_count = len(messages) + len(not_run) + 1
        return [*carried, *not_run, reply]

    def _save_stopped(self) -> None:
        try:
            shown = (
                None
                if self.turn_id is None
                else store.stop_note(self.session_id, self.turn_id)
            )
            state = self.graph.get_state(self.config)
            update = self._stopped_update(state, shown)
            self.graph.update_state(
                self._saving(state.config), {"messages": update}, as_node="model"
            )
            self._keep_records(_merged(state.values.get("messages", []), update))
            self._count_usage()
        # A stop must never turn into an error: the thread keeps what the
        # run saved, and the log says why the reply is missing.
        except Exception:
            logger.warning(
                "chatmemory: could not save the stopped reply of thread %r",
                self.session_id,
                exc_info=True,
            )

    async def _asave_stopped(self) -> None:
        try:
            shown = (
                None
                if self.turn_id is None
                else await store.astop_note(self.session_id, self.turn_id)
            )
            state = await self.graph.aget_state(self.config)
            update = self._stopped_update(state, shown)
            await self.graph.aupdate_state(
                self._saving(state.config), {"messages": update}, as_node="model"
            )
            self._keep_records(_merged(state.values.get("messages", []), update))
            await self._acount_usage()
        # A stop must never turn into an error: the thread keeps what the
        # run saved, and the log says why the reply is missing.
        except Exception:
            logger.warning(
                "chatmemory: could not save the stopped reply of thread %r",
                self.session_id,
                exc_info=True,
            )


CHAIN_CHAT = gettext_lazy(
    'This chat was written without the agent (chat mode "chain"), so the agent '
    "cannot go on with it. Start a new chat."
)


def _merged(
    messages: list[BaseMessage], update: list[BaseMessage]
) -> list[BaseMessage]:
    """``messages`` after ``update`` (as ``add_messages`` merges: by id)."""
    merged = list(messages)
    where = {m.id: i for i, m in enumerate(merged) if m.id}
    for message in update:
        if message.id in where:
            merged[where[message.id]] = message
        else:
            merged.append(message)
    return merged


def _cut(text: str, shown: str) -> str:
    """``text`` cut to ``shown`` when that is where it starts (never other words)."""
    shown = shown.replace("\r\n", "\n")
    return shown if text.startswith(shown) else text


# ---------------------------------------------------------------------------
# Stop, reported by the page


def cut_stopped_reply(thread_id: str, turn: str, shown: str) -> store.StopResult:
    """Cut the reply turn ``turn`` saved on the thread to what the page showed.

    "missing" while the thread has no reply of that turn yet (the turn saves
    it when it notices the closed stream, and then applies ``shown`` itself,
    from the note :func:`chatmemory.store.note_stop` keeps).
    """
    graph = get_agent(_model())
    config: RunnableConfig = {"configurable": {"thread_id": thread_id}}
    state = graph.get_state(config)
    messages: list[BaseMessage] = state.values.get("messages", [])
    mine = [
        m
        for m in messages
        if isinstance(m, AIMessage) and m.response_metadata.get(TURN_METADATA) == turn
    ]
    if not mine:
        return "missing"
    before = SEPARATOR.join(m.text for m in mine[:-1] if m.text)
    start = len(before) + len(SEPARATOR) if before else 0
    record = cut_reply(
        message_to_dict(mine[-1]), shown[start:] if len(shown) > start else ""
    )
    if record is None:
        return "kept"
    [cut] = messages_from_dict([record])
    graph.update_state(state.config, {"messages": [cut]}, as_node="model")
    return "cut"


def _model() -> BaseChatModel:
    from .llm import get_chat_model

    return get_chat_model()


__all__ = [
    "CHAIN_CHAT",
    "NO_CONTINUE",
    "AgentTurn",
    "TurnMiddleware",
    "cut_stopped_reply",
    "get_agent",
    "load_tools",
]
