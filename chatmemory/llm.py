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
import inspect
import json
import os
import re
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string
from django.utils.translation import gettext as _
from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ToolMessage,
)
from langchain_core.messages.tool import ToolCall
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.utils.function_calling import convert_to_openai_tool

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
    factory = _import_factory(path)
    try:
        model = factory(**kwargs)
    # Any error: a wrong keyword (TypeError), pydantic's ValidationError, or a
    # client that wants its API key (openai.OpenAIError). Start-up must not
    # crash on it: the check and the chat page report it.
    except Exception as exc:
        raise ImproperlyConfigured(
            f"CHATMEMORY_CHAT_MODEL factory {path!r} failed: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(model, BaseChatModel):
        raise ImproperlyConfigured(
            f"CHATMEMORY_CHAT_MODEL factory {path!r} returned "
            f"{type(model).__name__}, not a LangChain chat model (BaseChatModel)"
        )
    return model


def _import_factory(path: str) -> Any:
    try:
        return import_string(path)
    # ImportError, or whatever the module raises while it is imported.
    except Exception as exc:
        raise ImproperlyConfigured(
            f"CHATMEMORY_CHAT_MODEL factory {path!r} cannot be imported: {exc}"
        ) from exc


def unknown_arguments(spec: object) -> list[str]:
    """The keyword arguments of ``spec`` that its factory does not know.

    A pydantic model (every LangChain chat model) knows its fields and their
    aliases; a function knows its parameters, unless it takes ``**kwargs``.
    Chat models such as ``ChatOpenAI`` quietly pass unknown names on to the
    provider, so a misspelled ``temprature`` would only fail at the first turn.
    """
    if not isinstance(spec, dict) or not isinstance(spec.get("factory"), str):
        return []
    factory = _import_factory(spec["factory"])
    names = [name for name in spec if name != "factory"]
    fields = getattr(factory, "model_fields", None)
    if isinstance(factory, type) and isinstance(fields, dict):
        known = set(fields)
        for field in fields.values():
            for alias in (field.alias, field.validation_alias):
                if isinstance(alias, str):
                    known.add(alias)
        return [name for name in names if name not in known]
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature
        return []
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return []
    known = {
        p.name
        for p in parameters
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }
    return [name for name in names if name not in known]


def _openai_model() -> BaseChatModel:
    try:
        from langchain_openai import ChatOpenAI
    except ImportError as exc:
        raise ImproperlyConfigured(
            "OPENAI_API_KEY is set but langchain-openai is not installed "
            "(pip install 'chatmemory[openai]')"
        ) from exc
    # The openai client reads OPENAI_API_KEY and OPENAI_BASE_URL itself.
    try:
        return ChatOpenAI(model=conf.OPENAI_MODEL)
    except Exception as exc:  # as in build_chat_model
        raise ImproperlyConfigured(
            f"ChatOpenAI cannot be built: {type(exc).__name__}: {exc}"
        ) from exc


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
        return _("the offline demo model")
    name = getattr(model, "model_name", None) or getattr(model, "model", None)
    return str(name) if name else type(model).__name__


def describe_failure(exc: BaseException) -> str:
    """Words for the chat page saying why the model gave no reply.

    A provider's own reason (``model 'x' not found``) is shown for refused
    requests, cut short; never for credential errors (401, 403), whose
    message may quote part of a key.
    """
    status = getattr(exc, "status_code", None)
    if status == 429:
        return _(
            "The model service is rate limiting us (HTTP 429). "
            "Wait a moment and send your message again."
        )
    if isinstance(status, int) and status >= 500:
        return _(
            "The model service failed (HTTP %(status)d). "
            "Try again in a moment; your message was not saved."
        ) % {"status": status}
    if status in (401, 403):
        return _(
            "The model service refused our credentials (HTTP %(status)d): "
            "the site's API key needs attention."
        ) % {"status": status}
    if isinstance(status, int):
        reason = provider_reason(exc)
        if reason:
            return _(
                "The model service refused the request (HTTP %(status)d): %(reason)s"
            ) % {"status": status, "reason": reason}
        return _("The model service refused the request (HTTP %(status)d).") % {
            "status": status
        }
    names = " ".join(cls.__name__ for cls in type(exc).__mro__)
    if isinstance(exc, TimeoutError) or "Timeout" in names:
        return _("The model did not answer in time. Try again; nothing was saved.")
    if "Connection" in names:
        return _("The model service could not be reached. Try again later.")
    return _("The model failed (%(error)s); nothing was saved.") % {
        "error": type(exc).__name__
    }


REASON_LENGTH = 200
"""The longest provider reason shown to a user, in characters."""


def provider_reason(exc: BaseException) -> str:
    """The reason a provider gave in its error body, on one line, or ``""``.

    Reads OpenAI-style bodies (``{"error": {"message": ...}}``, which Ollama's
    and most compatible servers send too), ``{"error": "..."}`` and
    ``{"message": ...}``, and the ``error`` text of Ollama's own client.
    """
    body = getattr(exc, "body", None)
    reason: object = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            reason = error.get("message")
        elif isinstance(error, str):
            reason = error
        else:
            reason = body.get("message")
    if not isinstance(reason, str):
        reason = getattr(exc, "error", None)
    if not isinstance(reason, str):
        return ""
    return shorten(one_line(reason), REASON_LENGTH)


# ---------------------------------------------------------------------------
# The offline demo model

_TOKEN = re.compile(r"\s*\S+")


class DemoChatModel(BaseChatModel):
    """An offline stand-in for an LLM: no network, no weights.

    It streams its reply word by word and builds it from the prompt it gets,
    so it shows the history at work: it repeats your question, counts the
    turns before it and recalls what you said first and last time.

    It can call tools (the chat views' agent mode binds them): a question
    that names a bound tool gets one call of it, with the rest of the
    question as the tool's one text argument; the tool's answer gets a reply
    quoting it. So a demo (or a test) sees a tool call round trip offline.
    """

    token_delay: float = 0.03
    """Seconds between streamed tokens, so streaming is visible."""

    @property
    def _llm_type(self) -> str:
        return "chatmemory-demo"

    def bind_tools(
        self, tools: Sequence[Any], *, tool_choice: Any = None, **kwargs: Any
    ) -> Runnable[Any, AIMessage]:
        """The model with ``tools`` bound (in OpenAI's tool format)."""
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        reply = demo_message(messages, kwargs.get("tools") or [])
        return ChatResult(generations=[ChatGeneration(message=reply)])

    def _chunks(
        self, messages: list[BaseMessage], tools: list[dict[str, Any]]
    ) -> list[AIMessageChunk]:
        reply = demo_message(messages, tools)
        if reply.tool_calls:
            call = reply.tool_calls[0]
            return [
                AIMessageChunk(
                    content="",
                    tool_call_chunks=[
                        {
                            "name": call["name"],
                            "args": json.dumps(call["args"]),
                            "id": call["id"],
                            "index": 0,
                            "type": "tool_call_chunk",
                        }
                    ],
                )
            ]
        return [AIMessageChunk(content=token) for token in _TOKEN.findall(reply.text)]

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for position, chunk in enumerate(
            self._chunks(messages, kwargs.get("tools") or [])
        ):
            if position and self.token_delay:
                time.sleep(self.token_delay)
            # LangChain's stream() reports each chunk to the callbacks itself.
            yield ChatGenerationChunk(message=chunk)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        for position, chunk in enumerate(
            self._chunks(messages, kwargs.get("tools") or [])
        ):
            if position and self.token_delay:
                await asyncio.sleep(self.token_delay)
            # LangChain's stream() reports each chunk to the callbacks itself.
            yield ChatGenerationChunk(message=chunk)


def demo_message(
    messages: Sequence[BaseMessage], tools: Sequence[dict[str, Any]] = ()
) -> AIMessage:
    """The demo model's answer: a tool call, a tool's answer quoted, or a reply.

    ``tools`` are bound tools in OpenAI's format. A last human message that
    names one of them (as a word) calls the first it names, when that tool
    takes no argument or one text argument (then the words after its name,
    or the whole question when none follow).
    """
    last = messages[-1] if messages else None
    if isinstance(last, ToolMessage):
        name = last.name or "tool"
        return AIMessage(
            content=f"The tool {name} answered: {_quote(last.text)}. "
            "(I am the offline demo model: I only call the tools you name.)"
        )
    if last is not None and last.type == "human":
        call = _tool_call(last.text, tools, len(messages))
        if call is not None:
            return AIMessage(content="", tool_calls=[call])
    return AIMessage(content=demo_reply(messages))


def _tool_call(
    question: str, tools: Sequence[dict[str, Any]], serial: int
) -> ToolCall | None:
    named = []
    for spec in tools:
        function = spec.get("function", {})
        name = function.get("name", "")
        match = re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", question)
        if name and match:
            named.append((match.start(), match.end(), function))
    for _start, end, function in sorted(named, key=lambda item: item[0]):
        properties = function.get("parameters", {}).get("properties", {})
        if len(properties) > 1:
            continue
        args: dict[str, Any] = {}
        if properties:
            [(param, schema)] = properties.items()
            if schema.get("type") not in (None, "string"):
                continue
            args[param] = question[end:].strip(" :,.?!") or question
        return {
            "name": function["name"],
            "args": args,
            "id": f"call_demo_{serial}",
            "type": "tool_call",
        }
    return None


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
    "demo_message",
    "demo_reply",
    "describe_failure",
    "get_chat_model",
    "is_demo_model",
    "model_name",
    "provider_reason",
    "unknown_arguments",
]
