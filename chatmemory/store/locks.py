"""Turn locks: one reply at a time per session.

A lock is a string key holding a random token, set with ``NX`` and an expiry,
in the session's hash slot. It is released only by the token that took it (a
Lua compare-and-delete), so a turn that outlived its lock cannot release the
next turn's. A process killed mid-turn leaves a lock that expires by itself.
"""

from __future__ import annotations

import secrets

from . import keys
from .client import is_cluster
from .operations import Command, Eval, Operation
from .quota import release_command


def new_token() -> str:
    """A token naming one turn's hold on a lock."""
    return secrets.token_hex(16)


def lock_turn_op(session_id: str, token: str, seconds: float) -> Operation[bool]:
    """Take the session's turn lock for ``seconds``; False if another turn holds it."""
    keys.validate_session_id(session_id)
    reply = yield Command(
        (
            "SET",
            keys.turn_lock_key(session_id),
            token,
            "NX",
            "PX",
            max(1, int(seconds * 1000)),
        )
    )
    return reply is not None and reply is not False


def unlock_turn_op(
    session_id: str, token: str, release: tuple[str, str] | None = None
) -> Operation[bool]:
    """Release the lock if ``token`` still holds it; False if it had expired.

    ``release=(owner, turn id)``: also give that turn's stream slot back, in
    the same round trip (in the unlock script on one server; on Redis
    Cluster, where the owner's keys are in another slot, as
    :func:`chatmemory.store.quota.release_command` in the same pipeline).
    """
    keys.validate_session_id(session_id)
    lock = keys.turn_lock_key(session_id)
    if release is None:
        released = yield Eval("unlock", [lock], [token])
    elif is_cluster():
        released = yield Eval(
            "unlock", [lock], [token], then=[release_command(*release)]
        )
    else:
        owner, turn_id = release
        released = yield Eval(
            "unlock", [lock, keys.quota_streams_key(owner)], [token, turn_id]
        )
    return bool(released)
