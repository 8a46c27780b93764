"""The chat model: built from ``CHATMEMORY_CHAT_MODEL``, and the offline demo model.

I have settings and I want the model that answers::

    from chatmemory.llm import get_chat_model

    model = get_chat_model()  # built once per configuration, shared

Without ``CHATMEMORY_CHAT_MODEL``, the model is ``ChatOpenAI`` when
``OPENAI_API_KEY`` is set, else :class:`DemoChatModel`, which needs no network
and no weights and answers from the history it is given.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string
from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

from .conf import conf
from .records import one_line, shorten


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
    return "\u201c" + shorten(one_line(text), 80) + "\u201d"


__all__ = [
    "DemoChatModel",
    "build_chat_model",
    "demo_reply",
    "describe_failure",
    "get_chat_model",
    "is_demo_model",
    "model_name",
]
