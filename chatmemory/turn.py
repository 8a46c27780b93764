"""One chat turn on a Redis-backed history: load, trim, stream, save.

I have a session id and a question, and I want the answer, with both saved::

    from chatmemory.turn import ChatTurn

    turn = ChatTurn("foo", "What did I say first?", owner="42")
    for token in turn.stream():  # or: async for token in turn.astream()
        print(token, end="")
    turn.message_count  # the session's messages after the save

A turn loads the tail of the history its prompt can use (one round trip, more
only for a large token budget), trims it to ``CHATMEMORY_PROMPT_MAX_TOKENS``,
streams the model on the prompt (:func:`build_prompt`), and saves the human and
AI messages together in one atomic write when the reply completes (at most
once: the write carries the turn's write id, so a save retried after a timeout
is never applied twice).
A model failure saves nothing (:class:`ModelFailed`); a reply whose consumer
stops early is saved as far as it got, with ``response_metadata["interrupted"]``.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import queue
import secrets
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator, Sequence
from contextlib import aclosing, closing
from typing import Any, NamedTuple, cast, get_type_hints

from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    RemoveMessage,
    SystemMessage,
    message_chunk_to_message,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.messages.utils import count_tokens_approximately
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder

from . import store
from .conf import conf
from .exceptions import (
    ModelFailed,
    SessionChanged,
    SessionNotFound,
    StoreTimeout,
    StoreUnavailable,
    TurnInProgress,
)
from .history import messages_to_records, records_to_messages
from .llm import describe_failure, get_chat_model
from .records import INTERRUPTED

logger = logging.getLogger("chatmemory")

TAIL_TOKENS = 16
"""The tokens per record a turn's first read assumes: it reads the last
``CHATMEMORY_PROMPT_MAX_TOKENS / TAIL_TOKENS`` records (188 by default), one
round trip for any chat whose messages average more (a short question and
its answer do); more only while the token budget needs them."""


def _first_read() -> int:
    return max(16, math.ceil(conf.PROMPT_MAX_TOKENS / TAIL_TOKENS))


def build_prompt() -> ChatPromptTemplate:
    """The system prompt, the (trimmed) history, then the question."""
    return ChatPromptTemplate.from_messages(
        [
            # A message, not a template: braces in the setting stay as typed.
            SystemMessage(content=conf.SYSTEM_PROMPT),
            MessagesPlaceholder(variable_name="history"),
            ("human", "{question}"),
        ]
    )


def prompt_problem(message: BaseMessage) -> str:
    """Why ``message`` cannot go to a model (``""`` when it can).

    The history reader builds messages from trusted records without
    validating them (validation is most of the cost of a long read), so a
    record written by hand or by another program may hold wrong types.
    Messages of the common shapes (see :func:`_well_formed`) are passed by a
    look at their fields' types; the rest are validated in full.
    """
    if isinstance(message, RemoveMessage):
        return "a RemoveMessage is an instruction to a graph, not a message"
    if _well_formed(message):
        return ""
    try:
        type(message).model_validate(message.__dict__)
        message.text  # noqa: B018 - models and the demo read it
    # Validators raise more than ValidationError on malformed data.
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return ""


_FIELDS: dict[type[BaseMessage], frozenset[str]] = {
    cls: frozenset(cls.model_fields) for cls in (HumanMessage, AIMessage, SystemMessage)
}
_TYPES = {HumanMessage: "human", AIMessage: "ai", SystemMessage: "system"}
_TOOL_CALL_KEYS = frozenset({"name", "args", "id"})


def _int_keys(typed_dict: type) -> frozenset[str]:
    return frozenset(
        name for name, hint in get_type_hints(typed_dict).items() if hint is int
    )


# A usage record's counts (ints) and its details (TypedDicts of ints).
_USAGE_COUNTS = _int_keys(UsageMetadata)
_USAGE_DETAILS = {
    name: _int_keys(hint)
    for name, hint in get_type_hints(UsageMetadata).items()
    if hint is not int
}


def _well_formed(message: BaseMessage) -> bool:
    """Whether ``message`` is of a shape its model's validation surely accepts.

    True only for a human, AI or system message whose fields are all set, each
    of exactly its declared type (str or content blocks; dicts; str or None;
    for a reply, well-typed tool calls and usage counts, none waiting in
    ``additional_kwargs``), which is how the history reader and the models
    build them: a look at a few types instead of a validation (tens of
    microseconds a message). False means "not known": validate in full.
    """
    cls = type(message)
    fields = _FIELDS.get(cls)
    values = message.__dict__
    if fields is None or values.keys() != fields:
        return False
    content = values["content"]
    if type(content) is not str and not (
        type(content) is list
        and all(type(block) is str or type(block) is dict for block in content)
    ):
        return False
    if not (
        type(values["additional_kwargs"]) is dict
        and type(values["response_metadata"]) is dict
        and type(values["type"]) is str
        and values["type"] == _TYPES[cls]
        and (values["name"] is None or type(values["name"]) is str)
        and (values["id"] is None or type(values["id"]) is str)
    ):
        return False
    if cls is not AIMessage:
        return True
    calls = values["tool_calls"]
    usage = values["usage_metadata"]
    return (
        type(calls) is list
        and (
            all(_well_formed_call(call) for call in calls)
            if calls
            # Without tool calls, validation parses those in additional_kwargs.
            else not values["additional_kwargs"].get("tool_calls")
        )
        and type(values["invalid_tool_calls"]) is list
        and not values["invalid_tool_calls"]
        and (usage is None or _well_formed_usage(usage))
    )


def _well_formed_call(call: object) -> bool:
    if type(call) is not dict:
        return False
    name, args, id_ = call.get("name"), call.get("args"), call.get("id")
    return (
        call.keys() - {"type"} == _TOOL_CALL_KEYS
        and call.get("type", "tool_call") == "tool_call"
        and type(name) is str
        and type(args) is dict
        and all(type(key) is str for key in args)
        and (id_ is None or type(id_) is str)
    )


def _well_formed_usage(usage: object) -> bool:
    if type(usage) is not dict or not usage.keys() >= UsageMetadata.__required_keys__:
        return False
    for key, value in usage.items():
        if key in _USAGE_COUNTS:
            if type(value) is not int:
                return False
        elif key in _USAGE_DETAILS:
            if type(value) is not dict or not all(
                name in _USAGE_DETAILS[key] and type(count) is int
                for name, count in value.items()
            ):
                return False
        else:
            return False
    return True


_ROLE_LENGTHS = {HumanMessage: len("user"), AIMessage: len("assistant")}
_KIND_ROLE_LENGTHS = {"human": len("user"), "ai": len("assistant")}


def _text_tokens(content: str, role: int) -> int:
    """``count_tokens_approximately``'s count of a text message: a token per 4
    characters of content and role name, rounded up, plus 3."""
    return -(-(len(content) + role) // 4) + 3


def message_tokens(message: BaseMessage) -> int:
    """``count_tokens_approximately([message])``, the prompt budget's measure.

    The approximate count of a list of messages is the sum of their counts, so
    a turn counts each message once. Text messages (a human or AI message
    with text content, no name, no tool calls) are counted here by the same
    rule (a token per 4 characters of content and role, rounded up, plus 3),
    without the call's per-call work.
    """
    role = _ROLE_LENGTHS.get(type(message))
    if role is not None:
        content = message.content
        if (
            type(content) is str
            and not message.name
            and not (type(message) is AIMessage and message.tool_calls)
        ):
            return _text_tokens(content, role)
    return count_tokens_approximately([message])


def _cost(message: BaseMessage) -> int | str:
    """The message's tokens, or why it cannot go to a model."""
    problem = prompt_problem(message)
    if problem:
        return problem
    try:
        return message_tokens(message)
    # A message that passes validation can still break the counting (a content
    # block whose "type" is not hashable): it cannot be measured, so it is left
    # out like any other malformed message.
    except Exception as exc:
        return f"its tokens cannot be counted: {type(exc).__name__}: {exc}"


def entry_problem(entry: store.Record | store.UnreadableEntry) -> str:
    """Why a turn's prompt leaves this stored entry out (``""`` when it may go in).

    The one rule for stored entries: an entry the history reader cannot make
    a message of, or whose message cannot go to a model (:func:`_cost`:
    :func:`prompt_problem`, or tokens that cannot be counted). The chat page
    shows the entries it names as unreadable.
    """
    if _record_tokens(entry) is not None:
        return ""  # a text record, which the reader builds as it is
    found = _prompt_message(entry)
    return found if isinstance(found, str) else ""


def _prompt_message(entry: store.Record | store.UnreadableEntry) -> BaseMessage | str:
    """The message a stored entry becomes in a prompt, or why it cannot."""
    reasons: list[str] = []
    built = records_to_messages(
        [entry], skipped=lambda _position, reason: reasons.append(reason)
    )
    if not built:
        return reasons[0] if reasons else "not a message"
    if _record_tokens(entry) is None:
        cost = _cost(built[0])
        if type(cost) is str:
            return cost
    return built[0]


def _record_tokens(entry: store.Record | store.UnreadableEntry) -> int | None:
    """What :func:`_cost` says of the message a text record becomes, read off
    the record; None when the record is not known to be one.

    A text record is a human or AI record whose content is text and whose
    other fields (see :func:`_text_field`) make a message that
    :func:`_well_formed` passes and :func:`message_tokens` counts as text; the
    history reader builds it as is. Most records are such, so a turn measures
    them as it picks them, without a second look at the message.
    """
    if type(entry) is not dict:
        return None
    kind = entry.get("type")
    role = _KIND_ROLE_LENGTHS.get(kind) if type(kind) is str else None
    data = entry.get("data")
    if role is None or type(data) is not dict:
        return None
    content = data.get("content")
    if type(content) is not str:
        return None
    if len(data) > 1:
        for key, value in data.items():
            if key != "content" and not _text_field(cast(str, kind), key, value):
                return None
    return _text_tokens(content, role)


def _text_field(kind: str, key: str, value: object) -> bool:
    """Whether a text record's field ``key`` may hold ``value`` (see
    :func:`_record_tokens`): no name, no tool calls, each of its type."""
    if key == "type":
        return value == kind
    if key == "id":
        return value is None or type(value) is str
    if key == "name":
        return value is None or value == ""
    if key == "response_metadata":
        return type(value) is dict
    if key == "additional_kwargs":
        # A reply's tool calls may wait here (validation moves them).
        return type(value) is dict and (kind != "ai" or not value.get("tool_calls"))
    if kind != "ai":
        return False
    if key == "usage_metadata":
        return value is None or _well_formed_usage(value)
    return key in ("tool_calls", "invalid_tool_calls") and value == []


def _guess_tokens(entry: store.Record | store.UnreadableEntry) -> int:
    """A record's tokens as a quick look guesses them, before it is a message.

    Exact for the text records of :func:`message_tokens`, below the count for
    most others; it only says how many records to turn into messages (the
    prompt is measured on the messages).
    """
    if type(entry) is dict:
        data = entry.get("data")
        if type(data) is dict:
            content = data.get("content")
            if type(content) is str:
                kind = entry.get("type")
                # A record's type may be anything, even unhashable.
                role = _KIND_ROLE_LENGTHS.get(kind, 0) if type(kind) is str else 0
                return _text_tokens(content, role)
    return 3


Costs = list[int | str | None]
"""Per message of a history: its tokens, why it cannot go to a model, or None
(not measured yet)."""


class _OutOfTime(Exception):
    """No chunk came before the turn's time limit."""


_CHUNK, _END, _ERROR = range(3)


def _within[T](chunks: Iterator[T], deadline: float) -> Generator[T]:
    """``chunks`` as they come, until ``deadline`` (``time.monotonic()``):
    raises :class:`_OutOfTime` when none has come by then.

    A blocked ``next()`` cannot be interrupted, so ``chunks`` is read in a
    thread of its own (with the caller's context: callbacks and tracing see
    the same context variables) and handed over through a queue, which a wait
    can give up on. When this generator ends, however it ends, the thread
    stops at the model's next chunk and closes ``chunks`` itself (a generator
    cannot be closed from another thread while it runs), so it lives no
    longer than the model's next chunk. Errors of the model are raised here.
    """
    feed: queue.SimpleQueue[tuple[int, Any]] = queue.SimpleQueue()
    stop = threading.Event()

    def read() -> None:
        try:
            with closing(cast(Any, chunks)):
                for chunk in chunks:
                    if stop.is_set():
                        return
                    feed.put((_CHUNK, chunk))
        # Any error of the model goes to the reader, which raises it.
        except BaseException as exc:
            feed.put((_ERROR, exc))
        else:
            feed.put((_END, None))

    reader = threading.Thread(
        target=contextvars.copy_context().run,
        args=(read,),
        name="chatmemory-model-stream",
        daemon=True,
    )
    reader.start()
    try:
        while True:
            try:
                kind, item = feed.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise _OutOfTime from None
            if kind == _CHUNK:
                yield item
            elif kind == _END:
                return
            else:
                raise item
    finally:
        stop.set()


async def _anext_within[T](chunks: AsyncIterator[T], deadline: float | None) -> T:
    """The next of ``chunks``, waited for until ``deadline`` (the event loop's
    clock, None: no limit); :class:`_OutOfTime` when it has not come by then
    (the wait is cancelled, which ends ``chunks``)."""
    if deadline is None:
        return await chunks.__anext__()
    timer = asyncio.timeout_at(deadline)
    try:
        async with timer:
            return await chunks.__anext__()
    except TimeoutError:
        if timer.expired():  # not a TimeoutError of the model's own
            raise _OutOfTime from None
        raise


class _Tail(NamedTuple):
    """The messages a turn loaded, what each costs, and their usable tokens."""

    messages: list[BaseMessage]
    costs: Costs
    tokens: int


REWRITES = ("regenerate", "edit", "continue")
"""The ways a turn can redo the session's last turn (see :class:`ChatTurn`)."""

CONTINUE_PROMPT = (
    "Continue your previous answer exactly where it stopped, without repeating "
    "any of it."
)
"""The instruction a "continue" turn gives the model (it is not stored)."""

CHANGED_MEANWHILE = gettext_lazy(
    "This chat changed in another tab or window while the reply was written, "
    "so it was not saved. Reload the page to see the chat as it is."
)
NOTHING_TO_REDO = gettext_lazy(
    "The last message of this chat is not a reply that can be redone. "
    "Reload the page to see the chat as it is."
)

CANNOT_REDO = gettext_lazy(
    "The last message or reply of this chat cannot be read, so it cannot be "
    "redone. Send a new message instead."
)


class TurnRefused(ModelFailed):
    """A rewrite of the last turn could not be done or saved; nothing was saved."""

    def __init__(self, user_message: object) -> None:
        super().__init__(str(user_message))


class ChatTurn:
    """One question and its reply on one session: load, trim, stream, save.

    Iterate :meth:`stream` (or :meth:`astream`) once; the text tokens come as
    the model produces them. After the loop, :attr:`message` is the saved reply
    and :attr:`message_count` the session's size. Raises :class:`ModelFailed`
    (nothing saved), ``StoreUnavailable`` (a subclass says why), or
    ``SessionNotFound`` when ``must_exist`` and the session was deleted while
    the reply was written (nothing saved).
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
        self.session_id = store.validate_session_id(session_id)
        self.turn_id = None if turn_id is None else store.validate_turn_id(turn_id)
        """The id the page gave this turn (its Stop report names it)."""
        if rewrite is not None and rewrite not in REWRITES:
            raise ValueError(f"rewrite must be one of {REWRITES}, not {rewrite!r}")
        self.rewrite = rewrite
        """None (a new question), or how the last turn is redone: "regenerate"
        its reply, "edit" its question, or "continue" a stopped reply."""
        self._snapshot: store.Snapshot | None = None
        self._prefix = ""
        self.exclusive = exclusive
        """One exclusive turn at a time per session (the chat views' turns)."""
        self.question = question
        self.owner = owner
        self.must_exist = must_exist
        """Save only into a live session: one deleted meanwhile stays deleted
        (the save raises :class:`~chatmemory.exceptions.SessionNotFound`)."""
        self.write_id = store.new_write_id()
        """The turn's write id: its save is applied at most once."""
        self.model = get_chat_model() if model is None else model
        self.reply = ""
        """The reply's text so far."""
        self.message: AIMessage | None = None
        """The saved reply (None until it is saved)."""
        self.message_count: int | None = None
        """The session's message count after the save."""
        self.timed_out = False
        """Whether the reply was cut at ``CHATMEMORY_TURN_TIME_LIMIT``."""
        self.records: list[store.Record] = []
        """The records the turn saves (the question, if new, and the reply)."""
        self._chunks: list[AIMessageChunk] = []
        self.admission: store.Admission | None = None
        """The turn-limit admission this turn holds (see ``store.admit_turn``):
        an exclusive turn gives its stream slot back with its lock, in one
        round trip, and sets this to None; else its caller releases it."""

    def prompt_input(self, history: list[BaseMessage]) -> dict[str, Any]:
        """The prompt's input: the history trimmed to the budget, and the question.

        The history is what ``trim_messages`` (``strategy="last"``,
        ``start_on="human"``, ``include_system=True``, the approximate token
        counter) keeps of the messages a model can take: entries it cannot
        (``RemoveMessage``, records whose fields have the wrong types) are left
        out, with a warning. Each message is counted once, from the newest
        back, and only those up to the budget are looked at, so a long history
        costs no more than a short one.
        """
        return {"history": self._fit(history), "question": self.question}

    def _fit(
        self, history: Sequence[BaseMessage], costs: Costs | None = None
    ) -> list[BaseMessage]:
        """The prompt's share of ``history`` (see :meth:`prompt_input`).

        ``costs`` may hold the messages' costs already worked out (None where
        not); it is filled in as the messages are measured.
        """
        if costs is None:
            costs = [None] * len(history)

        def tokens(position: int) -> int | None:
            cost = costs[position]
            if cost is None:
                cost = costs[position] = _cost(history[position])
            if type(cost) is str:
                logger.warning(
                    "chatmemory: leaving message %d of session %r out of the "
                    "prompt: %s",
                    position,
                    self.session_id,
                    cost,
                )
                return None
            return cast(int, cost)

        # trim_messages on the usable messages, counted once each: the first
        # usable message stays when it is a system message, then the longest
        # run of the newest that fits what is left, from its first human one.
        lead = next((i for i in range(len(history)) if tokens(i) is not None), None)
        if lead is None:
            return []
        budget = conf.PROMPT_MAX_TOKENS
        system = history[lead] if isinstance(history[lead], SystemMessage) else None
        if system is not None:
            budget = max(0, budget - cast(int, costs[lead]))
            lead += 1
        kept: list[BaseMessage] = []
        total = 0
        for position in range(len(history) - 1, lead - 1, -1):
            cost = tokens(position)
            if cost is None:
                continue
            total += cost
            if total > budget:
                break
            kept.append(history[position])
        while kept and kept[-1].type != "human":
            kept.pop()
        kept.reverse()
        return kept if system is None else [system, *kept]

    def load_history(self) -> list[BaseMessage]:
        """The tail of the history the prompt can use (not the whole session).

        Reads the last records (see :data:`TAIL_TOKENS`), and more (as many
        as the tokens per record so far say the budget needs) while the
        session holds more and the usable ones do not fill the token budget;
        only the records that can reach the prompt become messages. So a
        turn's cost follows the prompt budget, not the session's length.
        """
        return self._load().messages

    async def aload_history(self) -> list[BaseMessage]:
        """Async :meth:`load_history`."""
        return (await self._aload()).messages

    def _load(self) -> _Tail:
        count = _first_read()
        while True:
            records, length = store.read_tail(self.session_id, count)
            tail = self._tail(records, complete=length <= count)
            count = self._more(tail, count, length)
            if not count:
                return tail

    async def _aload(self) -> _Tail:
        count = _first_read()
        while True:
            records, length = await store.aread_tail(self.session_id, count)
            tail = self._tail(records, complete=length <= count)
            count = self._more(tail, count, length)
            if not count:
                return tail

    def _tail(
        self, records: list[store.Record | store.UnreadableEntry], *, complete: bool
    ) -> _Tail:
        """The messages of the newest ``records`` that fill the budget.

        Records become messages a run at a time, from the newest back, each
        run as long as its records' guessed tokens say the budget needs; it
        stops once the usable messages' tokens pass the budget (then the
        prompt is the one the whole history would give) or the records run
        out. Records that cannot fill it, of a session that holds more, do
        not become messages at all (the tail is empty, its tokens guessed).
        """
        budget = conf.PROMPT_MAX_TOKENS
        messages: list[BaseMessage] = []
        costs: Costs = []
        total = 0
        end = len(records)
        # The text records' tokens, found as the records are picked.
        known: list[int | None] = [None] * end
        while end and total <= budget:
            start, guess = end, total
            while start and guess <= budget:
                start -= 1
                entry = records[start]
                tokens = known[start] = _record_tokens(entry)
                guess += _guess_tokens(entry) if tokens is None else tokens
            if not (start or complete or guess > budget):
                return _Tail([], [], guess)
            run = self._history(records[start:end])
            # One message per record, unless an unreadable one was skipped.
            aligned = len(run) == end - start
            run_costs: Costs = []
            for position, message in enumerate(run, start):
                tokens = known[position] if aligned else None
                cost = _cost(message) if tokens is None else tokens
                run_costs.append(cost)
                if type(cost) is int:
                    total += cost
            messages[:0] = run
            costs[:0] = run_costs
            end = start
        return _Tail(messages, costs, total)

    @staticmethod
    def _more(tail: _Tail, count: int, length: int) -> int:
        """How many records to read next; 0 when ``tail`` is enough."""
        budget = conf.PROMPT_MAX_TOKENS
        if length <= count or tail.tokens > budget:
            return 0
        # Enough records for the budget at this tail's tokens per record, with
        # a margin; at least twice as many, so a few rounds reach any budget.
        return max(2 * count, math.ceil(count * budget * 1.25 / max(tail.tokens, 1)))

    def _start(
        self, history: list[BaseMessage], costs: Costs | None = None
    ) -> list[BaseMessage]:
        """The prompt's messages; a prompt that cannot be built is ModelFailed.

        The model is streamed on them itself, not through a ``prompt | model``
        sequence: under asyncio a sequence hands every chunk on in an asyncio
        task of its own (LangChain's ``atransform``), a task and two event loop
        iterations per token, which made the async turn cost half as much
        again as the sync one.
        """
        try:
            return build_prompt().format_messages(
                history=self._fit(history, costs), question=self.question
            )
        # Whatever the stored history holds must not become a 500: the user
        # gets words, the log the traceback.
        except Exception as exc:
            logger.warning(
                "chatmemory: the prompt of session %r could not be built; "
                "nothing saved",
                self.session_id,
                exc_info=exc,
            )
            raise ModelFailed(
                _(
                    "This chat's history could not be turned into a prompt for "
                    "the model; nothing was saved."
                )
            ) from exc

    def _over_time(self, started: float) -> bool:
        limit = conf.TURN_TIME_LIMIT
        return limit is not None and time.monotonic() - started >= limit

    def _lock_seconds(self) -> float:
        # Long enough for the longest turn; a killed process's lock expires.
        return (conf.TURN_TIME_LIMIT or 600) + 60

    def stream(self) -> Generator[str]:
        """Run the turn, yielding the reply's text as it comes (sync).

        With ``exclusive``, raises :class:`TurnInProgress` (before anything
        is done) while another exclusive turn runs on the session.
        """
        if not self.exclusive:
            yield from self._stream()
            return
        token = secrets.token_hex(16)
        if not store.lock_turn(self.session_id, token, seconds=self._lock_seconds()):
            raise TurnInProgress(self.session_id)
        try:
            yield from self._stream()
        finally:
            store.unlock_turn(self.session_id, token, release=self.admission)
            self.admission = None

    async def astream(self) -> AsyncGenerator[str]:
        """Run the turn, yielding the reply's text as it comes (async)."""
        if not self.exclusive:
            # aclosing: closing this generator must close the inner one now,
            # so a stopped reply is saved before aclose() returns.
            async with aclosing(self._astream()) as texts:
                async for text in texts:
                    yield text
            return
        token = secrets.token_hex(16)
        locked = await store.alock_turn(
            self.session_id, token, seconds=self._lock_seconds()
        )
        if not locked:
            raise TurnInProgress(self.session_id)
        try:
            async with aclosing(self._astream()) as texts:
                async for text in texts:
                    yield text
        finally:
            await store.aunlock_turn(self.session_id, token, release=self.admission)
            self.admission = None

    def _stream(self) -> Generator[str]:
        if self.rewrite is None:
            history, costs, _ = self._load()
        else:
            history, costs, _ = self._rewrite()
        started = time.monotonic()
        chunks: Iterator[BaseMessage] = self.model.stream(self._start(history, costs))
        limit = conf.TURN_TIME_LIMIT
        if limit is not None:
            # The limit holds while the model sends nothing, too.
            chunks = _within(chunks, started + limit)
        try:
            with closing(cast(Any, chunks)):
                for chunk in chunks:
                    text = self._take(chunk)
                    if text:
                        yield text
                    if self._over_time(started):
                        self.timed_out = True
                        break
        except _OutOfTime:
            self.timed_out = True
        except GeneratorExit:
            self._save_interrupted()
            raise
        # Any chat model may raise anything (HTTP errors, timeouts, bugs in a
        # custom model): the user gets words, the log the traceback.
        except Exception as exc:
            raise self._failed(exc) from exc
        self.message_count = self._save(self._records(interrupted=self.timed_out))

    async def _astream(self) -> AsyncGenerator[str]:
        if self.rewrite is None:
            history, costs, _ = await self._aload()
        else:
            history, costs, _ = await self._arewrite()
        started = time.monotonic()
        chunks = self.model.astream(self._start(history, costs))
        limit = conf.TURN_TIME_LIMIT
        # The limit holds while the model sends nothing, too: each wait for a
        # chunk ends at it.
        deadline = None if limit is None else asyncio.get_running_loop().time() + limit
        try:
            async with aclosing(cast(Any, chunks)):
                while True:
                    try:
                        chunk = await _anext_within(chunks, deadline)
                    except StopAsyncIteration:
                        break
                    text = self._take(chunk)
                    if text:
                        yield text
                    if self._over_time(started):
                        self.timed_out = True
                        break
        except _OutOfTime:
            self.timed_out = True
        # The consumer closed the stream (GeneratorExit) or the server cancelled
        # the task because the client went away (CancelledError).
        except (GeneratorExit, asyncio.CancelledError):
            await self._asave_interrupted()
            raise
        # Any chat model may raise anything: see stream().
        except Exception as exc:
            raise self._failed(exc) from exc
        self.message_count = await self._asave(
            self._records(interrupted=self.timed_out)
        )

    def run(self) -> AIMessage:
        """Run the turn to the end and return the saved reply."""
        for _token in self.stream():
            pass
        assert self.message is not None
        return self.message

    async def arun(self) -> AIMessage:
        """Async :meth:`run`."""
        async for _token in self.astream():
            pass
        assert self.message is not None
        return self.message

    def _take(self, chunk: BaseMessage) -> str:
        if not isinstance(chunk, AIMessageChunk):
            # A model without streaming hands over its whole answer at once.
            chunk = AIMessageChunk(
                content=chunk.content,
                additional_kwargs=chunk.additional_kwargs,
                response_metadata=chunk.response_metadata,
                id=chunk.id,
            )
        self._chunks.append(chunk)
        text = chunk.text
        self.reply += text
        return text

    def _history(
        self, records: list[store.Record | store.UnreadableEntry]
    ) -> list[BaseMessage]:
        return records_to_messages(records, session_id=self.session_id)

    def _plan(self, snapshot: store.Snapshot) -> tuple[_Tail, int]:
        """The history for a rewrite of the last turn, which must be [human,
        ai], from a snapshot of the session's last entries; and how many
        entries to read instead (0: the snapshot is enough), as
        :meth:`load_history` reads a tail."""
        tail = snapshot.records[-2:]
        kinds = [
            entry.get("type") if isinstance(entry, dict) else None for entry in tail
        ]
        if kinds != ["human", "ai"]:
            raise TurnRefused(NOTHING_TO_REDO)
        self._snapshot = snapshot
        # A malformed last turn can still be replaced by an edit; regenerate
        # needs its question, continue its question and reply.
        question, reply = (_prompt_message(entry) for entry in tail)
        if self.rewrite == "regenerate":
            if isinstance(question, str):
                raise self._unusable(question)
            self.question = question.text
        # The entries the rewrite replaces stay out of its prompt.
        redone = 0 if self.rewrite == "continue" else 2
        if self.rewrite == "continue":
            if isinstance(question, str) or isinstance(reply, str):
                raise self._unusable(question if isinstance(question, str) else reply)
            # The stopped reply stays in the prompt; the model is asked to go on.
            self._prefix = reply.text
            self.question = CONTINUE_PROMPT
        records = snapshot.records[: len(snapshot.records) - redone]
        history = self._tail(records, complete=snapshot.complete)
        more = self._more(history, len(records), snapshot.length - redone)
        return history, more + redone if more else 0

    def _unusable(self, problem: object) -> TurnRefused:
        logger.warning(
            "chatmemory: the last turn of session %r cannot be redone: %s",
            self.session_id,
            problem,
        )
        return TurnRefused(CANNOT_REDO)

    def _rewrite(self) -> _Tail:
        count = _first_read() + 2
        while True:
            history, count = self._plan(store.read_snapshot(self.session_id, count))
            if not count:
                return history

    async def _arewrite(self) -> _Tail:
        count = _first_read() + 2
        while True:
            snapshot = await store.aread_snapshot(self.session_id, count)
            history, count = self._plan(snapshot)
            if not count:
                return history

    def _replaced(self) -> int:
        """How many of the last stored records the new ones replace."""
        return 2 if self.rewrite == "edit" else 1

    def _save(self, records: list[store.Record]) -> int:
        try:
            return self._write(records)
        except StoreTimeout:
            # The write may have been applied; its write id makes one more
            # try safe (applied at most once).
            return self._write(records)

    async def _asave(self, records: list[store.Record]) -> int:
        try:
            return await self._awrite(records)
        except StoreTimeout:
            return await self._awrite(records)

    def _write(self, records: list[store.Record]) -> int:
        if self._snapshot is None:
            return store.append_records(
                self.session_id,
                records,
                owner=self.owner,
                write_id=self.write_id,
                must_exist=self.must_exist,
            )
        try:
            return store.replace_last_records(
                self.session_id,
                self._snapshot,
                self._replaced(),
                records,
                owner=self.owner,
                write_id=self.write_id,
            )
        except SessionChanged as exc:
            raise TurnRefused(str(CHANGED_MEANWHILE)) from exc

    async def _awrite(self, records: list[store.Record]) -> int:
        if self._snapshot is None:
            return await store.aappend_records(
                self.session_id,
                records,
                owner=self.owner,
                write_id=self.write_id,
                must_exist=self.must_exist,
            )
        try:
            return await store.areplace_last_records(
                self.session_id,
                self._snapshot,
                self._replaced(),
                records,
                owner=self.owner,
                write_id=self.write_id,
            )
        except SessionChanged as exc:
            raise TurnRefused(str(CHANGED_MEANWHILE)) from exc

    def _records(self, *, interrupted: bool) -> list[store.Record]:
        if self._chunks:
            # One merge of all the chunks: adding them one by one built a new
            # message per token (about 0.8 ms for a 45-token reply).
            merged = self._chunks[0] + self._chunks[1:]
            reply = cast(AIMessage, message_chunk_to_message(merged))
        else:
            reply = AIMessage(content="")
        if self._prefix:
            reply.content = (
                self._prefix + reply.content
                if isinstance(reply.content, str)
                else [{"type": "text", "text": self._prefix}, *reply.content]
            )
        if interrupted:
            reply.response_metadata[INTERRUPTED] = True
        self.message = reply
        if self.rewrite in ("regenerate", "continue"):
            records = messages_to_records([reply])  # the question stays as stored
        else:
            records = messages_to_records([HumanMessage(content=self.question), reply])
        if self.turn_id is not None:
            # A new dict: the record may carry its encoded bytes already.
            records[-1] = {**records[-1], store.TURN_FIELD: self.turn_id}
        self.records = records
        return records

    def _failed(self, exc: Exception) -> ModelFailed:
        logger.warning(
            "chatmemory: the chat model failed on session %r; nothing saved",
            self.session_id,
            exc_info=exc,
        )
        return ModelFailed(describe_failure(exc))

    def _save_interrupted(self) -> None:
        try:
            self.message_count = self._save(self._records(interrupted=True))
            if self.turn_id is not None:
                # The page may have said what it showed at Stop: keep just that.
                store.apply_stop(self.session_id, self.turn_id)
        except (StoreUnavailable, SessionNotFound, TurnRefused):
            logger.warning(
                "chatmemory: could not save the stopped reply of session %r",
                self.session_id,
                exc_info=True,
            )

    async def _asave_interrupted(self) -> None:
        try:
            self.message_count = await self._asave(self._records(interrupted=True))
            if self.turn_id is not None:
                await store.aapply_stop(self.session_id, self.turn_id)
        except (StoreUnavailable, SessionNotFound, TurnRefused):
            logger.warning(
                "chatmemory: could not save the stopped reply of session %r",
                self.session_id,
                exc_info=True,
            )


def chat(
    session_id: str,
    question: str,
    *,
    owner: str | None = None,
    model: BaseChatModel | None = None,
) -> AIMessage:
    """Ask ``question`` on the session, save the turn, return the reply."""
    return ChatTurn(session_id, question, owner=owner, model=model).run()


async def achat(
    session_id: str,
    question: str,
    *,
    owner: str | None = None,
    model: BaseChatModel | None = None,
) -> AIMessage:
    """Async :func:`chat`."""
    return await ChatTurn(session_id, question, owner=owner, model=model).arun()


__all__ = [
    "CONTINUE_PROMPT",
    "INTERRUPTED",
    "REWRITES",
    "ChatTurn",
    "ModelFailed",
    "TurnRefused",
    "achat",
    "build_prompt",
    "chat",
    "entry_problem",
    "prompt_problem",
]
