"""Every store operation, written once and run by a sync and an async runner.

An operation is a generator (sans-IO): it yields the Redis requests it needs
(:class:`Eval` a script, :class:`Command` one command, :class:`Batch` a
pipeline) and receives each reply, then returns its result. :func:`run` drives
it on the sync client, :func:`arun` on the async one, so both paths share
every line of logic and differ only in how a request reaches Redis.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
import redis.exceptions

from ..conf import conf
from ..exceptions import NotReplicated, OwnerMismatch, SessionChanged, SessionNotFound
from . import keys
from .client import (
    REDIS_ERRORS,
    AsyncClient,
    SyncClient,
    alias,
    async_client,
    is_cluster,
    pool_timeout,
    raise_translated,
    sync_client,
)
from .codec import (
    TITLE_LENGTH,
    Record,
    UnreadableEntry,
    decode_records,
    encode_records,
    shorten,
    title_from_records,
    usage_of_records,
)
from .scripts import async_script, compact, sync_script


@dataclass(slots=True)
class Eval:
    """Run the script ``lua/<name>.lua``; the reply is the script's.

    ``then`` commands go in the same pipeline, after the script (on Redis
    Cluster: the index updates, which live in other slots); their replies are
    dropped, their errors raised. A ``write`` waits for
    ``CHATMEMORY_WAIT_REPLICAS`` replicas (Redis WAIT, on the connection that
    ran the script) and raises :class:`NotReplicated` when fewer confirm it.
    """

    name: str
    keys: Sequence[str]
    args: Sequence[Any]
    then: Sequence[tuple[Any, ...]] = ()
    write: bool = False


@dataclass(slots=True)
class Command:
    """Run one command."""

    args: tuple[Any, ...]


@dataclass(slots=True)
class Batch:
    """Run commands in one pipeline (one round trip); the reply is their list."""

    commands: Sequence[tuple[Any, ...]]
    transaction: bool = False


@dataclass(slots=True)
class Scan:
    """Every key matching ``pattern`` (on Redis Cluster: on every primary)."""

    pattern: str
    count: int = 1000


# Not frozen: a frozen dataclass's __init__ costs four times as much (a chat
# turn makes two); nothing changes a request once made.
Request = Eval | Command | Batch | Scan
type Operation[T] = Generator[Request, Any, T]


# A connection error on a pooled connection is most often a stale one (Redis
# restarted or failed over since it was last used): the request is sent again,
# on a fresh connection, after these pauses. Every request is safe to repeat:
# reads and index updates are idempotent and writes carry a write id that the
# script applies at most once.
RETRY_DELAYS = (0.05, 0.25, 1.0)


def retryable(exc: redis.RedisError, client: Any = None) -> bool:
    """Whether sending the request again may help."""
    if isinstance(
        client, redis.cluster.RedisCluster | redis.asyncio.cluster.RedisCluster
    ):
        # A Cluster client retries on its own, refreshing its slot map first.
        return False
    return isinstance(exc, redis.ConnectionError) and not (
        isinstance(
            exc, (redis.exceptions.MaxConnectionsError, redis.AuthenticationError)
        )
        # A blocking pool that waited its timeout for a free connection.
        or str(exc).startswith("No connection available")
    )


def _send(client: SyncClient, request: Request) -> Any:
    if type(request) is Eval:
        if request.then or (request.write and conf.WAIT_REPLICAS):
            return _eval_pipeline(client, request)
        script = sync_script(client, request.name)
        keys_ = request.keys
        # EVALSHA itself, not through Script.__call__ (which copies the
        # arguments twice and imports a class on every call).
        try:
            return client.execute_command(  # type: ignore[no-untyped-call]
                "EVALSHA", script.sha, len(keys_), *keys_, *request.args
            )
        except redis.exceptions.NoScriptError:
            # A server that has not loaded it (new, restarted, failed over).
            script.sha = client.script_load(script.script)
            return client.execute_command(  # type: ignore[no-untyped-call]
                "EVALSHA", script.sha, len(keys_), *keys_, *request.args
            )
    if type(request) is Command:
        return client.execute_command(*request.args)  # type: ignore[no-untyped-call]
    if type(request) is Scan:
        return list(client.scan_iter(match=request.pattern, count=request.count))
    assert type(request) is Batch
    pipe = client.pipeline(transaction=request.transaction)
    for command in request.commands:
        pipe.execute_command(*command, **_routing(client, command))
    return pipe.execute()


async def _asend(client: AsyncClient, request: Request) -> Any:
    if type(request) is Eval:
        if request.then or (request.write and conf.WAIT_REPLICAS):
            return await _aeval_pipeline(client, request)
        ascript = async_script(client, request.name)
        keys_ = request.keys
        try:  # as _send does
            return await client.execute_command(
                "EVALSHA", ascript.sha, len(keys_), *keys_, *request.args
            )
        except redis.exceptions.NoScriptError:
            ascript.sha = await client.script_load(ascript.script)
            return await client.execute_command(
                "EVALSHA", ascript.sha, len(keys_), *keys_, *request.args
            )
    if type(request) is Command:
        return await client.execute_command(*request.args)
    if type(request) is Scan:
        return [
            key
            async for key in client.scan_iter(
                match=request.pattern, count=request.count
            )
        ]
    assert type(request) is Batch
    pipe = client.pipeline(transaction=request.transaction)
    for command in request.commands:
        pipe.execute_command(*command, **_routing(client, command))
    return await pipe.execute()


# A pool that refuses when every connection is busy (redis-py's default pool,
# 100 connections; a Sentinel or Cluster client's) is waited on, as a blocking
# pool would be: the request is sent again after pauses growing to this, up to
# the pool timeout. Nothing was sent, since no connection was had.
POOL_PAUSE = 0.05


def _send_waiting(client: SyncClient, request: Request) -> Any:
    deadline, pause = 0.0, 0.001
    while True:
        try:
            return _send(client, request)
        except redis.exceptions.MaxConnectionsError:
            now = time.monotonic()
            deadline = deadline or now + pool_timeout()
            if now >= deadline:
                raise
            time.sleep(min(pause, deadline - now))
            pause = min(2 * pause, POOL_PAUSE)


async def _asend_waiting(client: AsyncClient, request: Request) -> Any:
    deadline, pause = 0.0, 0.001
    while True:
        try:
            return await _asend(client, request)
        except redis.exceptions.MaxConnectionsError:
            now = time.monotonic()
            deadline = deadline or now + pool_timeout()
            if now >= deadline:
                raise
            await asyncio.sleep(min(pause, deadline - now))
            pause = min(2 * pause, POOL_PAUSE)


def _execute(client: SyncClient, request: Request) -> Any:
    try:
        return _send_waiting(client, request)
    except redis.RedisError as exc:
        if not retryable(exc, client):
            raise
    for pause in RETRY_DELAYS:
        time.sleep(pause)
        try:
            return _send_waiting(client, request)
        except redis.RedisError as exc:
            if pause == RETRY_DELAYS[-1] or not retryable(exc):
                raise
    raise AssertionError("unreachable")  # pragma: no cover


async def _aexecute(client: AsyncClient, request: Request) -> Any:
    try:
        return await _asend_waiting(client, request)
    except redis.RedisError as exc:
        if not retryable(exc, client):
            raise
    for pause in RETRY_DELAYS:
        await asyncio.sleep(pause)
        try:
            return await _asend_waiting(client, request)
        except redis.RedisError as exc:
            if pause == RETRY_DELAYS[-1] or not retryable(exc):
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def run[T](operation: Operation[T]) -> T:
    """Run an operation on the sync client."""
    client = sync_client()
    # Not translate_errors(): a generator context manager costs a microsecond
    # or two, and every store call comes here.
    try:
        request = next(operation)
        while True:
            try:
                reply = _execute(client, request)
            # Thrown into the operation, which may handle it (the doctor's
            # probes do); uncaught, it comes back out of throw().
            except redis.RedisError as exc:
                request = operation.throw(exc)
            else:
                request = operation.send(reply)
    except StopIteration as done:
        result: T = done.value
        return result
    except REDIS_ERRORS as exc:
        raise_translated(exc, client)


async def arun[T](operation: Operation[T]) -> T:
    """Run an operation on the async client of the running event loop."""
    client = async_client()
    try:
        if isinstance(client, redis.asyncio.cluster.RedisCluster):
            # Its slot map, before the first command: redis-py 8.1 picks a
            # command's node before it initializes, so the first commands of
            # concurrent tasks go to a wrong node, and the MOVED replies make
            # it close every connection under the other tasks' feet (a
            # TypeError on Python 3.12). A no-op once initialized.
            await client.initialize()
        request = next(operation)
        while True:
            try:
                reply = await _aexecute(client, request)
            except redis.RedisError as exc:
                request = operation.throw(exc)
            else:
                request = operation.send(reply)
    except StopIteration as done:
        result: T = done.value
        return result
    except REDIS_ERRORS as exc:
        raise_translated(exc, client)


_CLUSTERS = (redis.cluster.RedisCluster, redis.asyncio.cluster.RedisCluster)


def _routing(client: Any, command: tuple[Any, ...]) -> dict[str, Any]:
    """A command's options in a pipeline of ``client``: on Cluster a script
    names its node, as the script of :func:`_pipeline_commands` does (left to
    find it, a cluster pipeline asks a node for the script's keys with
    COMMAND GETKEYS, one more round trip per script: redis-py 8.1)."""
    if command[0] in ("EVAL", "EVALSHA") and isinstance(client, _CLUSTERS):
        return {"target_nodes": client.get_node_from_key(command[3])}
    return {}


def _pipeline_commands(
    request: Eval, sha: str, node: Any, client: Any
) -> tuple[list[tuple[tuple[Any, ...], dict[str, Any]]], int]:
    """The pipeline of a script with its ``then`` commands and WAIT.

    Returns the commands (arguments, options) and the replicas to wait for.
    """
    keys_ = request.keys
    # On Cluster the script's node is named: left to find it, a cluster
    # pipeline asks its default node for the script's keys (COMMAND GETKEYS),
    # and fails for as long as that node is down (redis-py 8.1).
    options = {} if node is None else {"target_nodes": node}
    commands: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
        (("EVALSHA", sha, len(keys_), *keys_, *request.args), options)
    ]
    replicas = conf.WAIT_REPLICAS if request.write else 0
    if replicas:
        # On the connection that ran the script: WAIT counts the replicas that
        # have this connection's writes. On Cluster, that is the script's node.
        timeout_ms = max(1, int(conf.WAIT_TIMEOUT * 1000))
        commands.append((("WAIT", replicas, timeout_ms), options))
    commands += [(command, _routing(client, command)) for command in request.then]
    return commands, replicas


def _check_replies(replies: list[Any], replicas: int) -> Any:
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    if replicas and int(replies[1]) < replicas:
        raise NotReplicated(alias(), int(replies[1]), replicas, conf.WAIT_TIMEOUT)
    return replies[0]


# Replies that a Cluster client must handle itself (a slot moved, a node
# failing over): the direct pipeline leaves the request to it.
_REDIRECTS = (
    redis.exceptions.MovedError,
    redis.exceptions.AskError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.NoScriptError,
)


def _cluster_direct(
    client: redis.cluster.RedisCluster,
    commands: Sequence[tuple[tuple[Any, ...], dict[str, Any]]],
) -> list[Any] | None:
    """The replies of ``commands`` sent to their nodes directly, each node's
    share as one pipeline on one of its connections, all sent before any reply
    is read; None when the cluster client must run them (a redirect, a
    failover, a connection error), which is safe: what reaches here is
    idempotent (index updates, writes with a write id, deletes, unlocks).

    redis-py 8.1's cluster pipeline costs as much Python as the round trip
    (a Cluster write's second round took 1.9x the plain client's); this does
    what it does for a request that meets no redirect.
    """
    groups: dict[str, tuple[Any, list[int]]] = {}
    for position, (args, options) in enumerate(commands):
        node = options.get("target_nodes")
        if node is None:
            node = client.get_node_from_key(args[1])  # type: ignore[no-untyped-call]
        groups.setdefault(node.name, (node, []))[1].append(position)
    replies: list[Any] = [None] * len(commands)
    taken: list[tuple[Any, Any, list[int]]] = []
    read = False
    try:
        for node, positions in groups.values():
            pool = node.redis_connection.connection_pool
            connection = pool.get_connection()
            taken.append((pool, connection, positions))
            connection.send_packed_command(
                connection.pack_commands([commands[i][0] for i in positions])
            )
        for _, connection, positions in taken:
            for position in positions:
                try:
                    replies[position] = connection.read_response()
                except redis.exceptions.ResponseError as exc:
                    replies[position] = exc
        read = True
    except (redis.ConnectionError, redis.TimeoutError):
        return None
    finally:
        for pool, connection, _ in taken:
            if not read:
                connection.disconnect()  # replies may be left unread on it
            pool.release(connection)
    if any(isinstance(reply, _REDIRECTS) for reply in replies):
        return None
    return replies


def _eval_pipeline(client: SyncClient, request: Eval) -> Any:
    script = sync_script(client, request.name)
    node = (
        client.get_node_from_key(request.keys[0])  # type: ignore[no-untyped-call]
        if isinstance(client, redis.cluster.RedisCluster)
        else None
    )
    commands, replicas = _pipeline_commands(request, script.sha, node, client)
    if node is not None and not replicas:
        direct = _cluster_direct(cast(redis.cluster.RedisCluster, client), commands)
        if direct is not None:
            return _check_replies(direct, 0)
    for attempt in range(2):
        pipe = client.pipeline(transaction=False)
        for args, options in commands:
            pipe.execute_command(*args, **options)
        replies = pipe.execute(raise_on_error=False)
        if attempt == 0 and isinstance(replies[0], redis.exceptions.NoScriptError):
            # A server that never ran the script (a new or restarted master):
            # load it and send the pipeline again (its other commands are
            # idempotent; the script did not run).
            client.script_load(script.script)
            continue
        break
    return _check_replies(replies, replicas)


async def _aeval_pipeline(client: AsyncClient, request: Eval) -> Any:
    script = async_script(client, request.name)
    node = None
    if isinstance(client, redis.asyncio.cluster.RedisCluster):
        node = client.get_node_from_key(request.keys[0])  # initialized by arun
    commands, replicas = _pipeline_commands(request, script.sha, node, client)
    for attempt in range(2):
        pipe = client.pipeline(transaction=False)
        for args, options in commands:
            pipe.execute_command(*args, **options)
        replies = await pipe.execute(raise_on_error=False)
        if attempt == 0 and isinstance(replies[0], redis.exceptions.NoScriptError):
            await client.script_load(script.script)
            continue
        break
    return _check_replies(replies, replicas)


# ---------------------------------------------------------------------------
# Results


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """What the metadata hash says about one session."""

    session_id: str
    title: str
    owner: str | None
    message_count: int
    created: datetime
    updated: datetime
    last_activity: datetime
    expires_in: timedelta | None
    """Time left before Redis expires the session; None when it has no TTL."""
    kind: str = "session"
    """"session" (a chat history) or "thread" (a LangGraph thread: its messages
    are in its latest checkpoint, see :mod:`chatmemory.langgraph`)."""
    input_tokens: int = 0
    """The session's summed ``usage_metadata``: prompt tokens."""
    output_tokens: int = 0
    """Reply tokens."""
    total_tokens: int = 0
    """All tokens, as the model reported them."""


@dataclass(frozen=True, slots=True)
class SessionPage:
    """One page of a session listing."""

    sessions: list[SessionInfo]
    total: int
    """Sessions in the whole listing (all pages), as the index counts them."""


def _parse_info(session_id: str, meta: dict[bytes, bytes], pttl: int) -> SessionInfo:
    def millis(field: bytes) -> datetime:
        return datetime.fromtimestamp(int(meta.get(field, b"0")) / 1000, tz=UTC)

    owner = meta.get(b"owner")
    updated = millis(b"updated")
    return SessionInfo(
        session_id=session_id,
        title=meta.get(b"title", b"").decode(),
        owner=None if owner is None else owner.decode(),
        message_count=int(meta.get(b"count", b"0")),
        created=millis(b"created"),
        updated=updated,
        last_activity=updated,
        expires_in=timedelta(milliseconds=pttl) if pttl >= 0 else None,
        kind=meta.get(b"kind", b"session").decode(),
        input_tokens=int(meta.get(b"input_tokens", b"0")),
        output_tokens=int(meta.get(b"output_tokens", b"0")),
        total_tokens=int(meta.get(b"total_tokens", b"0")),
    )


# ---------------------------------------------------------------------------
# Helpers


def now_ms() -> int:
    """The time now, in epoch milliseconds (the unit of every stored time)."""
    return time.time_ns() // 1_000_000


def ms(moment: datetime) -> int:
    """A datetime in epoch milliseconds."""
    return int(moment.timestamp() * 1000)


def day_of(moment_ms: int) -> str:
    """The UTC day (``YYYY-MM-DD``) of an epoch-milliseconds time."""
    return time.strftime("%Y-%m-%d", time.gmtime(moment_ms / 1000))


def usage_ttl_ms() -> int:
    """How long an owner's daily usage is kept, in milliseconds."""
    return conf.USAGE_DAYS * 86_400_000


def ttl_ms() -> int:
    """``CHATMEMORY_TTL`` in milliseconds; 0 when sessions live forever."""
    ttl = conf.TTL
    return int(ttl * 1000) if ttl else 0


# The owner each session was last seen with, so that a script can be handed its
# owner index key up front (every key a script touches is declared). Owners
# never change while a session lives; a stale entry costs one retry.
_known_owners: dict[str, str] = {}
_KNOWN_OWNERS_MAX = 10_000


def _remember_owner(session_id: str, owner: str) -> None:
    # "" (no owner) is remembered too: on Cluster, knowing the owner lets a
    # write send its index updates with the script, in one round trip.
    if len(_known_owners) >= _KNOWN_OWNERS_MAX:
        _known_owners.clear()
    _known_owners[session_id] = owner


_RETRY = -2
_MISMATCH = -1
_THREAD = -3
_CHANGED = -4
_GONE = -5


def _index_keys(prefix: str, owner: str) -> list[str]:
    # The owner's index (the no-owner one for ''), then the no-owner index, which
    # a session leaves when a write gives it its first owner.
    return [
        keys.sessions_key_in(prefix),
        keys.ids_key_in(prefix),
        keys.owner_index_key_in(prefix, owner),
        keys.no_owner_key_in(prefix),
    ]


def _usage_keys(prefix: str, owner: str, now: int) -> list[str]:
    day = day_of(now)
    return [keys.usage_key_in(prefix, owner, day), keys.usage_day_key_in(prefix, day)]


def _index_batch(session_id: str, owner: str, score: int, ttl: int) -> Batch:
    """Cluster's second step: the index updates the script could not make
    (idempotent; GT never moves a score back)."""
    return Batch(_index_commands(session_id, owner, score, ttl))


def _cluster_second_step(
    session_id: str,
    owner: str,
    score: int,
    ttl: int,
    usage: tuple[int, int, int],
    write_id: str,
) -> Operation[None]:
    """Cluster's second step of a write: the index updates and, for a write
    with tokens and an owner, the owner's day, in one round trip; then that
    day's ranking, in a second.

    Every part may run again without counting twice: the index updates are
    idempotent, ``usage.lua`` adds a write id's tokens at most once (so a
    retry of the write, or of this step, with the same write id adds nothing,
    and a retry after a crash between the steps adds what was missing), and
    the ranking is set to the day's total (``ZADD GT``), not incremented.
    """
    index = _index_commands(session_id, owner, score, ttl)
    if not owner or not any(usage):
        yield Batch(index)
        return
    yield from _owner_usage(owner, usage, write_id, score, then=index)


def _owner_usage(
    owner: str,
    usage: tuple[int, int, int],
    write_id: str,
    now: int,
    then: Sequence[tuple[Any, ...]] = (),
) -> Operation[None]:
    """Add a write's tokens to its owner's day (``usage.lua``: at most once
    per write id), ``then`` in the same round trip; then the day's ranking."""
    prefix = conf.KEY_PREFIX
    day = day_of(now)
    keep = usage_ttl_ms()
    total = yield Eval(
        "usage",
        [
            keys.usage_key_in(prefix, owner, day),
            keys.usage_write_ids_key_in(prefix, owner),
        ],
        [write_id, *usage, keep, now],
        then=then,
    )
    if int(total):
        day_key = keys.usage_day_key_in(prefix, day)
        yield Batch(
            [("ZADD", day_key, "GT", int(total), owner), ("PEXPIRE", day_key, keep)]
        )


def add_usage_op(
    owner: str, usage: tuple[int, int, int], write_id: str
) -> Operation[None]:
    """Count tokens spent outside a history write (a LangGraph thread's turn)
    in the owner's day, at most once per write id; nothing without an owner."""
    if owner and any(usage):
        yield from _owner_usage(owner, usage, write_id, now_ms())


def index_add(
    index: str, ttl: int, *zadd: Any, expired_before: int = 0
) -> tuple[Any, ...]:
    """A command for ``ZADD index *zadd`` that also keeps the index as long as
    sessions that live ``ttl`` ms more (0: for ever), as the scripts do on one
    server (``index_add.lua``; sent whole, so that it can go in a Redis
    Cluster pipeline to any node). With ``expired_before`` (an activity time,
    ms), up to 16 entries older than it (expired sessions) leave the index."""
    return ("EVAL", compact("index_add"), 1, index, ttl, expired_before, *zadd)


def _index_commands(
    session_id: str, owner: str, score: int, ttl: int
) -> list[tuple[Any, ...]]:
    """The index updates of Cluster's second step (idempotent; GT never moves a
    score back) for a session that lives ``ttl`` ms more, sent with the
    script when the owner is known."""
    # A few expired entries leave the activity and owner indexes with every
    # write, as on one server; the id index keeps them until a search meets
    # them (its scores say nothing of activity).
    expired = score - ttl if ttl > 0 else 0
    commands: list[tuple[Any, ...]] = [
        index_add(
            keys.sessions_key(), ttl, "GT", score, session_id, expired_before=expired
        ),
        index_add(keys.ids_key(), ttl, "NX", 0, session_id),
        index_add(
            keys.owner_index_key(owner),
            ttl,
            "GT",
            score,
            session_id,
            expired_before=expired,
        ),
    ]
    if owner:
        commands.append(("ZREM", keys.no_owner_key(), session_id))
    return commands


def _unindex_commands(session_id: str, owner: str) -> list[tuple[Any, ...]]:
    """Cluster's second step of a delete."""
    return [
        ("ZREM", keys.sessions_key(), session_id),
        ("ZREM", keys.ids_key(), session_id),
        ("ZREM", keys.owner_index_key(owner), session_id),
    ]


# ---------------------------------------------------------------------------
# Operations


def read_records_op(session_id: str) -> Operation[list[Record | UnreadableEntry]]:
    """Every record of the session, oldest first; restarts the TTL if so set."""
    records, _ = yield from _read_from_op(session_id, 0)
    return records


def read_tail_op(
    session_id: str, count: int
) -> Operation[tuple[list[Record | UnreadableEntry], int]]:
    """The last ``count`` records, oldest first, and the session's length.

    One round trip; Redis's work is proportional to ``count``, not to the
    session's length. Restarts the TTL like :func:`read_records_op`.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, not {count}")
    return (yield from _read_from_op(session_id, -count))


def _read_from_op(
    session_id: str, start: int
) -> Operation[tuple[list[Record | UnreadableEntry], int]]:
    keys.validate_session_id(session_id)
    ttl = ttl_ms()
    prefix = conf.KEY_PREFIX
    messages = keys.messages_key_in(prefix, session_id)
    if not (ttl and conf.REFRESH_TTL_ON_READ):
        if start == 0:
            raw = yield Command(("LRANGE", messages, 0, -1))
            return decode_records(raw), len(raw)
        raw, length = yield Batch([("LRANGE", messages, start, -1), ("LLEN", messages)])
        return decode_records(raw), int(length)
    owner = _known_owners.get(session_id, "")
    cluster = is_cluster()
    for _ in range(3):
        now = now_ms()
        script_keys = [messages, keys.meta_key_in(prefix, session_id)]
        if not cluster:
            script_keys.append(keys.sessions_key_in(prefix))
            script_keys.append(keys.owner_index_key_in(prefix, owner))
            script_keys.append(keys.ids_key_in(prefix))
        items, recorded, *length = yield Eval(
            "read_refresh", script_keys, [session_id, now, ttl, owner, start]
        )
        recorded = recorded.decode() if isinstance(recorded, bytes) else recorded
        _remember_owner(session_id, recorded)
        if items == _RETRY:
            owner = recorded
            continue
        if cluster and recorded is not None:
            # The new activity, and indexes that outlive the new TTL.
            yield Batch(
                [
                    index_add(keys.sessions_key(), ttl, "XX", "GT", now, session_id),
                    index_add(
                        keys.owner_index_key(recorded), ttl, "XX", "GT", now, session_id
                    ),
                    index_add(keys.ids_key(), ttl, "XX", 0, session_id),
                ]
            )
        return decode_records(items), int(length[0])
    raise RuntimeError(f"session {session_id!r} kept changing owner")


def new_write_id() -> str:
    """A fresh write id: a retry of the same write must reuse it."""
    # 128 random bits (a UUID4 has 122, and uuid4().hex costs four times as much).
    return os.urandom(16).hex()


def append_records_op(
    session_id: str,
    records: Sequence[Record],
    owner: str | None,
    write_id: str | None = None,
    must_exist: bool = False,
    *,
    replace: tuple[int, Sequence[bytes]] | None = None,
) -> Operation[int]:
    """Append records atomically; return the session's message count.

    Also trims to ``CHATMEMORY_MAX_MESSAGES`` (to a turn boundary), sets the
    metadata (the title and owner only if not set yet), restarts the TTL and
    updates the indexes. Adds the records' token usage to the session's totals
    and to the owner's daily usage. A ``write_id`` already applied to the
    session is not applied again (the count is returned as it is, no usage is
    added), so a write that timed out can be retried; without one, a fresh id
    guards this call's own retries. Raises :class:`OwnerMismatch` when
    ``owner`` is not the session's owner, :class:`SessionNotFound` when
    ``must_exist`` and the session is gone, and ``ValueError`` when the id is a
    LangGraph thread's.

    ``replace=(length, tail)`` first takes the entries ``tail`` (raw, as read)
    off the end of the list, in the same script, if the list still has
    ``length`` entries ending with them; else nothing is written and
    :class:`SessionChanged` is raised.
    """
    keys.validate_session_id(session_id)
    if not records:
        return 0
    usage = usage_of_records(records)
    prefix = conf.KEY_PREFIX
    session_keys = [
        keys.messages_key_in(prefix, session_id),
        keys.meta_key_in(prefix, session_id),
        keys.write_ids_key_in(prefix, session_id),
    ]
    given = "" if owner is None else str(owner)
    indexed_owner = given or _known_owners.get(session_id, "")
    cluster = is_cluster()
    args: list[Any] = [
        session_id,
        0,
        ttl_ms(),
        conf.MAX_MESSAGES or 0,
        title_from_records(records),
        given,
        indexed_owner,
        *usage,
        usage_ttl_ms(),
        write_id or new_write_id(),
        "1" if must_exist else "0",
    ]
    if replace is None:
        args += [-1, 0]
    else:
        length, tail = replace
        args += [length, len(tail), *tail]
    args += encode_records(records)
    if cluster and (
        not any(usage) or (not given and _known_owners.get(session_id) == "")
    ):
        # Without tokens, or for a session this process knows has no owner
        # (tokens only count in an owner's day), the second step is index
        # updates only: they go with the script, in one round trip.
        return (
            yield from _cluster_append(session_id, session_keys, args, given, usage)
        )
    # With tokens on Cluster, the owner's day follows the script's reply (the
    # effective owner; a refused write counts nothing): _cluster_second_step.
    for _ in range(3):
        now = args[1] = now_ms()
        script_keys = session_keys
        if not cluster:
            script_keys = session_keys + _index_keys(prefix, indexed_owner)
            if indexed_owner and any(usage):
                script_keys += _usage_keys(prefix, indexed_owner, now)
        count, effective, *_ = yield Eval("append", script_keys, args, write=True)
        effective = effective.decode() if isinstance(effective, bytes) else effective
        if count == _THREAD:
            raise ValueError(
                f"{session_id!r} is a LangGraph thread (chatmemory.langgraph), not "
                "a chat history session: nothing was written"
            )
        if count == _MISMATCH:
            raise OwnerMismatch(session_id, given, effective)
        if count == _CHANGED:
            raise SessionChanged(session_id)
        if count == _GONE:
            raise SessionNotFound(session_id)
        _remember_owner(session_id, effective)
        if count == _RETRY:
            indexed_owner = args[6] = effective
            continue
        if cluster:
            # Also for a repeated write id: the owner's day may be what the
            # first attempt did not reach (usage.lua adds each id once).
            yield from _cluster_second_step(
                session_id, effective, now, args[2], usage, args[11]
            )
        return int(count)
    raise RuntimeError(f"session {session_id!r} kept changing owner")


def _cluster_append(
    session_id: str,
    session_keys: list[str],
    args: list[Any],
    given: str,
    usage: tuple[int, int, int] = (0, 0, 0),
) -> Operation[int]:
    """Append on Redis Cluster: the script in the session's slot, then the indexes.

    When this process knows the session's owner (it wrote or read it before)
    and the write does not name another, the index updates go in the script's
    pipeline: one round trip. Otherwise (a session new to this process) they
    follow the script's reply, so that a write refused for naming the wrong
    owner never touches an index.
    """
    now = args[1] = now_ms()
    known = _known_owners.get(session_id)
    fused = known is not None and given in ("", known)
    predicted = known if fused and known is not None else ""
    ttl = args[2]
    then = _index_commands(session_id, predicted, now, ttl) if fused else []
    count, effective, *_ = yield Eval(
        "append", session_keys, args, then=then, write=True
    )
    effective = effective.decode() if isinstance(effective, bytes) else effective
    if count == _THREAD:
        raise ValueError(
            f"{session_id!r} is a LangGraph thread (chatmemory.langgraph), not "
            "a chat history session: nothing was written"
        )
    if count == _GONE:
        # Deleted meanwhile (must_exist): the fused index updates are undone.
        if fused:
            yield Batch(_unindex_commands(session_id, predicted))
        raise SessionNotFound(session_id)
    if count == _CHANGED:
        # A replaced turn changed meanwhile: nothing written (the fused index
        # updates only moved the session's activity time).
        _remember_owner(session_id, effective)
        raise SessionChanged(session_id)
    if count == _MISMATCH:
        if fused and predicted and predicted != effective:
            yield Command(("ZREM", keys.owner_key(predicted), session_id))
        _remember_owner(session_id, effective)
        raise OwnerMismatch(session_id, given, effective)
    _remember_owner(session_id, effective)
    if not fused:
        yield _index_batch(session_id, effective, now, ttl)
    elif effective != predicted:
        # The session changed owner behind this process (deleted and made
        # again): move its entry to the right owner's index.
        # The no-owner index is an owner index too ('' either side).
        yield Batch(
            [
                ("ZREM", keys.owner_index_key(predicted), session_id),
                *_index_commands(session_id, effective, now, ttl),
            ]
        )
        if effective and any(usage):
            # Its tokens count in its owner's day after all (at most once per
            # write id, as _cluster_second_step counts them).
            yield from _owner_usage(effective, usage, args[11], now)
    return int(count)


def create_session_op(
    session_id: str, owner: str | None, title: str
) -> Operation[bool]:
    """Create an empty session; False if it exists already."""
    keys.validate_session_id(session_id)
    owner = "" if owner is None else str(owner)
    prefix = conf.KEY_PREFIX
    now = now_ms()
    meta = keys.meta_key(session_id)
    cluster = is_cluster()
    script_keys = [meta] if cluster else [meta, *_index_keys(prefix, owner)]
    ttl = ttl_ms()
    args = [session_id, now, ttl, shorten(title, TITLE_LENGTH), owner]
    created = yield Eval("create", script_keys, args, write=True)
    if created and cluster:
        yield _index_batch(session_id, owner, now, ttl)
    return bool(created)


def delete_session_op(session_id: str) -> Operation[bool]:
    """Delete the session's messages, metadata and index entries; False if none.

    A LangGraph thread's checkpoints, blobs and writes are deleted too.
    """
    keys.validate_session_id(session_id)
    prefix = conf.KEY_PREFIX
    owner = _known_owners.get(session_id, "")
    # A LangGraph thread of this id goes too: one id, one conversation.
    meta, checkpoints, blobs, writes = keys.thread_keys_in(prefix, session_id)
    session_keys = [
        keys.messages_key_in(prefix, session_id),
        meta,
        checkpoints,
        blobs,
        writes,
        keys.write_ids_key_in(prefix, session_id),
    ]
    if is_cluster():
        # The index removals go with the script when the owner is known (the
        # entries of a session that is gone are dropped by any listing anyway).
        known = _known_owners.get(session_id)
        then = [] if known is None else _unindex_commands(session_id, known)
        existed, recorded = yield Eval(
            "delete", session_keys, [session_id, ""], then=then, write=True
        )
        recorded = recorded.decode() if isinstance(recorded, bytes) else recorded
        _known_owners.pop(session_id, None)
        if known is None or recorded != known:
            yield Batch(_unindex_commands(session_id, recorded))
        return bool(existed)
    for _ in range(3):
        script_keys = session_keys + _index_keys(prefix, owner)
        existed, recorded = yield Eval(
            "delete", script_keys, [session_id, owner], write=True
        )
        recorded = recorded.decode() if isinstance(recorded, bytes) else recorded
        if existed == _RETRY:
            owner = recorded
            continue
        _known_owners.pop(session_id, None)
        return bool(existed)
    raise RuntimeError(f"session {session_id!r} kept changing owner")


def set_title_op(session_id: str, title: str) -> Operation[bool]:
    """Rename a session; False if it does not exist."""
    keys.validate_session_id(session_id)
    title = shorten(" ".join(title.split()), TITLE_LENGTH)
    meta = [keys.meta_key(session_id)]
    return bool((yield Eval("set_title", meta, [title], write=True)))


def get_session_op(session_id: str) -> Operation[SessionInfo | None]:
    """The session's metadata, or None when it does not exist."""
    keys.validate_session_id(session_id)
    meta_key = keys.meta_key(session_id)
    meta, pttl = yield Batch([("HGETALL", meta_key), ("PTTL", meta_key)])
    return _parse_info(session_id, meta, pttl) if meta else None


def get_sessions_op(session_ids: Sequence[str]) -> Operation[list[SessionInfo]]:
    """The metadata of existing sessions among ``session_ids``, in that order.

    One round trip. Ids whose metadata vanished (expired, deleted behind our
    back) are dropped here and removed from the indexes.
    """
    if not session_ids:
        return []
    commands: list[tuple[Any, ...]] = []
    for session_id in session_ids:
        meta_key = keys.meta_key(session_id)
        commands += (("HGETALL", meta_key), ("PTTL", meta_key))
    replies = yield Batch(commands)
    infos: list[SessionInfo] = []
    ghosts: list[str] = []
    for i, session_id in enumerate(session_ids):
        meta, pttl = replies[2 * i], replies[2 * i + 1]
        if meta:
            infos.append(_parse_info(session_id, meta, pttl))
        else:
            ghosts.append(session_id)
    if ghosts:
        # Owner indexes of ghosts are unknown (their meta is gone); they are
        # pruned when that owner's listing meets them.
        yield Batch(
            [
                ("ZREM", keys.sessions_key(), *ghosts),
                ("ZREM", keys.ids_key(), *ghosts),
            ]
        )
    return infos


def list_sessions_op(
    owner: str | None,
    offset: int,
    limit: int,
    active_since: datetime | None,
    ownerless: bool = False,
) -> Operation[SessionPage]:
    """Sessions by last activity, newest first: all of them, one owner's, or
    (``ownerless``) those without an owner."""
    everyone = owner is None and not ownerless
    if ownerless:
        index = keys.no_owner_key()
    else:
        index = keys.sessions_key() if owner is None else keys.owner_key(str(owner))
    low: int | str = "-inf" if active_since is None else ms(active_since)
    ttl = ttl_ms()
    script_keys = [index]
    if everyone and not is_cluster():
        script_keys.append(keys.ids_key())
    reply = yield Eval(
        "page", script_keys, [now_ms() - ttl if ttl else 0, low, offset, limit]
    )
    total, *raw_ids = reply
    ids = [raw.decode() for raw in raw_ids]
    infos = yield from get_sessions_op(ids)
    if ownerless:
        # A session that got an owner while a crash kept it here (Cluster's
        # second step), or that an import replaced: not ownerless any more.
        infos = [info for info in infos if info.owner is None]
    elif owner is not None:
        # An owner's index may hold someone else's session (on Cluster, one
        # made again by another owner behind this process): never listed.
        infos = [info for info in infos if info.owner == str(owner)]
    if not everyone and len(infos) < len(ids):
        alive = {info.session_id for info in infos}
        yield Command(("ZREM", index, *(sid for sid in ids if sid not in alive)))
    return SessionPage(infos, int(total) - (len(ids) - len(infos)))


def search_session_ids_op(
    prefix: str, offset: int, limit: int
) -> Operation[SessionPage]:
    """Sessions whose id starts with ``prefix``, in id order, and how many.

    Ids whose session expired are removed from the index as they are met, and
    the search reads on past them, so no live match hides behind them.
    """
    low = b"[" + prefix.encode()
    # No UTF-8 text contains the byte 0xff, so it sorts after every id with
    # the prefix.
    high = b"[" + prefix.encode() + b"\xff"
    ids_key = keys.ids_key()
    infos: list[SessionInfo] = []
    ghosts_met = False
    while True:
        want = limit - len(infos)
        # A page's worth first; wider steps once ghosts show up.
        batch = max(want, 100) if ghosts_met else want
        total, raw_ids = yield Batch(
            [
                ("ZLEXCOUNT", ids_key, low, high),
                (
                    "ZRANGEBYLEX",
                    ids_key,
                    low,
                    high,
                    "LIMIT",
                    offset + len(infos),
                    batch,
                ),
            ]
        )
        ids = [raw.decode() for raw in raw_ids]
        found = yield from get_sessions_op(ids)
        infos += found[:want]
        # Ghosts met here were just dropped from the index.
        total = int(total) - (len(ids) - len(found))
        if len(infos) >= limit or len(raw_ids) < batch:
            return SessionPage(infos, total)
        ghosts_met = True
        # Every id read was live (and taken) or a ghost now gone from the
        # index: the next matches start right after the live ones found.


def read_session_op(
    session_id: str,
) -> Operation[tuple[SessionInfo | None, list[Record | UnreadableEntry]]]:
    """The session's metadata and every record, in one round trip (no TTL change)."""
    keys.validate_session_id(session_id)
    meta_key = keys.meta_key(session_id)
    meta, pttl, raw = yield Batch(
        [
            ("HGETALL", meta_key),
            ("PTTL", meta_key),
            ("LRANGE", keys.messages_key(session_id), 0, -1),
        ]
    )
    info = _parse_info(session_id, meta, pttl) if meta else None
    return info, decode_records(raw)


def read_session_range_op(
    session_id: str, offset: int, limit: int
) -> Operation[tuple[SessionInfo | None, int, list[Record | UnreadableEntry]]]:
    """The session's metadata, its list's length and ``limit`` records from
    ``offset``: one round trip, work proportional to ``limit`` (no TTL change).
    """
    keys.validate_session_id(session_id)
    prefix = conf.KEY_PREFIX
    meta_key = keys.meta_key_in(prefix, session_id)
    messages = keys.messages_key_in(prefix, session_id)
    meta, pttl, length, raw = yield Batch(
        [
            ("HGETALL", meta_key),
            ("PTTL", meta_key),
            ("LLEN", messages),
            ("LRANGE", messages, offset, offset + limit - 1),
        ]
    )
    info = _parse_info(session_id, meta, pttl) if meta else None
    return info, int(length), decode_records(raw) if limit > 0 else []


def count_owner_sessions_op(owners: Sequence[str]) -> Operation[dict[str, int]]:
    """How many sessions each owner's index holds, in one round trip."""
    if not owners:
        return {}
    counts = yield Batch([("ZCARD", keys.owner_key(str(owner))) for owner in owners])
    return {
        str(owner): int(count)
        for owner, count in zip(owners, counts, strict=True)
        if count
    }


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens one owner spent on one UTC day."""

    owner: str
    day: str
    input_tokens: int
    output_tokens: int
    total_tokens: int


def owner_usage_op(owner: str, days: Sequence[str]) -> Operation[list[Usage]]:
    """One owner's usage on each of ``days`` (``YYYY-MM-DD``), in one round trip."""
    prefix = conf.KEY_PREFIX
    replies = yield Batch(
        [
            ("HMGET", keys.usage_key_in(prefix, owner, day), "input", "output", "total")
            for day in days
        ]
    )
    return [
        Usage(owner, day, *(int(v or 0) for v in reply))
        for day, reply in zip(days, replies, strict=True)
    ]


def day_usage_op(
    day: str, offset: int, limit: int
) -> Operation[tuple[list[Usage], int]]:
    """Owners' usage on one UTC day, most tokens first: a page, and the owner count."""
    day_key = keys.usage_day_key(day)
    total, ranked = yield Batch(
        [("ZCARD", day_key), ("ZREVRANGE", day_key, offset, offset + limit - 1)]
    )
    owners = [raw.decode() for raw in ranked]
    usages = yield from owner_usage_op_many(owners, day)
    return usages, int(total)


def owner_usage_op_many(owners: Sequence[str], day: str) -> Operation[list[Usage]]:
    """Several owners' usage on one day, in one round trip."""
    if not owners:
        return []
    prefix = conf.KEY_PREFIX
    replies = yield Batch(
        [
            ("HMGET", keys.usage_key_in(prefix, owner, day), "input", "output", "total")
            for owner in owners
        ]
    )
    return [
        Usage(owner, day, *(int(v or 0) for v in reply))
        for owner, reply in zip(owners, replies, strict=True)
    ]


def ping_op() -> Operation[None]:
    """Ping the server."""
    yield Command(("PING",))


__all__ = [
    "Batch",
    "Command",
    "Eval",
    "Operation",
    "SessionInfo",
    "SessionPage",
    "arun",
    "run",
]
