"""The chat chain: prompt, chat model, and one turn on a Redis-backed history.

I have a session id and a question, and I want the answer, with both saved::

    from chatmemory.chains import ChatTurn

    turn = ChatTurn("foo", "What did I say first?", owner="42")
    for token in turn.stream():  # or: async for token in turn.astream()
        print(token, end="")
    turn.message_count  # the session's messages after the save

A turn loads the history (one round trip), trims it to
``CHATMEMORY_PROMPT_MAX_TOKENS``, streams ``prompt | model``, and saves the
human and AI messages together in one atomic write when the reply completes.
A model failure saves nothing (:class:`ModelFailed`); a reply whose consumer
stops early is saved as far as it got, with ``response_metadata["interrupted"]``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator, Sequence
from contextlib import aclosing, closing
from typing import Any, cast

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string
from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    message_chunk_to_message,
    trim_messages,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import Runnable

from . import store
from .conf import conf
from .exceptions import ChatMemoryError, StoreUnavailable
from .history import messages_to_records, records_to_messages

logger = logging.getLogger("chatmemory")

INTERRUPTED = "interrupted"
"""The ``response_metadata`` key set (to True) on a reply the user stopped."""


class ModelFailed(ChatMemoryError):
    """The chat model raised, timed out or was refused; nothing was saved.

    ``user_message`` says what happened in words fit for the chat page.
    """

    def __init__(self, user_message: str) -> None:
        self.user_message = user_message
        super().__init__(user_message)


# ---------------------------------------------------------------------------
# The prompt and the model


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


def build_chat_model(spec: object = None) -> BaseChatModel:
    """Build the model ``CHATMEMORY_CHAT_MODEL`` (or ``spec``) describes.

    Without a spec: ``ChatOpenAI`` when ``OPENAI_API_KEY`` is set, else the
    offline :class:`DemoChatModel`. Raises ``ImproperlyConfigured`` when the
    model cannot be built.
    """
    if spec is None:
        if os.environ.get("OPENAI_API_KEY"):
            return _openai_model()
        return DemoChatModel()
    if not isinstance(spec, dict) or not isinstance(spec.get("factory"), str):
        raise ImproperlyConfigured(
            "CHATMEMORY_CHAT_MODEL must be a dict with a 'factory' dotted path, "
            f'e.g. {{"factory": "langchain_openai.ChatOpenAI", "model": ...}}; '
            f"got {spec!r}"
        )
    kwargs = dict(spec)
    path = kwargs.pop("factory")
    try:
        factory = import_string(path)
    except ImportError as exc:
        raise ImproperlyConfigured(
            f"CHATMEMORY_CHAT_MODEL factory {path!r} cannot be imported: {exc}"
        ) from exc
    try:
        model = factory(**kwargs)
    # A TypeError is a wrong keyword; pydantic's ValidationError is a ValueError.
    except (TypeError, ValueError) as exc:
        raise ImproperlyConfigured(
            f"CHATMEMORY_CHAT_MODEL factory {path!r} failed: {exc}"
        ) from exc
    if not isinstance(model, BaseChatModel):
        raise ImproperlyConfigured(
            f"CHATMEMORY_CHAT_MODEL factory {path!r} returned "
            f"{type(model).__name__}, not a LangChain chat model (BaseChatModel)"
        )
    return model


def _openai_model() -> BaseChatModel:
    try:
        from langchain_openai import ChatOpenAI
    except ImportError as exc:
        raise ImproperlyConfigured(
            "OPENAI_API_KEY is set but langchain-openai is not installed "
            "(pip install 'chatmemory[openai]')"
        ) from exc
    # The openai client reads OPENAI_API_KEY and OPENAI_BASE_URL itself.
    return ChatOpenAI(model=conf.OPENAI_MODEL)


_models: dict[tuple[str, ...], BaseChatModel] = {}


def get_chat_model() -> BaseChatModel:
    """The configured chat model, built once per configuration and shared."""
    key = (
        repr(conf.CHAT_MODEL),
        conf.OPENAI_MODEL,
        os.environ.get("OPENAI_API_KEY", ""),
        os.environ.get("OPENAI_BASE_URL", ""),
    )
    model = _models.get(key)
    if model is None:
        if len(_models) >= 16:  # settings overridden in a loop (tests)
            _models.clear()
        model = _models[key] = build_chat_model(conf.CHAT_MODEL)
    return model


def is_demo_model(model: BaseChatModel) -> bool:
    """Whether ``model`` is the offline demo model (the page says so)."""
    return isinstance(model, DemoChatModel)


def model_name(model: BaseChatModel) -> str:
    """A short human name for ``model``, for the chat page."""
    if is_demo_model(model):
        return "the offline demo model"
    name = getattr(model, "model_name", None) or getattr(model, "model", None)
    return str(name) if name else type(model).__name__


def describe_failure(exc: BaseException) -> str:
    """Words for the chat page saying why the model gave no reply."""
    status = getattr(exc, "status_code", None)
    if status == 429:
        return (
            "The model service is rate limiting us (HTTP 429). "
            "Wait a moment and send your message again."
        )
    if isinstance(status, int) and status >= 500:
        return (
            f"The model service failed (HTTP {status}). "
            "Try again in a moment; your message was not saved."
        )
    if isinstance(status, int):
        return f"The model service refused the request (HTTP {status})."
    names = " ".join(cls.__name__ for cls in type(exc).__mro__)
    if isinstance(exc, TimeoutError) or "Timeout" in names:
        return "The model did not answer in time. Try again; nothing was saved."
    if "Connection" in names:
        return "The model service could not be reached. Try again later."
    return f"The model failed ({type(exc).__name__}); nothing was saved."


# ---------------------------------------------------------------------------
# The offline demo model

_TOKEN = re.compile(r"\s*\S+")


class DemoChatModel(BaseChatModel):
    """An offline stand-in for an LLM: no network, no weights.

    It streams its reply word by word and builds it from the prompt it gets,
    so it shows the history at work: it repeats your question, counts the
    turns before it and recalls what you said first and last time.
    """

    token_delay: float = 0.03
    """Seconds between streamed tokens, so streaming is visible."""

    @property
    def _llm_type(self) -> str:
        return "chatmemory-demo"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        reply = AIMessage(content=demo_reply(messages))
        return ChatResult(generations=[ChatGeneration(message=reply)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for position, token in enumerate(_TOKEN.findall(demo_reply(messages))):
            if position and self.token_delay:
                time.sleep(self.token_delay)
            # LangChain's stream() reports each chunk to the callbacks itself.
            yield ChatGenerationChunk(message=AIMessageChunk(content=token))

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        for position, token in enumerate(_TOKEN.findall(demo_reply(messages))):
            if position and self.token_delay:
                await asyncio.sleep(self.token_delay)
            # LangChain's stream() reports each chunk to the callbacks itself.
            yield ChatGenerationChunk(message=AIMessageChunk(content=token))


def demo_reply(messages: Sequence[BaseMessage]) -> str:
    """The demo model's answer to a prompt (system, history..., question)."""
    question = _quote(messages[-1].text) if messages else "\u201c\u201d"
    earlier = [m for m in messages[:-1] if m.type != "system"]
    said = [m.text for m in earlier if m.type == "human" and m.text.strip()]
    if not said:
        return (
            "Hello! I am the offline demo model: no AI is involved, I only use "
            f"what this chat's history gives me. You wrote {question}. This is "
            "the first turn of our conversation. Tell me something else and I "
            "will remember it."
        )
    reply = (
        f"This is turn {len(said) + 1} of our conversation, and I can see "
        f"{len(earlier)} earlier messages in my prompt. You just wrote "
        f"{question}. Your first message was {_quote(said[0])}"
    )
    if len(said) > 1:
        reply += f", and last time you said {_quote(said[-1])}"
    return reply + ". (I am the offline demo model: I only repeat and count.)"


def _quote(text: str) -> str:
    return "\u201c" + store.shorten(" ".join(text.split()), 80) + "\u201d"


# ---------------------------------------------------------------------------
# One turn


class ChatTurn:
    """One question and its reply on one session: load, trim, stream, save.

    Iterate :meth:`stream` (or :meth:`astream`) once; the text tokens come as
    the model produces them. After the loop, :attr:`message` is the saved reply
    and :attr:`message_count` the session's size. Raises :class:`ModelFailed`
    (nothing saved) or ``StoreUnavailable``.
    """

    def __init__(
        self,
        session_id: str,
        question: str,
        *,
        owner: str | None = None,
        model: BaseChatModel | None = None,
    ) -> None:
        self.session_id = store.validate_session_id(session_id)
        self.question = question
        self.owner = owner
        self.model = get_chat_model() if model is None else model
        self.reply = ""
        """The reply's text so far."""
        self.message: AIMessage | None = None
        """The saved reply (None until it is saved)."""
        self.message_count: int | None = None
        """The session's message count after the save."""
        self._chunks: list[AIMessageChunk] = []

    def chain(self) -> Runnable[dict[str, Any], BaseMessage]:
        """``prompt | model``."""
        return build_prompt() | self.model

    def prompt_input(self, history: list[BaseMessage]) -> dict[str, Any]:
        """The chain's input: the history trimmed to the budget, and the question."""
        trimmed = trim_messages(
            history,
            max_tokens=conf.PROMPT_MAX_TOKENS,
            token_counter="approximate",
            strategy="last",
            start_on="human",
            include_system=True,
        )
        return {"history": trimmed, "question": self.question}

    def stream(self) -> Generator[str]:
        """Run the turn, yielding the reply's text as it comes (sync)."""
        history = records_to_messages(
            store.read_records(self.session_id), session_id=self.session_id
        )
        chunks = self.chain().stream(self.prompt_input(history))
        try:
            with closing(cast(Any, chunks)):
                for chunk in chunks:
                    text = self._take(chunk)
                    if text:
                        yield text
        except GeneratorExit:
            self._save_interrupted()
            raise
        # Any chat model may raise anything (HTTP errors, timeouts, bugs in a
        # custom model): the user gets words, the log the traceback.
        except Exception as exc:
            raise self._failed(exc) from exc
        self.message_count = store.append_records(
            self.session_id, self._records(interrupted=False), owner=self.owner
        )

    async def astream(self) -> AsyncGenerator[str]:
        """Run the turn, yielding the reply's text as it comes (async)."""
        history = records_to_messages(
            await store.aread_records(self.session_id), session_id=self.session_id
        )
        chunks = self.chain().astream(self.prompt_input(history))
        try:
            async with aclosing(cast(Any, chunks)):
                async for chunk in chunks:
                    text = self._take(chunk)
                    if text:
                        yield text
        # The consumer closed the stream (GeneratorExit) or the server cancelled
        # the task because the client went away (CancelledError).
        except (GeneratorExit, asyncio.CancelledError):
            await self._asave_interrupted()
            raise
        # Any chat model may raise anything: see stream().
        except Exception as exc:
            raise self._failed(exc) from exc
        self.message_count = await store.aappend_records(
            self.session_id, self._records(interrupted=False), owner=self.owner
        )

    def run(self) -> AIMessage:
        """Run the turn to the end and return the saved reply."""
        for _ in self.stream():
            pass
        assert self.message is not None
        return self.message

    async def arun(self) -> AIMessage:
        """Async :meth:`run`."""
        async for _ in self.astream():
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

    def _records(self, *, interrupted: bool) -> list[store.Record]:
        if self._chunks:
            # One merge of all the chunks: adding them one by one built a new
            # message per token (about 0.8 ms for a 45-token reply).
            merged = self._chunks[0] + self._chunks[1:]
            reply = cast(AIMessage, message_chunk_to_message(merged))
        else:
            reply = AIMessage(content="")
        if interrupted:
            reply.response_metadata[INTERRUPTED] = True
        self.message = reply
        return messages_to_records([HumanMessage(content=self.question), reply])

    def _failed(self, exc: Exception) -> ModelFailed:
        logger.warning(
            "chatmemory: the chat model failed on session %r; nothing saved",
            self.session_id,
            exc_info=exc,
        )
        return ModelFailed(describe_failure(exc))

    def _save_interrupted(self) -> None:
        try:
            self.message_count = store.append_records(
                self.session_id, self._records(interrupted=True), owner=self.owner
            )
        except StoreUnavailable:
            logger.warning(
                "chatmemory: could not save the stopped reply of session %r",
                self.session_id,
                exc_info=True,
            )

    async def _asave_interrupted(self) -> None:
        try:
            self.message_count = await store.aappend_records(
                self.session_id, self._records(interrupted=True), owner=self.owner
            )
        except StoreUnavailable:
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
    "INTERRUPTED",
    "ChatTurn",
    "DemoChatModel",
    "ModelFailed",
    "achat",
    "build_chat_model",
    "build_prompt",
    "chat",
    "demo_reply",
    "describe_failure",
    "get_chat_model",
    "is_demo_model",
    "model_name",
]
