"""LangGraph persistence on the django-redis connection: :class:`DjangoRedisSaver`.

I have a LangGraph graph (or a LangChain 1.x agent) and a Django project with
chatmemory; I want its threads in the same Redis, listed in the same admin::

    from langchain.agents import create_agent
    from chatmemory.langgraph import DjangoRedisSaver

    agent = create_agent(model, tools, checkpointer=DjangoRedisSaver())
    agent.invoke(
        {"messages": [("user", "Hi! I'm bob")]},
        {"configurable": {"thread_id": "t1", "owner": "42"}},
    )

Needs the optional dependencies (``pip install chatmemory[langgraph]``); the
rest of chatmemory works without them. Plain Redis commands only (no RedisJSON
or RediSearch), on the connection of ``CHATMEMORY_CACHE_ALIAS``.

A thread is a conversation like a chat session: it shares the session's id
space, metadata hash and indexes (title from its first human message, owner
from ``config["configurable"]["owner"]``, created and updated times), so the
admin lists, searches, shows and deletes both. Its data lives in keys of its
own (see :mod:`chatmemory.store.checkpoints`); one id is either a history
session or a thread, never both.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, cast

from langchain_core.messages import BaseMessage, message_to_dict, messages_from_dict
from langchain_core.runnables import RunnableConfig

try:
    from langgraph.checkpoint.base import (
        WRITES_IDX_MAP,
        BaseCheckpointSaver,
        ChannelVersions,
        Checkpoint,
        CheckpointMetadata,
        CheckpointTuple,
        empty_checkpoint,
        get_checkpoint_id,
        get_checkpoint_metadata,
        writes_sort_key,
    )
    from langgraph.checkpoint.serde.base import SerializerProtocol
except ImportError as exc:  # pragma: no cover - tested in a subprocess
    raise ImportError(
        f"chatmemory.langgraph needs LangGraph ({exc}): "
        "pip install 'chatmemory[langgraph]'"
    ) from exc

from . import store
from .store import checkpoints as cps
from .store.codec import TITLE_LENGTH, Record, shorten
from .store.operations import Operation, arun, run

MUST_EXIST = "chatmemory_must_exist"
"""A ``configurable`` key: when true, a :meth:`DjangoRedisSaver.put` on a
thread that does not exist (deleted meanwhile) raises
:class:`~chatmemory.exceptions.SessionNotFound` and writes nothing, so a chat
deleted while an agent answers stays deleted."""


def title_from_messages(messages: Sequence[Any]) -> str:
    """A thread's title: its first human message's text, cut to 80 characters."""
    for message in messages:
        if isinstance(message, BaseMessage) and message.type == "human":
            text = " ".join(message.text.split())
            if text:
                return shorten(text, TITLE_LENGTH)
    return ""


class DjangoRedisSaver(BaseCheckpointSaver[str]):
    """A LangGraph checkpointer storing threads in chatmemory's Redis.

    Every key of a thread carries the thread id as its Cluster hash tag;
    each :meth:`put` and :meth:`put_writes` is one atomic script (one round
    trip), and :meth:`get_tuple` one script too. Channel values are stored once
    per channel version, not once per checkpoint. With ``CHATMEMORY_TTL`` set,
    a thread expires that long after its last write (each write restarts the
    clock, for every key of the thread).

    The async methods use ``redis.asyncio`` natively, on the same CACHES alias.
    """

    def __init__(self, *, serde: SerializerProtocol | None = None) -> None:
        super().__init__(serde=serde)

    # --- helpers ---------------------------------------------------------------

    def _put_op(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> tuple[RunnableConfig, Operation[str]]:
        configurable = config["configurable"]
        thread_id = configurable["thread_id"]
        namespace = configurable.get("checkpoint_ns", "")
        saved: dict[str, Any] = dict(checkpoint)
        values: dict[str, Any] = saved.pop("channel_values")
        dumps = self.serde.dumps_typed
        blobs = [
            (channel, version, dumps(values[channel]) if channel in values else _EMPTY)
            for channel, version in new_versions.items()
        ]
        payload = dumps(
            (
                saved,
                get_checkpoint_metadata(config, metadata),
                configurable.get("checkpoint_id"),
            )
        )
        title, count = "", None
        # Counted on every put, not only when the messages changed: a copy of
        # an older checkpoint (update_state(..., as_node="__copy__")) changes
        # the count without a new version.
        messages = values.get("messages")
        if not namespace and isinstance(messages, list):
            title, count = title_from_messages(messages), len(messages)
        owner = configurable.get("owner")
        operation = cps.put_checkpoint_op(
            str(thread_id),
            namespace,
            checkpoint["id"],
            channel_versions=checkpoint["channel_versions"],
            payload=payload,
            blobs=blobs,
            title=title,
            owner=None if owner is None else str(owner),
            message_count=count,
            must_exist=bool(configurable.get(MUST_EXIST)),
        )
        stored: RunnableConfig = {
            "configurable": {
                "thread_id": thread_id,
                "checkpoint_ns": namespace,
                "checkpoint_id": checkpoint["id"],
            }
        }
        return stored, operation

    def _writes_op(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str,
    ) -> Operation[None]:
        configurable = config["configurable"]
        dumps = self.serde.dumps_typed
        return cps.put_writes_op(
            str(configurable["thread_id"]),
            configurable.get("checkpoint_ns", ""),
            configurable["checkpoint_id"],
            task_id,
            [
                (WRITES_IDX_MAP.get(channel, idx), channel, dumps(value))
                for idx, (channel, value) in enumerate(writes)
            ],
            task_path,
        )

    def _tuple(self, thread_id: Any, stored: cps.StoredCheckpoint) -> CheckpointTuple:
        loads = self.serde.loads_typed
        saved, metadata, parent = loads(stored.payload)
        checkpoint = cast(
            "Checkpoint",
            {
                **saved,
                "channel_values": {
                    channel: loads(value)
                    for channel, value in stored.values.items()
                    if value[0] != _EMPTY[0]
                },
            },
        )
        writes = sorted(
            stored.writes,
            key=lambda w: writes_sort_key(w.task_path, w.task_id, w.idx),
        )
        ns = stored.namespace
        return CheckpointTuple(
            config={
                "configurable": {
                    "thread_id": thread_id,
                    "checkpoint_ns": ns,
                    "checkpoint_id": stored.checkpoint_id,
                }
            },
            checkpoint=checkpoint,
            metadata=cast("CheckpointMetadata", metadata),
            parent_config=(
                {
                    "configurable": {
                        "thread_id": thread_id,
                        "checkpoint_ns": ns,
                        "checkpoint_id": parent,
                    }
                }
                if parent
                else None
            ),
            pending_writes=[(w.task_id, w.channel, loads(w.value)) for w in writes],
        )

    def _matches(self, payload: cps.Typed, filter: dict[str, Any]) -> bool:
        metadata = self.serde.loads_typed(payload)[1]
        return all(metadata.get(key) == value for key, value in filter.items())

    # --- sync ------------------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint of ``config`` (the latest of its thread without an id)."""
        configurable = config["configurable"]
        thread_id = configurable["thread_id"]
        stored = run(
            cps.get_checkpoint_op(
                str(thread_id),
                configurable.get("checkpoint_ns", ""),
                get_checkpoint_id(config),
            )
        )
        return None if stored is None else self._tuple(thread_id, stored)

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """Checkpoints, newest first: of ``config``'s thread (and namespace).

        ``filter`` keeps checkpoints whose metadata has those values, ``before``
        those older than its checkpoint, ``limit`` the first that many. Without
        a config, every thread in the activity index is listed, one after the
        other.
        """
        if config is None:
            for thread_id in run(cps.conversation_ids_op()):
                yield from self.list(
                    {"configurable": {"thread_id": thread_id}},
                    filter=filter,
                    before=before,
                    limit=limit,
                )
            return
        configurable = config["configurable"]
        thread_id = configurable["thread_id"]
        namespace = configurable.get("checkpoint_ns")
        before_id = get_checkpoint_id(before) if before else None
        if checkpoint_id := get_checkpoint_id(config):
            found = run(
                cps.get_checkpoints_op(
                    str(thread_id), [(namespace or "", checkpoint_id)]
                )
            )
            found = [
                s for s in found if before_id is None or s.checkpoint_id < before_id
            ]
        elif filter:
            heads = run(
                cps.list_checkpoint_heads_op(
                    str(thread_id), namespace, before=before_id
                )
            )
            wanted = [
                (ns, cid)
                for ns, cid, payload in heads
                if self._matches(payload, filter)
            ]
            found = run(cps.get_checkpoints_op(str(thread_id), wanted[:limit]))
        else:
            found = run(
                cps.list_checkpoints_op(
                    str(thread_id), namespace, before=before_id, limit=limit
                )
            )
        if filter:
            found = [s for s in found if self._matches(s.payload, filter)]
        for stored in found[:limit]:
            yield self._tuple(thread_id, stored)

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Store a checkpoint with the values of its new channel versions."""
        stored, operation = self._put_op(config, checkpoint, metadata, new_versions)
        run(operation)
        return stored

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Store a task's pending writes on the checkpoint of ``config``."""
        run(self._writes_op(config, writes, task_id, task_path))

    def delete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint and write of a thread, and its metadata."""
        run(cps.delete_thread_op(str(thread_id)))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint and write of a thread to another thread id."""
        run(cps.copy_thread_op(str(source_thread_id), str(target_thread_id)))

    def prune(
        self,
        thread_ids: Sequence[str],
        *,
        strategy: str = "keep_latest",
        keep: int = 1,
    ) -> None:
        """Drop old checkpoints: ``"keep_latest"`` keeps the latest ``keep`` per
        namespace (with their writes and the values they refer to), ``"delete"``
        deletes the threads.

        Graphs using LangGraph's (beta) ``DeltaChannel`` need the ancestors of
        their latest checkpoint: do not prune those threads.
        """
        _check_strategy(strategy)
        for thread_id in thread_ids:
            if strategy == "delete":
                run(cps.delete_thread_op(str(thread_id)))
            else:
                run(cps.prune_thread_op(str(thread_id), keep))

    # --- async -----------------------------------------------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """Async :meth:`get_tuple`."""
        configurable = config["configurable"]
        thread_id = configurable["thread_id"]
        stored = await arun(
            cps.get_checkpoint_op(
                str(thread_id),
                configurable.get("checkpoint_ns", ""),
                get_checkpoint_id(config),
            )
        )
        return None if stored is None else self._tuple(thread_id, stored)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """Async :meth:`list`."""
        if config is None:
            for thread_id in await arun(cps.conversation_ids_op()):
                async for item in self.alist(
                    {"configurable": {"thread_id": thread_id}},
                    filter=filter,
                    before=before,
                    limit=limit,
                ):
                    yield item
            return
        configurable = config["configurable"]
        thread_id = configurable["thread_id"]
        namespace = configurable.get("checkpoint_ns")
        before_id = get_checkpoint_id(before) if before else None
        if checkpoint_id := get_checkpoint_id(config):
            found = await arun(
                cps.get_checkpoints_op(
                    str(thread_id), [(namespace or "", checkpoint_id)]
                )
            )
            found = [
                s for s in found if before_id is None or s.checkpoint_id < before_id
            ]
        elif filter:
            heads = await arun(
                cps.list_checkpoint_heads_op(
                    str(thread_id), namespace, before=before_id
                )
            )
            wanted = [
                (ns, cid)
                for ns, cid, payload in heads
                if self._matches(payload, filter)
            ]
            found = await arun(cps.get_checkpoints_op(str(thread_id), wanted[:limit]))
        else:
            found = await arun(
                cps.list_checkpoints_op(
                    str(thread_id), namespace, before=before_id, limit=limit
                )
            )
        if filter:
            found = [s for s in found if self._matches(s.payload, filter)]
        for stored in found[:limit]:
            yield self._tuple(thread_id, stored)

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Async :meth:`put`."""
        stored, operation = self._put_op(config, checkpoint, metadata, new_versions)
        await arun(operation)
        return stored

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Async :meth:`put_writes`."""
        await arun(self._writes_op(config, writes, task_id, task_path))

    async def adelete_thread(self, thread_id: str) -> None:
        """Async :meth:`delete_thread`."""
        await arun(cps.delete_thread_op(str(thread_id)))

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Async :meth:`copy_thread`."""
        await arun(cps.copy_thread_op(str(source_thread_id), str(target_thread_id)))

    async def aprune(
        self,
        thread_ids: Sequence[str],
        *,
        strategy: str = "keep_latest",
        keep: int = 1,
    ) -> None:
        """Async :meth:`prune`."""
        _check_strategy(strategy)
        for thread_id in thread_ids:
            if strategy == "delete":
                await arun(cps.delete_thread_op(str(thread_id)))
            else:
                await arun(cps.prune_thread_op(str(thread_id), keep))

    def get_next_version(self, current: str | int | None, channel: None) -> str:
        """The next version of a channel: a counter and a random tiebreak.

        The random part keeps two branches of a thread (time travel) from
        writing different values under one version: values are stored once
        per version.
        """
        if current is None:
            current_v = 0
        elif isinstance(current, int):
            current_v = current
        else:
            current_v = int(current.split(".")[0])
        return f"{current_v + 1:032}.{random.random():016}"


_EMPTY: cps.Typed = ("empty", b"")


def thread_records(thread_id: str) -> list[Record]:
    """The messages of a thread's latest checkpoint, in ``message_to_dict`` form.

    What the admin shows and exports of a thread (tool calls included): the
    ``messages`` channel of its latest root checkpoint; [] when it has none.
    """
    latest = DjangoRedisSaver().get_tuple(
        {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
    )
    if latest is None:
        return []
    messages = latest.checkpoint["channel_values"].get("messages")
    if not isinstance(messages, list):
        return []
    return [message_to_dict(m) for m in messages if isinstance(m, BaseMessage)]


def restore_thread(
    thread_id: str,
    records: Sequence[Record],
    *,
    owner: str | None = None,
    title: str | None = None,
    replace: bool = False,
) -> bool:
    """Write a thread whose latest checkpoint holds ``records`` (an export's).

    The import of a thread line of ``chatmemory_export``: one checkpoint with
    the ``messages`` channel only, which a ``create_agent`` graph (or any
    graph whose state is its messages) goes on from. Other channels and older
    checkpoints were not exported, so they are not restored; created and
    updated times are the import's. False (nothing written) when the thread
    exists and ``replace`` is not set; ``ValueError`` when the id is a chat
    history session's.
    """
    saver = DjangoRedisSaver()
    config: RunnableConfig = {"configurable": {"thread_id": thread_id}}
    if saver.get_tuple(config) is not None:
        if not replace:
            return False
        saver.delete_thread(thread_id)
    messages = messages_from_dict(list(records))
    version = saver.get_next_version(None, None)
    checkpoint = empty_checkpoint()
    checkpoint["channel_values"] = {"messages": messages}
    checkpoint["channel_versions"] = {"messages": version}
    configurable: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": ""}
    if owner is not None:
        configurable["owner"] = owner
    saver.put(
        {"configurable": configurable},
        checkpoint,
        {"source": "update", "step": -1, "parents": {}},
        {"messages": version},
    )
    if title:
        store.set_title(thread_id, title)
    return True


def _check_strategy(strategy: str) -> None:
    if strategy not in ("keep_latest", "delete"):
        raise ValueError(
            f"unknown prune strategy {strategy!r}: use 'keep_latest' or 'delete'"
        )


__all__ = [
    "MUST_EXIST",
    "DjangoRedisSaver",
    "restore_thread",
    "thread_records",
    "title_from_messages",
]
