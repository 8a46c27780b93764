"""The LangChain chat message history backed by chatmemory's Redis store."""

from __future__ import annotations

import gc
import logging
from collections.abc import KeysView, Sequence
from typing import Any

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    BaseMessageChunk,
    ChatMessage,
    ChatMessageChunk,
    FunctionMessage,
    FunctionMessageChunk,
    HumanMessage,
    HumanMessageChunk,
    RemoveMessage,
    SystemMessage,
    SystemMessageChunk,
    ToolMessage,
    ToolMessageChunk,
    message_chunk_to_message,
    message_to_dict,
)

from . import store

logger = logging.getLogger("chatmemory")

# The record "type" -> message class.
_CLASSES: dict[str, type[BaseMessage]] = {
    "human": HumanMessage,
    "ai": AIMessage,
    "system": SystemMessage,
    "chat": ChatMessage,
    "function": FunctionMessage,
    "tool": ToolMessage,
    "remove": RemoveMessage,
}

# Chunk records (written by other tools; chatmemory stores full messages) are
# read as the chunk, then turned into the full message it stands for.
_CHUNK_CLASSES: dict[str, type[BaseMessageChunk]] = {
    cls.__name__: cls
    for cls in (
        AIMessageChunk,
        HumanMessageChunk,
        SystemMessageChunk,
        ChatMessageChunk,
        FunctionMessageChunk,
        ToolMessageChunk,
    )
}

_REQUIRED: dict[type[BaseMessage], frozenset[str]] = {
    cls: frozenset(
        name for name, field in cls.model_fields.items() if field.is_required()
    )
    for cls in set(_CLASSES.values())
}


def messages_to_records(messages: Sequence[BaseMessage]) -> list[store.Record]:
    """Messages in storable form; chunks become the full message they stand for."""
    records = []
    for message in messages:
        if not isinstance(message, BaseMessage):
            raise TypeError(
                f"Expected a LangChain BaseMessage, got {type(message).__name__}: "
                f"{message!r}"
            )
        if isinstance(message, BaseMessageChunk):
            message = message_chunk_to_message(message)
        records.append(message_to_dict(message))
    return records


def records_to_messages(
    entries: Sequence[store.Record | store.UnreadableEntry], *, session_id: str = ""
) -> list[BaseMessage]:
    """Messages from stored records, skipping (and logging) unreadable entries.

    Records written by :func:`messages_to_records` are complete model dumps, so
    the fast path builds messages without re-validating them (validation is
    most of the cost of reading a long history). A record that lacks a
    required field, or whose content is not text or blocks, goes through full
    validation instead.
    """
    messages: list[BaseMessage] = []
    append = messages.append
    setattr_ = object.__setattr__
    # Per record type: the class and its field names when records of that type
    # can take the fast path below, else None. Worked out once per call.
    fast: dict[str, tuple[type[BaseMessage], KeysView[str], bool] | None] = {}
    gc_was_enabled = gc.isenabled()
    gc.disable()  # every object built here is kept: a GC pass finds nothing
    try:
        for position, entry in enumerate(entries):
            # The common case, inlined: a record holding exactly one value per
            # field of its class, as model_dump writes them. The message is
            # what _to_message's model_construct(**data) builds (same __dict__,
            # fields set, extras and private state), minus its per-field alias
            # and default lookups, which cost more than the rest of reading a
            # record.
            if type(entry) is dict:
                kind, data = entry.get("type"), entry.get("data")
                if type(kind) is str and type(data) is dict:
                    if kind in fast:
                        spec = fast[kind]
                    else:
                        # Not when model_construct does more than set the values
                        # it is given (a post-init hook, aliases).
                        cls = _CLASSES.get(kind)
                        spec = fast[kind] = (
                            None
                            if cls is None
                            or cls.__pydantic_post_init__
                            or any(
                                f.alias is not None or f.validation_alias is not None
                                for f in cls.__pydantic_fields__.values()
                            )
                            else (
                                cls,
                                cls.__pydantic_fields__.keys(),
                                cls.model_config.get("extra") == "allow",
                            )
                        )
                    if spec is not None and data.keys() == spec[1]:
                        content = data.get("content")
                        if type(content) is str or type(content) is list:
                            message = spec[0].__new__(spec[0])
                            setattr_(message, "__dict__", dict(data))
                            setattr_(message, "__pydantic_fields_set__", set(data))
                            setattr_(
                                message, "__pydantic_extra__", {} if spec[2] else None
                            )
                            setattr_(message, "__pydantic_private__", None)
                            append(message)
                            continue
            built = _to_message(entry)
            if isinstance(built, str):
                logger.warning(
                    "chatmemory: skipping unreadable entry %d of session %r: %s",
                    position,
                    session_id,
                    built,
                )
            else:
                append(built)
    finally:
        if gc_was_enabled:
            gc.enable()
    return messages


def _to_message(entry: store.Record | store.UnreadableEntry) -> BaseMessage | str:
    """The message, or a string saying why there is none."""
    if isinstance(entry, store.UnreadableEntry):
        return entry.reason
    kind = entry.get("type")
    # A non-str type (a list, say) must not reach the dict lookup: it may not
    # even be hashable.
    cls = _CLASSES.get(kind) if type(kind) is str else None
    chunk_cls = _CHUNK_CLASSES.get(kind) if type(kind) is str else None
    if cls is None and chunk_cls is None:
        return f"unknown message type {kind!r}"
    data = entry.get("data")
    if type(data) is not dict:
        return "no 'data' object"
    if chunk_cls is not None:
        try:
            return message_chunk_to_message(chunk_cls(**data))
        except Exception as exc:  # as below: a bad entry must not break the read
            return f"invalid {kind} message: {type(exc).__name__}: {exc}"
    assert cls is not None
    content = data.get("content")
    if (type(content) is str or type(content) is list) and data.keys() >= _REQUIRED[
        cls
    ]:
        return cls.model_construct(**data)
    try:
        return cls(**data)
    # Message validators raise more than ValidationError on malformed data
    # (KeyError, ValueError...); a bad entry must never break the whole read.
    except Exception as exc:
        return f"invalid {kind} message: {type(exc).__name__}: {exc}"


class DjangoRedisChatMessageHistory(BaseChatMessageHistory):
    """Chat history of one session, kept in Redis through django-redis.

    A drop-in for ``langchain_community``'s ``RedisChatMessageHistory``, with the
    connection taken from the ``CHATMEMORY_CACHE_ALIAS`` cache instead of a URL::

        history = DjangoRedisChatMessageHistory("foo")
        history.add_user_message("hi!")
        history.add_ai_message("whats up?")
        history.messages  # [HumanMessage('hi!'), AIMessage('whats up?')]

    Args:
        session_id: Any non-empty ``str`` up to ``CHATMEMORY_MAX_SESSION_ID_LENGTH``
            characters; anything else raises ``ValueError``.
        owner: Recorded as the session's owner on its first write (a user's
            primary key, as text); the admin and the chat views use it.

    Every read and every ``add_messages`` call is one Redis round trip; a write
    is atomic. Redis errors surface as
    :class:`chatmemory.exceptions.StoreUnavailable`.
    """

    def __init__(self, session_id: str, *, owner: Any = None) -> None:
        self.session_id = store.validate_session_id(session_id)
        self.owner: str | None = None if owner is None else str(owner)

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        """The session's messages, oldest first (one round trip)."""
        return records_to_messages(
            store.read_records(self.session_id), session_id=self.session_id
        )

    async def aget_messages(self) -> list[BaseMessage]:
        """Async :attr:`messages`, on a native asyncio Redis client."""
        return records_to_messages(
            await store.aread_records(self.session_id), session_id=self.session_id
        )

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Append ``messages`` atomically, in one round trip."""
        store.append_records(
            self.session_id, messages_to_records(messages), owner=self.owner
        )

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Async :meth:`add_messages`."""
        await store.aappend_records(
            self.session_id, messages_to_records(messages), owner=self.owner
        )

    def clear(self) -> None:
        """Delete the session: messages, metadata and index entries."""
        store.delete_session(self.session_id)

    async def aclear(self) -> None:
        """Async :meth:`clear`."""
        await store.adelete_session(self.session_id)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.session_id!r})"
