"""Turn locks: one reply at a time per session.

A lock is a string key holding a random token, set with ``NX`` and an expiry,
in the session's hash slot. It is released only by the token that took it (a
Lua compare-and-delete), so a turn that outlived its lock cannot release the
next turn's. A process killed mid-turn leaves a lock that expires by itself.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

from . import keys
from .operations import Command, Eval, Operation


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
    session_id: str, token: str, then: Sequence[tuple[Any, ...]] = ()
) -> Operation[bool]:
    """Release the lock if ``token`` still holds it; False if it had expired.

    ``then``: commands sent in the same round trip (a turn's stream slot
    given back, see :func:`chatmemory.store.quota.release_command`).
    """
    keys.validate_session_id(session_id)
    released = yield Eval(
        "unlock", [keys.turn_lock_key(session_id)], [token], then=then
    )
    return bool(released)
