"""TEMPORARY: the store package's API the checkpoint operations need.

Replaced by ``chatmemory.store`` (operations, keys, client) when it lands.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import redis

from . import store
from .conf import conf
from .exceptions import ChatMemoryError
from .store import validate_session_id  # noqa: F401


class OwnerMismatch(ChatMemoryError, ValueError):
    def __init__(self, session_id: str, given: str, recorded: str) -> None:
        self.session_id = session_id
        self.given = given
        self.recorded = recorded
        super().__init__(
            f"Chat session {session_id!r} belongs to owner {recorded!r}, "
            f"not {given!r}: nothing was written"
        )


@dataclass(frozen=True, slots=True)
class Eval:
    name: str
    keys: Sequence[str]
    args: Sequence[Any]


@dataclass(frozen=True, slots=True)
class Command:
    args: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Batch:
    commands: Sequence[tuple[Any, ...]]
    transaction: bool = False


Request = Eval | Command | Batch
type Operation[T] = Generator[Request, Any, T]


@cache
def source(name: str) -> str:
    return resources.files(__package__).joinpath("lua_tmp", f"{name}.lua").read_text()


def run[T](operation: Operation[T]) -> T:
    client = store._client()
    with store._unavailable_as_error(client):
        try:
            request = next(operation)
            while True:
                if type(request) is Eval:
                    script = client.register_script(source(request.name))
                    reply = script(keys=request.keys, args=request.args, client=client)
                elif type(request) is Command:
                    reply = client.execute_command(*request.args)  # type: ignore[no-untyped-call]
                else:
                    assert type(request) is Batch
                    pipe = client.pipeline(transaction=request.transaction)
                    for command in request.commands:
                        pipe.execute_command(*command)  # type: ignore[no-untyped-call]
                    reply = pipe.execute()
                request = operation.send(reply)
        except StopIteration as done:
            result: T = done.value
            return result


async def arun[T](operation: Operation[T]) -> T:
    client = store._aclient()
    with store._unavailable_as_error(client):
        try:
            request = next(operation)
            while True:
                if type(request) is Eval:
                    script = client.register_script(source(request.name))
                    reply = await script(keys=request.keys, args=request.args)
                elif type(request) is Command:
                    reply = await client.execute_command(*request.args)  # type: ignore[no-untyped-call]
                else:
                    assert type(request) is Batch
                    pipe = client.pipeline(transaction=request.transaction)
                    for command in request.commands:
                        pipe.execute_command(*command)
                    reply = await pipe.execute()
                request = operation.send(reply)
        except StopIteration as done:
            result: T = done.value
            return result


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def ttl_ms() -> int:
    ttl = conf.TTL
    return int(ttl * 1000) if ttl else 0


_known_owners: dict[str, str] = {}


def known_owner(session_id: str) -> str:
    return _known_owners.get(session_id, "")


def remember_owner(session_id: str, owner: str) -> None:
    if owner:
        _known_owners[session_id] = owner
    else:
        _known_owners.pop(session_id, None)


def forget_owner(session_id: str) -> None:
    _known_owners.pop(session_id, None)


def is_cluster() -> bool:
    return isinstance(store._client(), redis.RedisCluster)


def thread_keys(thread_id: str) -> tuple[str, str, str, str]:
    tag = f"{conf.KEY_PREFIX}:{{{store._escape(thread_id)}}}"
    return (f"{tag}:meta", f"{tag}:checkpoints", f"{tag}:blobs", f"{tag}:writes")


def messages_key(thread_id: str) -> str:
    return store.messages_key(thread_id)


def index_keys(owner: str) -> list[str]:
    keys = [store.sessions_key(), store.ids_key()]
    if owner:
        keys.append(store.owner_key(owner))
    return keys


def index_batch(session_id: str, owner: str, score: int) -> Batch:
    commands: list[tuple[Any, ...]] = [
        ("ZADD", store.sessions_key(), "GT", score, session_id),
        ("ZADD", store.ids_key(), "NX", 0, session_id),
    ]
    if owner:
        commands.append(("ZADD", store.owner_key(owner), "GT", score, session_id))
    return Batch(commands)


def unindex_batch(session_id: str, owner: str) -> Batch:
    commands: list[tuple[Any, ...]] = [
        ("ZREM", store.sessions_key(), session_id),
        ("ZREM", store.ids_key(), session_id),
    ]
    if owner:
        commands.append(("ZREM", store.owner_key(owner), session_id))
    return Batch(commands)
