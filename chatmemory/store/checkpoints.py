"""LangGraph checkpoints in Redis: keys, record encoding and operations.

This module knows nothing of LangGraph (the admin and the store must survive
LangChain 2.0): it stores opaque ``(type, bytes)`` pairs that the saver in
:mod:`chatmemory.langgraph` produces with its serializer.

Keys of one thread ``T`` (``P`` the prefix, ``E`` the escaped id; the braces
are a Cluster hash tag, so they share a slot with each other and with a chat
session of the same id)::

    P:{E}:meta          hash  the conversation's metadata, shared with chat
                              sessions: kind=thread, created, updated, title,
                              owner, count (messages in the latest checkpoint)
    P:{E}:checkpoints   zset  one member per checkpoint, all scored 0, sorted by
                              namespace then checkpoint id (lexicographic)
    P:{E}:blobs         hash  one field per channel value: ns, channel, version
    P:{E}:writes        zset  one member per pending write, sorted by namespace,
                              checkpoint id, task id, idx

Key names are built in :mod:`.keys`. A checkpoint member is
``ns \\0 id \\0 manifest \\n\\n type \\0 payload``: the manifest names the
blob of every channel (``channel \\0 version`` items separated by ``\\n``) so
that one script finds the values of the latest checkpoint without a second
round trip. Blobs are stored once per channel version, whichever checkpoint
first had it. Writes are ``ns \\0 id \\0 task \\0 idx \\0 channel \\0 path
\\0 type \\0 value``. Names inside members are escaped (``\\0``, ``\\1`` and
``\\n`` never appear raw), so the encoding is injective.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..conf import conf
from ..exceptions import OwnerMismatch, SessionNotFound
from . import keys
from .client import is_cluster
from .operations import (
    _MISMATCH,
    _RETRY,
    Batch,
    Command,
    Eval,
    Operation,
    _index_batch,
    _index_keys,
    _known_owners,
    _remember_owner,
    now_ms,
    ttl_ms,
)

_SESSION = -3
"""checkpoint_put's reply when the id is a chat history session's."""
_GONE = -4
"""checkpoint_put's reply when a thread that must exist does not."""

Typed = tuple[str, bytes]
"""A serialized value: the serializer's type name and its bytes."""


# ---------------------------------------------------------------------------
# Names inside members


def escape(name: str) -> str:
    """``name`` without raw ``\\0``, ``\\1`` or ``\\n`` (injective)."""
    if "\x00" in name or "\x01" in name or "\n" in name:
        return (
            name.replace("\x01", "\x01\x02")
            .replace("\x00", "\x01\x01")
            .replace("\n", "\x01\x03")
        )
    return name


_UNESCAPE = {"\x01": "\x00", "\x02": "\x01", "\x03": "\n"}
_ESCAPED = re.compile("\x01([\x01-\x03])")


def unescape(name: str) -> str:
    """The name back from :func:`escape`'s form."""
    if "\x01" not in name:
        return name
    return _ESCAPED.sub(lambda m: _UNESCAPE[m.group(1)], name)


def _head(ns: str, checkpoint_id: str) -> bytes:
    return f"{escape(ns)}\0{escape(checkpoint_id)}\0".encode()


def _version(version: str | int | float) -> str:
    return escape(str(version))


# ---------------------------------------------------------------------------
# Results


@dataclass(frozen=True, slots=True)
class StoredWrite:
    """One pending write, as stored."""

    task_id: str
    idx: int
    channel: str
    task_path: str
    value: Typed


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    """One checkpoint, as stored: the saver decodes its parts."""

    namespace: str
    checkpoint_id: str
    payload: Typed
    values: dict[str, Typed]
    """Channel -> value, for the channels whose blob exists."""
    writes: list[StoredWrite]


def _parse_member(member: bytes) -> tuple[str, str, list[str], Typed]:
    ns, cid, rest = member.split(b"\0", 2)
    end = rest.index(b"\n\n")
    channels = [
        unescape(item.split(b"\0", 1)[0].decode())
        for item in rest[:end].split(b"\n")
        if item
    ]
    kind, _, data = rest[end + 2 :].partition(b"\0")
    return (
        unescape(ns.decode()),
        unescape(cid.decode()),
        channels,
        (kind.decode(), data),
    )


def _parse_write(member: bytes) -> StoredWrite:
    _ns, _cid, task, idx, channel, path, kind, data = member.split(b"\0", 7)
    return StoredWrite(
        unescape(task.decode()),
        int(idx),
        unescape(channel.decode()),
        unescape(path.decode()),
        (kind.decode(), data),
    )


def _parse_full(reply: list[Any], position: int) -> tuple[StoredCheckpoint, int]:
    ns, cid, channels, payload = _parse_member(reply[position])
    n = int(reply[position + 1])
    values: dict[str, Typed] = {}
    for channel, raw in zip(
        channels, reply[position + 2 : position + 2 + n], strict=True
    ):
        if raw is not None:
            kind, _, data = raw.partition(b"\0")
            values[channel] = (kind.decode(), data)
    position += 2 + n
    m = int(reply[position])
    writes = [_parse_write(raw) for raw in reply[position + 1 : position + 1 + m]]
    return StoredCheckpoint(ns, cid, payload, values, writes), position + 1 + m


def _parse_many(reply: list[Any]) -> list[StoredCheckpoint]:
    found: list[StoredCheckpoint] = []
    position = 0
    while position < len(reply):
        checkpoint, position = _parse_full(reply, position)
        found.append(checkpoint)
    return found


# ---------------------------------------------------------------------------
# Operations


def put_checkpoint_op(
    thread_id: str,
    namespace: str,
    checkpoint_id: str,
    *,
    channel_versions: dict[str, str | int | float],
    payload: Typed,
    blobs: Sequence[tuple[str, str | int | float, Typed]],
    title: str,
    owner: str | None,
    message_count: int | None,
    must_exist: bool = False,
) -> Operation[str]:
    """Store a checkpoint and its new blobs atomically; return the thread's owner.

    Also marks the conversation as a thread, sets created/updated (and the
    title, owner, and message count when given), restarts the TTL of every
    key of the thread and updates the activity and owner indexes. Raises
    :class:`~chatmemory.exceptions.OwnerMismatch` when ``owner`` is not the
    thread's owner, ``ValueError`` when the id is a chat history session's,
    and :class:`~chatmemory.exceptions.SessionNotFound` (writing nothing)
    when ``must_exist`` and the thread is gone, e.g. deleted while an agent
    was answering.
    """
    keys.validate_session_id(thread_id)
    ns = escape(namespace)
    head = _head(namespace, checkpoint_id)
    manifest = "\n".join(
        f"{escape(channel)}\0{_version(version)}"
        for channel, version in channel_versions.items()
    ).encode()
    kind, data = payload
    member = b"".join((head, manifest, b"\n\n", kind.encode(), b"\0", data))
    blob_args: list[Any] = []
    for channel, version, (blob_kind, blob) in blobs:
        blob_args.append(f"{ns}\0{escape(channel)}\0{_version(version)}".encode())
        blob_args.append(b"".join((blob_kind.encode(), b"\0", blob)))
    return (
        yield from _write_thread(
            thread_id,
            head,
            member,
            blob_args,
            title,
            owner,
            message_count,
            must_exist=must_exist,
        )
    )


def _write_thread(
    thread_id: str,
    head: bytes,
    member: bytes,
    blob_args: list[Any],
    title: str,
    owner: str | None,
    message_count: int | None,
    *,
    must_exist: bool = False,
) -> Operation[str]:
    given = "" if owner is None else str(owner)
    indexed = given or _known_owners.get(thread_id, "")
    args: list[Any] = [
        thread_id,
        0,
        ttl_ms(),
        head,
        member,
        title,
        given,
        indexed,
        "" if message_count is None else message_count,
        "1" if must_exist else "",
        *blob_args,
    ]
    cluster = is_cluster()
    thread_keys = keys.thread_keys(thread_id)
    for _ in range(3):
        now = args[1] = now_ms()
        script_keys = [*thread_keys, keys.messages_key(thread_id)]
        if not cluster:
            script_keys += _index_keys(conf.KEY_PREFIX, indexed)
        status, effective = yield Eval("checkpoint_put", script_keys, args)
        effective = effective.decode() if isinstance(effective, bytes) else effective
        if status == _SESSION:
            raise ValueError(
                f"{thread_id!r} is a chat history session, not a LangGraph thread: "
                "use another thread id"
            )
        if status == _MISMATCH:
            raise OwnerMismatch(thread_id, given, effective)
        if status == _GONE:
            raise SessionNotFound(thread_id)
        _remember_owner(thread_id, effective)
        if status == _RETRY:
            indexed = args[7] = effective
            continue
        if cluster:
            yield _index_batch(thread_id, effective, now, args[2])
        return str(effective)
    raise RuntimeError(f"thread {thread_id!r} kept changing owner")


def put_writes_op(
    thread_id: str,
    namespace: str,
    checkpoint_id: str,
    task_id: str,
    writes: Sequence[tuple[int, str, Typed]],
    task_path: str,
) -> Operation[None]:
    """Store a task's writes ``(idx, channel, value)`` on a checkpoint, atomically.

    A write whose task and idx are stored already is kept, unless its idx is
    negative (LangGraph's special channels: errors, interrupts), which
    replaces it.
    """
    keys.validate_session_id(thread_id)
    if not writes:
        return
    head = _head(namespace, checkpoint_id) + escape(task_id).encode() + b"\0"
    path = escape(task_path).encode()
    args: list[Any] = [ttl_ms()]
    for idx, channel, (kind, data) in writes:
        prefix = head + str(idx).encode() + b"\0"
        args += (
            prefix,
            "1" if idx < 0 else "0",
            b"".join(
                (
                    prefix,
                    escape(channel).encode(),
                    b"\0",
                    path,
                    b"\0",
                    kind.encode(),
                    b"\0",
                    data,
                )
            ),
        )
    meta, checkpoints, blobs, writes_key = keys.thread_keys(thread_id)
    yield Eval("checkpoint_put_writes", [writes_key, meta, checkpoints, blobs], args)


def _data_keys(thread_id: str) -> list[str]:
    _meta, checkpoints, blobs, writes = keys.thread_keys(thread_id)
    return [checkpoints, blobs, writes]


def get_checkpoint_op(
    thread_id: str, namespace: str, checkpoint_id: str | None
) -> Operation[StoredCheckpoint | None]:
    """One checkpoint (the namespace's latest when no id is given), or None."""
    keys.validate_session_id(thread_id)
    if checkpoint_id:
        args: list[Any] = ["exact", _head(namespace, checkpoint_id)]
    else:
        ns = escape(namespace).encode()
        args = ["range", b"(" + ns + b"\1", b"[" + ns + b"\0", 1, "1"]
    reply = yield Eval("checkpoint_read", _data_keys(thread_id), args)
    if not reply:
        return None
    return _parse_full(reply, 0)[0]


def list_checkpoints_op(
    thread_id: str,
    namespace: str | None,
    *,
    before: str | None = None,
    limit: int | None = None,
) -> Operation[list[StoredCheckpoint]]:
    """A thread's checkpoints, newest first, with their blobs and writes.

    ``namespace`` None means every namespace (ordered by checkpoint id);
    ``before`` keeps checkpoints whose id sorts before it.
    """
    keys.validate_session_id(thread_id)
    if limit is not None and limit <= 0:
        return []
    data_keys = _data_keys(thread_id)
    if namespace is not None:
        ns = escape(namespace).encode()
        high = b"(" + (_head(namespace, before) if before else ns + b"\1")
        reply = yield Eval(
            "checkpoint_read",
            data_keys,
            ["range", high, b"[" + ns + b"\0", -1 if limit is None else limit, "1"],
        )
        return _parse_many(reply)
    # Across namespaces the id order is not the member order: sort the
    # members, then read the page.
    members = yield Eval("checkpoint_read", data_keys, ["range", "+", "-", -1, "0"])
    heads = []
    for member in members:
        ns_raw, cid_raw, _rest = member.split(b"\0", 2)
        cid = unescape(cid_raw.decode())
        if before is None or cid < before:
            heads.append((cid, ns_raw + b"\0" + cid_raw + b"\0"))
    heads.sort(key=lambda item: item[0], reverse=True)
    if limit is not None:
        heads = heads[:limit]
    if not heads:
        return []
    reply = yield Eval("checkpoint_read", data_keys, ["exact", *(h for _, h in heads)])
    return _parse_many(reply)


def list_checkpoint_heads_op(
    thread_id: str, namespace: str | None, *, before: str | None = None
) -> Operation[list[tuple[str, str, Typed]]]:
    """``(namespace, id, payload)`` of a thread's checkpoints, newest first.

    Without blobs or writes: for filtering on the metadata before reading
    the few checkpoints that match (:func:`get_checkpoints_op`).
    """
    keys.validate_session_id(thread_id)
    if namespace is not None:
        ns = escape(namespace).encode()
        high = b"(" + (_head(namespace, before) if before else ns + b"\1")
        low = b"[" + ns + b"\0"
    else:
        high, low = b"+", b"-"
    members = yield Eval(
        "checkpoint_read", _data_keys(thread_id), ["range", high, low, -1, "0"]
    )
    heads = []
    for member in members:
        ns_name, cid, _channels, payload = _parse_member(member)
        if namespace is None and before is not None and cid >= before:
            continue
        heads.append((ns_name, cid, payload))
    heads.sort(key=lambda item: item[1], reverse=True)
    return heads


def get_checkpoints_op(
    thread_id: str, wanted: Sequence[tuple[str, str]]
) -> Operation[list[StoredCheckpoint]]:
    """The checkpoints ``(namespace, id)`` that exist, in the order given."""
    keys.validate_session_id(thread_id)
    if not wanted:
        return []
    reply = yield Eval(
        "checkpoint_read",
        _data_keys(thread_id),
        ["exact", *(_head(ns, cid) for ns, cid in wanted)],
    )
    return _parse_many(reply)


def delete_thread_op(thread_id: str) -> Operation[bool]:
    """Delete a thread's keys and index entries; False if there was none.

    When the id is a chat history session's, the session is left alone.
    """
    keys.validate_session_id(thread_id)
    indexed = _known_owners.get(thread_id, "")
    cluster = is_cluster()
    thread_keys = keys.thread_keys(thread_id)
    for _ in range(3):
        script_keys = list(thread_keys)
        if not cluster:
            script_keys += _index_keys(conf.KEY_PREFIX, indexed)
        status, owner = yield Eval(
            "checkpoint_delete", script_keys, [thread_id, indexed]
        )
        owner = owner.decode() if isinstance(owner, bytes) else owner
        if status == _RETRY:
            indexed = owner
            continue
        _known_owners.pop(thread_id, None)
        if cluster and status == 1:
            commands: list[tuple[Any, ...]] = [
                ("ZREM", keys.sessions_key(), thread_id),
                ("ZREM", keys.ids_key(), thread_id),
            ]
            commands.append(("ZREM", keys.owner_index_key(owner), thread_id))
            yield Batch(commands)
        return bool(status == 1)
    raise RuntimeError(f"thread {thread_id!r} kept changing owner")


def prune_thread_op(thread_id: str, keep: int) -> Operation[int]:
    """Keep the latest ``keep`` checkpoints per namespace; return how many went."""
    keys.validate_session_id(thread_id)
    if keep < 1:
        raise ValueError(f"keep must be at least 1, not {keep!r}")
    dropped = yield Eval("checkpoint_prune", _data_keys(thread_id), [keep])
    return int(dropped)


def copy_thread_op(source_id: str, target_id: str) -> Operation[bool]:
    """Copy every checkpoint, blob and write of one thread to another.

    The target's checkpoint data is replaced; its metadata takes the source's
    title and owner. False (and nothing written) when the source has no
    checkpoints. Works across Cluster slots (DUMP and RESTORE), so it is two
    round trips and not atomic.
    """
    keys.validate_session_id(source_id)
    keys.validate_session_id(target_id)
    source, target = _data_keys(source_id), _data_keys(target_id)
    source_meta = keys.thread_keys(source_id)[0]
    replies = yield Batch(
        [("DUMP", key) for key in source]
        + [("HMGET", source_meta, "title", "owner", "count")]
    )
    dumps, (title, owner, count) = replies[:3], replies[3]
    if dumps[0] is None:
        return False
    commands: list[tuple[Any, ...]] = []
    for key, dumped in zip(target, dumps, strict=True):
        commands.append(("DEL", key))
        if dumped is not None:
            commands.append(("RESTORE", key, 0, dumped, "REPLACE"))
    yield Batch(commands, transaction=not is_cluster())
    # The metadata, TTL and indexes, as a put sets them.
    yield from _write_thread(
        target_id,
        b"",
        b"",
        [],
        "" if title is None else title.decode(),
        None if owner is None else owner.decode(),
        None if count is None else int(count),
    )
    return True


def conversation_ids_op() -> Operation[list[str]]:
    """Every conversation id in the activity index (sessions and threads)."""
    raw = yield Command(("ZRANGE", keys.sessions_key(), 0, -1))
    return [item.decode() for item in raw]
