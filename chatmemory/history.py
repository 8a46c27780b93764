"""The LangChain chat message history backed by chatmemory's Redis store."""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Iterable, Sequence
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
from pydantic import BaseModel

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

_NO_DEFAULT = object()
_MUTABLE = (dict, list)


class _Kind:
    """How records of one message class are written and read back."""

    __slots__ = (
        "cls",
        "compact_fields",
        "defaults",
        "extra",
        "fast_read",
        "fields",
        "fresh",
        "mutable",
        "required",
        "template",
    )

    def __init__(self, cls: type[BaseMessage]) -> None:
        self.cls = cls
        fields = cls.__pydantic_fields__
        self.fields = fields.keys()
        self.required = _REQUIRED[cls]
        # Field -> its default value (a fresh one for a default factory).
        self.defaults: dict[str, Any] = {
            name: field.get_default(call_default_factory=True)
            for name, field in fields.items()
            if not field.is_required()
        }
        # Every field in order, required ones as None until a record sets them.
        self.template = {name: self.defaults.get(name) for name in fields}
        self.mutable = tuple(
            (name, type(value))
            for name, value in self.defaults.items()
            if type(value) in _MUTABLE
        )
        # The mutable defaults ({} and []), made afresh by one dict display:
        # a third faster than setting them one by one (every record read
        # needs them).
        display = ", ".join(
            f"{name!r}: {'{}' if factory is dict else '[]'}"
            for name, factory in self.mutable
        )
        self.fresh: Callable[[], dict[str, Any]] = eval(f"lambda: {{{display}}}")
        # Building the message by hand is what model_construct does, unless it
        # does more than set the values it is given (a post-init hook, aliases).
        self.fast_read = (
            cls.__new__ is object.__new__
            and not cls.__pydantic_post_init__
            and not any(
                f.alias is not None or f.validation_alias is not None
                for f in fields.values()
            )
        )
        self.extra = cls.model_config.get("extra") == "allow"
        self.compact_fields = self._unrolled_compact(fields.keys())

    def _unrolled_compact(
        self, names: Iterable[str]
    ) -> Callable[[dict[str, Any]], dict[str, Any]]:
        """:meth:`compact` of a message's ``__dict__``, one test per field
        written out (half the generic loop's cost; every write compacts every
        message), for a ``__dict__`` that holds every field."""
        # The generic rule, spelt per default: a mutable default ({} or []) is
        # held by an empty value of exactly its type, None by None alone, any
        # other default by itself or an equal value of its exact type.
        lines = ["def compact(data):", "    out = {}"]
        namespace: dict[str, Any] = {}
        for position, name in enumerate(names):
            lines.append(f"    value = data[{name!r}]")
            default = self.defaults.get(name, _NO_DEFAULT)
            namespace[f"d{position}"] = default
            namespace[f"t{position}"] = type(default)
            if default is _NO_DEFAULT:
                test = ""
            elif type(default) in _MUTABLE:
                test = f"if type(value) is not {type(default).__name__} or value: "
            elif default is None:
                test = "if value is not None: "
            else:
                test = (
                    f"if value is not d{position} and (type(value) is not "
                    f"t{position} or value != d{position}): "
                )
            lines.append(f"    {test}out[{name!r}] = value")
        lines.append("    return out")
        exec("\n".join(lines), namespace)  # noqa: S102 - our own field names
        compact: Callable[[dict[str, Any]], dict[str, Any]] = namespace["compact"]
        return compact

    def compact(self, data: dict[str, Any]) -> dict[str, Any]:
        """``data`` without the fields that hold their default value."""
        get = self.defaults.get
        # Same type too: 0 == False and 1 == 1.0, but they read back unlike.
        # The identity test first: most omitted values are the default itself
        # (None, False, the type's name).
        return {
            name: value
            for name, value in data.items()
            if (default := get(name, _NO_DEFAULT)) is not value
            and (type(value) is not type(default) or value != default)
        }


_SLOT_SETTERS = tuple(
    BaseModel.__dict__[name].__set__
    for name in (
        "__pydantic_fields_set__",
        "__pydantic_extra__",
        "__pydantic_private__",
    )
)
_KINDS: dict[str, _Kind] = {kind: _Kind(cls) for kind, cls in _CLASSES.items()}
# What records_to_messages needs of each kind it builds by hand, in one tuple:
# class, fields, the required fields beyond "content" (None: no more), the
# number of fields, the defaults, the fresh mutable defaults, whether extras
# are kept.
_FAST_READS = {
    kind: (
        how.cls,
        how.fields,
        None if how.required <= {"content"} else how.required,
        len(how.fields),
        how.template,
        how.fresh,
        how.extra,
    )
    for kind, how in _KINDS.items()
    if how.fast_read
}
# Exactly these classes are written from their fields directly; subclasses and
# anything else go through model_dump (message_to_dict).
_WRITE_KINDS: dict[type[BaseMessage], tuple[str, _Kind]] = {
    cls: (kind, _KINDS[kind]) for kind, cls in _CLASSES.items()
}


def message_to_record(message: BaseMessage) -> store.Record:
    """A message in ``message_to_dict`` form, minus its default-valued fields.

    Readers fill the missing fields with their defaults (LangChain's
    ``messages_from_dict`` does too, so other tools still read the records).
    """
    if isinstance(message, BaseMessageChunk):
        message = message_chunk_to_message(message)
    spec = _WRITE_KINDS.get(type(message))
    if spec is not None:
        return _fields_record(message, *spec)
    return _compacted(message_to_dict(message))


def _fields_record(message: BaseMessage, kind: str, how: _Kind) -> store.Record:
    """The record of a message of one of the ``_WRITE_KINDS`` classes.

    The fields as they are, with their extras: what model_dump returns for
    plain JSON values. Whether the values are plain JSON is for the encoder
    to say (see messages_to_records).
    """
    return {"type": kind, "data": _fields_data(message, how)}


def _fields_data(message: BaseMessage, how: _Kind) -> dict[str, Any]:
    fields = message.__dict__
    # Every field there, as pydantic builds __dict__ (model_construct may
    # leave a required one out): the unrolled tests, which write the fields
    # in field order, as model_dump does.
    if fields.keys() == how.fields:
        data = how.compact_fields(fields)
    else:
        data = how.compact(fields)
    extra = message.__pydantic_extra__
    if extra:
        data.update(extra)
    return data


def _compacted(record: store.Record) -> store.Record:
    how = _KINDS.get(record["type"])
    if how is None:
        return record
    return {"type": record["type"], "data": how.compact(record["data"])}


SENT_AT = "at"
"""The record field beside ``type`` and ``data`` holding when the message was
stored (epoch milliseconds). Messages read back do not carry it."""


def messages_to_records(
    messages: Sequence[BaseMessage], *, at: int | None = None
) -> list[store.Record]:
    """Messages in storable form; chunks become the full message they stand for.

    Each record comes with its stored bytes when the fast form (the message's
    own field values) is plain JSON that reads back equal; otherwise the
    record is ``message_to_dict``'s (whose model_dump turns nested models,
    dataclasses and the like into JSON-able values), and the store encodes it.
    Each record also says when it was written (``at``, epoch ms; now by
    default).
    """
    stamp = time.time_ns() // 1_000_000 if at is None else at
    records: list[store.Record] = []
    append = records.append
    exact = store.encode_exact_record
    new_record = store.EncodedRecord.__new__
    encoded_record = store.EncodedRecord
    write_kinds = _WRITE_KINDS
    for message in messages:
        spec = write_kinds.get(type(message))
        if spec is not None:
            # The common case (a message of exactly one of these classes):
            # message_to_record's record, without its class checks, made as
            # the EncodedRecord it becomes (not copied into one).
            kind, how = spec
            fields = _fields_data(message, how)
            data = exact(kind, fields, stamp)
            if data is not None:
                fast = new_record(encoded_record)
                fast["type"] = kind
                fast["data"] = fields
                fast[SENT_AT] = stamp
                fast.encoded = data
                append(fast)
                continue
            record = _compacted(message_to_dict(message))
        else:
            if not isinstance(message, BaseMessage):
                raise TypeError(
                    "Expected a LangChain BaseMessage, got "
                    f"{type(message).__name__}: {message!r}"
                )
            if isinstance(message, BaseMessageChunk):
                message = message_chunk_to_message(message)
            record = message_to_record(message)
        record[SENT_AT] = stamp
        append(record)
    return records


def records_to_messages(
    entries: Sequence[store.Record | store.UnreadableEntry],
    *,
    session_id: str = "",
    skipped: Callable[[int, str], None] | None = None,
) -> list[BaseMessage]:
    """Messages from stored records, skipping (and logging) unreadable entries.

    ``skipped``, when given, is told of each skipped entry (its position and
    why) instead of the log.

    A record holds some or all of its class's fields (written by
    :func:`messages_to_records`, older chatmemory versions or other tools);
    the fast path builds the message from them and the defaults of the rest,
    without re-validating (validation is most of the cost of reading a long
    history). A record that lacks a required field, has a field its class
    does not know, or whose content is not text or blocks, goes through full
    validation instead.
    """
    messages: list[BaseMessage] = []
    append = messages.append
    setattr_ = object.__setattr__
    # BaseModel's slots, set through their descriptors: half the cost of
    # object.__setattr__, which looks the name up on the class first.
    new = object.__new__
    set_fields, set_extra, set_private = _SLOT_SETTERS
    fast = _FAST_READS
    gc_was_enabled = gc.isenabled()
    gc.disable()  # every object built here is kept: a GC pass finds nothing
    try:
        for position, entry in enumerate(entries):
            # The common case, inlined: the message model_construct(**data)
            # builds (same __dict__, fields set, extras and private state),
            # minus its per-field alias and default lookups, which cost more
            # than the rest of reading a record.
            if type(entry) is dict:
                kind, data = entry.get("type"), entry.get("data")
                if type(kind) is str and type(data) is dict:
                    spec = fast.get(kind)
                    if spec is not None:
                        cls, fields, required, count, template, fresh, extra = spec
                        keys = data.keys()
                        content = data.get("content")
                        # A str or list content also says that "content" is
                        # there, all that most classes require.
                        if (
                            (type(content) is str or type(content) is list)
                            and keys <= fields
                            and (required is None or keys >= required)
                        ):
                            message = new(cls)
                            setattr_(
                                message,
                                "__dict__",
                                dict(data)
                                if len(keys) == count
                                # Every field: data's, else its default, in
                                # field order; the mutable defaults ({}, [])
                                # fresh, never shared by messages.
                                else {**template, **fresh(), **data},
                            )
                            set_fields(message, set(data))
                            set_extra(message, {} if extra else None)
                            set_private(message, None)
                            append(message)
                            continue
            built = _to_message(entry)
            if isinstance(built, str):
                if skipped is not None:
                    skipped(position, built)
                    continue
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


def owner_of(owner: Any) -> str:
    """An ``owner=`` argument as an owner id: a user account's, or the text given."""
    from django.contrib.auth.base_user import AbstractBaseUser

    from .owners import owner_id

    return owner_id(owner) if isinstance(owner, AbstractBaseUser) else str(owner)


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
        owner: Recorded as the session's owner on its first write; the admin,
            the chat views, user deletion and ``chatmemory_purge`` use it. Give
            the user (any instance of the user model: its owner id is taken
            with :func:`chatmemory.owners.owner_id`) or an owner id (``str``).
            Not ``user.pk``: owner ids carry the account's creation time, so a
            bare primary key names no account (see :mod:`chatmemory.owners`).

    Every read and every ``add_messages`` call is one Redis round trip; a write
    is atomic. Redis errors surface as
    :class:`chatmemory.exceptions.StoreUnavailable`.
    """

    def __init__(self, session_id: str, *, owner: Any = None) -> None:
        self.session_id = store.validate_session_id(session_id)
        self.owner: str | None = None if owner is None else owner_of(owner)

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
