"""Chat models for the tests: real LangChain BaseChatModel subclasses.

Servers started by the tests load them by dotted path (CHATMEMORY_CHAT_MODEL).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    message_chunk_to_message,
)
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult


class HistoryModel(BaseChatModel):
    """Answers with what it was given: the message count and every human text.

    ``seen`` keeps the prompts it received (a list per call), so tests can check
    what the chain passed. ``fail_after`` tokens, it raises (mid-stream error).
    """

    token_delay: float = 0.0
    fail_after: int | None = None
    pauses: dict[int, float] = {}
    """Seconds to wait before the token at a position (a slow first token,
    a stall mid-stream)."""
    seen: list[list[BaseMessage]] = []

    @property
    def _llm_type(self) -> str:
        return "test-history"

    def answer(self, messages: list[BaseMessage]) -> list[str]:
        self.seen.append(list(messages))
        humans = [m.text for m in messages if m.type == "human"]
        text = f"{len(messages)} messages; you said: " + " | ".join(humans)
        return [word + " " for word in text.split(" ")]

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        message = AIMessage(content="".join(self.answer(messages)))
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for position, token in enumerate(self.answer(messages)):
            if position == self.fail_after:
                raise RuntimeError("the test model broke mid-stream")
            if position and self.token_delay:
                time.sleep(self.token_delay)
            if position in self.pauses:
                time.sleep(self.pauses[position])
            yield ChatGenerationChunk(message=AIMessageChunk(content=token))

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        for position, token in enumerate(self.answer(messages)):
            if position == self.fail_after:
                raise RuntimeError("the test model broke mid-stream")
            if position and self.token_delay:
                await asyncio.sleep(self.token_delay)
            if position in self.pauses:
                await asyncio.sleep(self.pauses[position])
            yield ChatGenerationChunk(message=AIMessageChunk(content=token))


class WholeAnswerModel(BaseChatModel):
    """A model without streaming: LangChain hands over its answer in one piece."""

    reply: str = "all at once"

    @property
    def _llm_type(self) -> str:
        return "test-whole"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        message = AIMessage(content=self.reply)
        return ChatResult(generations=[ChatGeneration(message=message)])


def failing_model(**kwargs: Any) -> HistoryModel:
    """A factory (for CHATMEMORY_CHAT_MODEL) of a model that breaks mid-stream."""
    kwargs.setdefault("fail_after", 2)
    return HistoryModel(**kwargs)


def not_a_model() -> object:
    """A factory that returns something that is not a chat model."""
    return object()


class ScriptedModel(BaseChatModel):
    """Streams ``reply`` as it is, ``chunk_size`` characters at a time, then
    asks for ``tool_calls`` (``{"name": ..., "args": {...}}`` each), if any.

    Markdown arrives cut at any point (inside a fence, a link, a table row),
    as a real model's tokens do.
    """

    reply: str = "scripted reply"
    chunk_size: int = 4
    token_delay: float = 0.0
    pauses: dict[int, float] = {}
    """Seconds to wait before the chunk at a position."""
    tool_calls: list[dict[str, Any]] = []

    @property
    def _llm_type(self) -> str:
        return "test-scripted"

    def _chunks(self) -> list[AIMessageChunk]:
        size = max(1, self.chunk_size)
        chunks = [
            AIMessageChunk(content=self.reply[at : at + size])
            for at in range(0, len(self.reply), size)
        ]
        for index, call in enumerate(self.tool_calls):
            # A provider streams a call's arguments as JSON text, in pieces.
            arguments = json.dumps(call.get("args", {}))
            half = len(arguments) // 2
            call_id = f"call_{index}"
            chunks.append(
                AIMessageChunk(
                    content="",
                    tool_call_chunks=[
                        tool_call_chunk(
                            name=call["name"],
                            args=arguments[:half],
                            id=call_id,
                            index=index,
                        )
                    ],
                )
            )
            chunks.append(
                AIMessageChunk(
                    content="",
                    tool_call_chunks=[
                        tool_call_chunk(args=arguments[half:], index=index)
                    ],
                )
            )
        return chunks

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        chunks = self._chunks()
        merged = chunks[0] + chunks[1:] if chunks else AIMessageChunk(content="")
        message = message_chunk_to_message(merged)
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for position, chunk in enumerate(self._chunks()):
            if position and self.token_delay:
                time.sleep(self.token_delay)
            if position in self.pauses:
                time.sleep(self.pauses[position])
            yield ChatGenerationChunk(message=chunk)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        for position, chunk in enumerate(self._chunks()):
            if position and self.token_delay:
                await asyncio.sleep(self.token_delay)
            if position in self.pauses:
                await asyncio.sleep(self.pauses[position])
            yield ChatGenerationChunk(message=chunk)
