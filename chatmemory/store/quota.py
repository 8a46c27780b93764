"""Per-owner limits on chat turns: turns per minute, tokens per day, open streams.

One script (``lua/quota.lua``) checks the three limits and records the turn
atomically, so N parallel attempts past a limit admit exactly the limit. The
token count is the owner's usage today (UTC), which every write adds to (see
``append.lua``): a turn is refused once the day's tokens reached the limit, so
the turn that crosses it still completes.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from typing import Any

import redis.exceptions

from ..conf import conf
from . import keys
from .client import is_cluster
from .operations import (
    Batch,
    Command,
    Eval,
    Operation,
    SessionInfo,
    _parse_info,
    day_of,
    now_ms,
)
from .scripts import source

STREAM_LEASE_MS = 600_000
"""A turn holds a stream slot until released, or for at most this long (a
worker that died mid-reply must not block its user forever)."""

STREAM_RETRY_MS = 5_000
"""What a turn refused for too many open streams is told to wait at most."""


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits one turn is checked against (0: no limit)."""

    turns_per_minute: int = 0
    concurrent_streams: int = 0
    tokens_per_day: int = 0

    @classmethod
    def from_settings(cls) -> Limits:
        """The ``CHATMEMORY_TURNS_PER_MINUTE`` & co. settings."""
        return cls(
            conf.TURNS_PER_MINUTE or 0,
            conf.CONCURRENT_STREAMS or 0,
            conf.TOKENS_PER_DAY or 0,
        )

    def __bool__(self) -> bool:
        return bool(
            self.turns_per_minute or self.concurrent_streams or self.tokens_per_day
        )


@dataclass(frozen=True, slots=True)
class Admission:
    """The answer to "may this owner start a turn now?"."""

    turn_id: str
    """Hand it back to :func:`release_turn_op` when the turn ends."""
    refused: str = ""
    """'' when admitted, else the limit that refused: turns, streams or tokens."""
    retry_after: timedelta = timedelta(0)
    """When refused: how long until the limit lets a turn through."""
    holds_stream: bool = False
    """Whether the turn holds a stream slot (to release when it ends)."""
    owner: str = ""
    """The owner whose limits counted the turn."""

    @property
    def admitted(self) -> bool:
        """Whether the turn may run."""
        return not self.refused


def _ms_to_next_utc_midnight(now: int) -> int:
    return 86_400_000 - now % 86_400_000


def _quota_call(
    owner: str, limits: Limits, turn_id: str
) -> tuple[list[str], list[Any]]:
    """The keys and arguments of ``quota.lua`` for one turn, now."""
    prefix = conf.KEY_PREFIX
    now = now_ms()
    return (
        [
            keys.quota_turns_key_in(prefix, owner),
            keys.quota_streams_key_in(prefix, owner),
            keys.usage_key_in(prefix, owner, day_of(now)),
        ],
        [
            now,
            turn_id,
            limits.turns_per_minute,
            limits.concurrent_streams,
            limits.tokens_per_day,
            STREAM_LEASE_MS,
            _ms_to_next_utc_midnight(now),
        ],
    )


def _admission(owner: str, limits: Limits, turn_id: str, reply: list[Any]) -> Admission:
    waited, reason = reply
    if not waited:
        return Admission(
            turn_id, holds_stream=limits.concurrent_streams > 0, owner=owner
        )
    refused = reason.decode() if isinstance(reason, bytes) else str(reason)
    if refused == "streams":
        waited = min(int(waited), STREAM_RETRY_MS)
    return Admission(turn_id, refused, timedelta(milliseconds=int(waited)), owner=owner)


def admit_turn_op(owner: str, limits: Limits) -> Operation[Admission]:
    """Check the limits and, when they allow it, count the turn (one script)."""
    turn_id = os.urandom(16).hex()  # uuid4().hex costs four times as much
    if not limits:
        return Admission(turn_id, owner=owner)
    script_keys, args = _quota_call(owner, limits, turn_id)
    reply = yield Eval("quota", script_keys, args)
    return _admission(owner, limits, turn_id, reply)


@cache
def _sha(name: str) -> str:
    return hashlib.sha1(source(name).encode()).hexdigest()


def get_session_and_admit_op(
    session_id: str, owner: str, limits: Limits
) -> Operation[tuple[SessionInfo | None, Admission]]:
    """The session's metadata, and the owner's turn checked against the limits
    (and counted if they allow it): one round trip, where reading the session
    and then admitting the turn would take two.

    The turn is counted whatever the session turns out to be: a caller that
    does not run it gives its stream slot back (:func:`release_turn_op`).
    """
    keys.validate_session_id(session_id)
    turn_id = os.urandom(16).hex()  # uuid4().hex costs four times as much
    meta_key = keys.meta_key(session_id)
    reads: list[tuple[Any, ...]] = [("HGETALL", meta_key), ("PTTL", meta_key)]
    if not limits:
        meta, pttl = yield Batch(reads)
        admission = Admission(turn_id, owner=owner)
    elif not is_cluster():
        # One script, not three commands in a pipeline: less work on both
        # sides (on Redis Cluster the keys are in two slots).
        script_keys, args = _quota_call(owner, limits, turn_id)
        flat, pttl, reply = yield Eval("session_admit", [meta_key, *script_keys], args)
        meta = dict(zip(flat[::2], flat[1::2], strict=True))
        admission = _admission(owner, limits, turn_id, reply)
    else:
        script_keys, args = _quota_call(owner, limits, turn_id)
        evalsha = ("EVALSHA", _sha("quota"), len(script_keys), *script_keys, *args)
        try:
            meta, pttl, reply = yield Batch([*reads, evalsha])
        except redis.exceptions.NoScriptError:
            # A server that never ran the script (new or restarted): Eval
            # loads it; this once, three round trips.
            reply = yield Eval("quota", script_keys, args)
            meta, pttl = yield Batch(reads)
        admission = _admission(owner, limits, turn_id, reply)
    info = _parse_info(session_id, meta, pttl) if meta else None
    return info, admission


def release_command(owner: str, turn_id: str) -> tuple[Any, ...]:
    """The command giving back a turn's stream slot (to send with another)."""
    return ("ZREM", keys.quota_streams_key(owner), turn_id)


def release_turn_op(owner: str, turn_id: str) -> Operation[None]:
    """Give back the stream slot a turn held (no-op when it held none)."""
    yield Command(release_command(owner, turn_id))


def seconds_until(admission: Admission) -> int:
    """Whole seconds to wait (at least 1), for ``Retry-After``."""
    return max(1, int(-(-admission.retry_after.total_seconds() // 1)))


__all__ = [
    "Admission",
    "Limits",
    "admit_turn_op",
    "get_session_and_admit_op",
    "release_command",
    "release_turn_op",
    "seconds_until",
]
