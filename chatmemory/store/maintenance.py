"""Maintenance: rebuilding the indexes, importing whole sessions.

Used by the management commands (and the tests and benchmarks that load data);
each operation runs on the sync and the async path like every other.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..conf import conf
from . import keys
from .codec import TITLE_LENGTH, Record, encode_records, shorten, title_from_records
from .operations import Batch, Command, Eval, Operation, ms, now_ms, ttl_ms


def rebuild_indexes_op(batch: int = 1000) -> Operation[int]:
    """Rebuild every index from the sessions' metadata; return the sessions found."""
    activity: dict[str, int] = {}
    owners: dict[str, dict[str, int]] = {}
    pattern = keys.scan_pattern("meta")
    cursor: int | bytes = 0
    while True:
        cursor, found = yield Command(
            ("SCAN", cursor, "MATCH", pattern, "COUNT", batch)
        )
        names = [k.decode() for k in found]
        if names:
            replies = yield Batch([("HMGET", key, "updated", "owner") for key in names])
            for key, (updated, owner) in zip(names, replies, strict=True):
                session_id = keys.session_id_from_key(key, "meta")
                if session_id is None or updated is None:
                    continue
                activity[session_id] = int(updated)
                owner_id = "" if owner is None else owner.decode()
                owners.setdefault(owner_id, {})[session_id] = int(updated)
        if int(cursor) == 0:
            break
    old_owner_keys: list[bytes] = []
    cursor = 0
    while True:
        cursor, found = yield Command(
            ("SCAN", cursor, "MATCH", keys.scan_pattern("owner"), "COUNT", batch)
        )
        old_owner_keys += found
        if int(cursor) == 0:
            break
    commands: list[tuple[Any, ...]] = [
        (
            "DEL",
            keys.sessions_key(),
            keys.ids_key(),
            keys.no_owner_key(),
            *old_owner_keys,
        )
    ]
    items = list(activity.items())
    for start in range(0, len(items), batch):
        part = items[start : start + batch]
        commands.append(
            ("ZADD", keys.sessions_key(), *(x for sid, t in part for x in (t, sid)))
        )
        commands.append(
            ("ZADD", keys.ids_key(), *(x for sid, _ in part for x in (0, sid)))
        )
    for owner, sessions in owners.items():
        commands.append(
            (
                "ZADD",
                keys.owner_index_key(owner),
                *(x for sid, t in sessions.items() for x in (t, sid)),
            )
        )
    yield Batch(commands, transaction=True)
    return len(activity)


@dataclass(frozen=True, slots=True)
class ImportedSession:
    """One whole session for :func:`import_sessions`."""

    session_id: str
    records: Iterable[Record]
    owner: str | None = None
    created: datetime | None = None
    """Defaults to ``updated``."""
    updated: datetime | None = None
    """The last activity; defaults to now."""
    title: str | None = None
    """Defaults to the first human message, as for ``append_records``."""


def _batches(
    sessions: Iterable[ImportedSession], batch_size: int
) -> Iterator[tuple[list[str], list[Any]]]:
    ttl = ttl_ms()
    now = now_ms()
    cap = conf.MAX_MESSAGES or 0
    prefix = conf.KEY_PREFIX
    sessions_key, ids_key = keys.sessions_key(), keys.ids_key()
    script_keys: list[str] = [sessions_key, ids_key]
    args: list[Any] = []
    for session in sessions:
        session_id = keys.validate_session_id(session.session_id)
        updated = now if session.updated is None else ms(session.updated)
        created = updated if session.created is None else ms(session.created)
        left = updated + ttl - now if ttl else 0
        if ttl and left <= 0:
            continue
        records = list(session.records)
        if cap:
            records = records[-cap:]
        title = (
            title_from_records(records)
            if session.title is None
            else shorten(session.title, TITLE_LENGTH)
        )
        owner = "" if session.owner is None else str(session.owner)
        script_keys += (
            keys.messages_key_in(prefix, session_id),
            keys.meta_key_in(prefix, session_id),
            keys.owner_index_key_in(prefix, owner),
        )
        args += (session_id, created, updated, title, owner, left, len(records))
        args += encode_records(records)
        if (len(script_keys) - 2) // 3 >= batch_size:
            yield script_keys, args
            script_keys, args = [sessions_key, ids_key], []
    if args:
        yield script_keys, args


def import_sessions_op(
    sessions: Iterable[ImportedSession], batch_size: int = 1000
) -> Operation[int]:
    """Write whole sessions in batches; return how many were written.

    Meant for loading many sessions into a fresh prefix (imports, benchmarks,
    tests): each session replaces any session of the same id, but the owner
    index of a replaced session's former owner is not cleaned. The keys and
    indexes are the ones ``append_records`` writes (the messages are cut to
    ``CHATMEMORY_MAX_MESSAGES``); with a TTL, a session whose last activity is
    older than the TTL is skipped, and the others expire TTL after their last
    activity. Each batch is one script call (atomic, one round trip); the
    import as a whole is not atomic.
    """
    written = 0
    for script_keys, args in _batches(sessions, batch_size):
        yield Eval("import", script_keys, args)
        written += (len(script_keys) - 2) // 3
    return written
