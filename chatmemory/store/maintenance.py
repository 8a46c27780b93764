"""Maintenance: rebuilding the indexes, importing whole sessions.

Used by the management commands (and the tests and benchmarks that load data);
each operation runs on the sync and the async path like every other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import reduce
from typing import Any

from ..conf import conf
from . import keys
from .client import is_cluster
from .codec import (
    TITLE_LENGTH,
    Record,
    encode_records,
    shorten,
    title_from_records,
    usage_of_records,
)
from .operations import (
    Batch,
    Command,
    Eval,
    Operation,
    Scan,
    delete_session_op,
    index_add,
    ms,
    now_ms,
    ttl_ms,
)

REINDEX_STEP = 200
"""Sessions per script call of the reindex: each call stays around a millisecond."""


INDEXING = "indexing"
"""The reindex's first stage: every session added to its indexes."""

CHECKING = "checking"
"""The reindex's second stage: every index entry checked against its session."""

type ReindexProgress = Callable[[str, int, int], None]
"""Called with the stage (:data:`INDEXING`, :data:`CHECKING`), the units done
in it (sessions; index entries) and the stage's total."""


def rebuild_indexes_op(
    batch: int = 1000, progress: ReindexProgress | None = None
) -> Operation[int]:
    """Bring every index in line with the sessions' metadata, live.

    Safe while writers are active and never blocking Redis for long: first
    every session found by SCAN (on Redis Cluster, on every primary) is added
    to the indexes, a few hundred per script call (a session deleted meanwhile
    is skipped, activity scores only move forward); then the indexes are read
    in ranges and the entries whose session is gone (or, in an owner index,
    belongs to someone else; in the no-owner index, has an owner) are
    removed, each checked in the same script call that removes it. The indexes
    are never emptied, so no session drops out of a listing meanwhile.
    Once an index is checked, it gets the TTL its sessions need: none when
    one of them has none, else the longest they have left (with
    ``CHATMEMORY_TTL``, at least that TTL, for writes made meanwhile; an index
    may be shortened, e.g. one left without a TTL by sessions now gone;
    without it, index TTLs are only lengthened). Returns the sessions indexed.
    ``progress`` (if any) is called after each step (see
    :data:`ReindexProgress`). (On Redis Cluster the checks and the index
    updates cannot share a script; they run as pipelines, and what a write
    racing them leaves behind is repaired by the readers.)
    """
    cluster = is_cluster()
    step = max(1, min(batch, REINDEX_STEP))
    prefix = conf.KEY_PREFIX
    sessions_key, ids_key = keys.sessions_key(), keys.ids_key()
    indexed = 0
    found = yield Scan(keys.scan_pattern("meta"), batch)
    names = [k.decode() for k in found]
    for start in range(0, len(names), step):
        indexed += yield from _index_batch_op(
            names[start : start + step], cluster, prefix, sessions_key, ids_key
        )
        if progress is not None:
            progress(INDEXING, min(start + step, len(names)), len(names))
    no_owner_key = keys.no_owner_key()
    # (index, the index its removals also go from, the owner it must hold)
    prunes: list[tuple[str, str, str | None]] = [
        (sessions_key, ids_key, None),
        (ids_key, sessions_key, None),
        (no_owner_key, no_owner_key, ""),
    ]
    for raw in (yield Scan(keys.scan_pattern("owner"), batch)):
        owner_key = raw.decode()
        owner = keys.owner_from_key(owner_key)
        if owner:
            prunes.append((owner_key, owner_key, owner))
    tick: Callable[[int], None] | None = None
    if progress is not None:
        sizes = yield Batch([("ZCARD", index) for index, _, _ in prunes])
        tick = _counter(progress, CHECKING, sum(int(size) for size in sizes))
    for index, other, owner in prunes:
        yield from _prune_op(index, other, owner, step, cluster, tick)
    return indexed


def _counter(
    progress: ReindexProgress, stage: str, total: int
) -> Callable[[int], None]:
    """A function adding to the stage's count and reporting it."""
    done = 0

    def tick(count: int) -> None:
        nonlocal done
        done += count
        progress(stage, done, total)

    return tick


# An index entry to add: index, ZADD flag ('' none), score, session id, and the
# ms the session lives (0: for ever).
type _IndexEntry = tuple[str, str, Any, str, int]


def _lives(pttl: int) -> int:
    """A key's PTTL as the TTL its indexes must cover (ms; 0: for ever)."""
    return 0 if pttl < 0 else max(pttl, 1)


def _longer(ttl: int, other: int) -> int:
    """The longer of two TTLs left (ms; 0: for ever; -1: no session)."""
    return 0 if ttl == 0 or other == 0 else max(ttl, other)


def _index_adds(entries: Iterable[_IndexEntry]) -> list[tuple[Any, ...]]:
    """Commands adding the entries (Redis Cluster: plain commands, each index
    in its own slot): one per index and flag (and per 500 entries), keeping
    the index as long as the longest-lived of them."""
    groups: dict[tuple[str, str], tuple[list[Any], list[int]]] = {}
    for index, flag, score, session_id, ttl in entries:
        pairs, ttls = groups.setdefault((index, flag), ([], []))
        pairs += (score, session_id)
        ttls.append(ttl)
    commands: list[tuple[Any, ...]] = []
    for (index, flag), (pairs, ttls) in groups.items():
        need = reduce(_longer, ttls)
        flags = (flag,) if flag else ()
        for start in range(0, len(pairs), 1000):
            commands.append(
                index_add(index, need, *flags, *pairs[start : start + 1000])
            )
    return commands


def _index_batch_op(
    names: list[str], cluster: bool, prefix: str, sessions_key: str, ids_key: str
) -> Operation[int]:
    # On Redis Cluster the TTLs too: reindex_add.lua reads them on one server.
    commands: list[tuple[Any, ...]] = [
        ("HMGET", key, "updated", "owner") for key in names
    ]
    if cluster:
        commands += [("PTTL", key) for key in names]
    replies = yield Batch(commands)
    metas, pttls = replies[: len(names)], replies[len(names) :] or [-1] * len(names)
    script_keys: list[str] = [sessions_key, ids_key]
    args: list[Any] = []
    adds: list[_IndexEntry] = []
    for key, (updated, raw_owner), pttl in zip(names, metas, pttls, strict=True):
        session_id = keys.session_id_from_key(key, "meta")
        if session_id is None or updated is None:
            continue
        owner = "" if raw_owner is None else raw_owner.decode()
        owner_key = keys.owner_index_key_in(prefix, owner)
        script_keys += (key, owner_key)
        args += (session_id, owner)
        if cluster:
            ttl = _lives(int(pttl))
            adds += (
                (sessions_key, "GT", int(updated), session_id, ttl),
                (ids_key, "NX", 0, session_id, ttl),
                (owner_key, "GT", int(updated), session_id, ttl),
            )
    if not args:
        return 0
    if cluster:
        yield Batch(_index_adds(adds))
        return len(args) // 2
    return int((yield Eval("reindex_add", script_keys, args)))


def _prune_op(
    index: str,
    other: str,
    owner: str | None,
    step: int,
    cluster: bool,
    tick: Callable[[int], None] | None = None,
) -> Operation[None]:
    # owner None: an entry stays while its session exists; else while the
    # session's owner is ``owner`` ('' : no owner, the no-owner index). Then
    # the index gets the TTL its sessions need (index_expire.lua).
    start = 0
    longest = -1
    while True:
        raw_ids = yield Command(("ZRANGE", index, start, start + step - 1))
        if not raw_ids:
            break
        ids = [raw.decode() for raw in raw_ids]
        metas = [keys.meta_key(session_id) for session_id in ids]
        if cluster:
            found = yield Batch(
                [("HMGET", meta, "updated", "owner") for meta in metas]
                + [("PTTL", meta) for meta in metas]
            )
            gone: list[str] = []
            for session_id, (updated, raw_owner), pttl in zip(
                ids, found[: len(ids)], found[len(ids) :], strict=True
            ):
                if updated is None or (
                    owner is not None
                    and ("" if raw_owner is None else raw_owner.decode()) != owner
                ):
                    gone.append(session_id)
                else:
                    longest = _longer(longest, _lives(int(pttl)))
            if gone:
                yield Batch([("ZREM", index, *gone), ("ZREM", other, *gone)])
            removed = len(gone)
        else:
            mode = "" if owner is None else "=" + owner
            removed, kept = yield Eval(
                "reindex_prune", [index, other, *metas], [mode, *ids]
            )
            longest = _longer(longest, int(kept))
        if tick is not None:
            tick(len(ids))
        # The entries removed were before the next range: it starts earlier.
        start += len(ids) - int(removed)
        if len(ids) < step:
            break
    yield Eval("index_expire", [index], [longest, ttl_ms()])


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
    usage: tuple[int, int, int] | None = None
    """Input, output and total tokens; defaults to the records' summed usage."""
    expires_in: timedelta | None = None
    """Time left to live, kept as is; default: ``CHATMEMORY_TTL`` after ``updated``."""
    kind: str = "session"
    """"session", or "thread": a LangGraph thread's messages, which
    :func:`chatmemory.langgraph.restore_thread` writes (not this module)."""


@dataclass(slots=True)
class ImportProgress:
    """What an import did so far (handed to its ``progress`` callback per batch)."""

    seen: int = 0
    """Sessions read."""
    written: int = 0
    """Sessions written."""
    messages: int = 0
    """Messages written."""
    expired: int = 0
    """Sessions skipped because their time to live had run out."""

    @property
    def skipped(self) -> int:
        """Sessions left alone because they existed already (or had expired)."""
        return self.seen - self.written


_Batch = tuple[list[str], list[Any], int]


def _batches(
    sessions: Iterable[ImportedSession],
    batch_size: int,
    max_records: int,
    replace: bool,
    done: ImportProgress,
) -> Iterator[_Batch]:
    ttl = ttl_ms()
    now = now_ms()
    cap = conf.MAX_MESSAGES or 0
    prefix = conf.KEY_PREFIX
    sessions_key, ids_key = keys.sessions_key(), keys.ids_key()
    mode = "replace" if replace else "skip"
    script_keys: list[str] = [sessions_key, ids_key]
    args: list[Any] = [mode]
    seen = records_in_batch = 0
    for session in sessions:
        seen += 1
        session_id = keys.validate_session_id(session.session_id)
        updated = now if session.updated is None else ms(session.updated)
        created = updated if session.created is None else ms(session.created)
        if session.expires_in is not None:
            left = max(int(session.expires_in.total_seconds() * 1000), 0)
            if left <= 0:
                done.expired += 1
                continue
        else:
            left = updated + ttl - now if ttl else 0
            if ttl and left <= 0:
                done.expired += 1
                continue
        records = list(session.records)
        if cap:
            records = records[-cap:]
        title = (
            title_from_records(records)
            if session.title is None
            else shorten(session.title, TITLE_LENGTH)
        )
        usage = usage_of_records(records) if session.usage is None else session.usage
        owner = "" if session.owner is None else str(session.owner)
        script_keys += (
            keys.messages_key_in(prefix, session_id),
            keys.meta_key_in(prefix, session_id),
            keys.owner_index_key_in(prefix, owner),
        )
        args += (session_id, created, updated, title, owner, left, *usage)
        args.append(len(records))
        args += encode_records(records)
        records_in_batch += len(records)
        if (len(script_keys) - 2) // 3 >= batch_size or records_in_batch >= max_records:
            yield script_keys, args, seen
            script_keys, args = [sessions_key, ids_key], [mode]
            seen = records_in_batch = 0
    if len(args) > 1 or seen:
        yield script_keys, args, seen


def import_sessions_op(
    sessions: Iterable[ImportedSession],
    batch_size: int = 1000,
    *,
    replace: bool = True,
    max_records: int = 20_000,
    progress: Callable[[ImportProgress], None] | None = None,
) -> Operation[ImportProgress]:
    """Write whole sessions in batches; return what was done.

    Each session replaces any session of the same id (``replace=False``: an
    existing session is left alone, so a rerun of an interrupted import only
    writes what is missing); the owner index of a replaced session's former
    owner is not cleaned. The keys and indexes are the ones ``append_records``
    writes (the messages are cut to ``CHATMEMORY_MAX_MESSAGES``); a session
    expires ``expires_in`` from now when that is given, else TTL after its last
    activity (skipped when that is past). A batch holds at most
    ``batch_size`` sessions, and stops taking sessions once it holds
    ``max_records`` messages; each is one script call (atomic, one round
    trip); the import as a whole is not atomic. ``sessions`` is read lazily,
    one batch at a time.
    """
    done = ImportProgress()
    for script_keys, args, seen in _batches(
        sessions, batch_size, max_records, replace, done
    ):
        done.seen += seen
        if len(script_keys) > 2:
            if is_cluster():
                written, messages = yield from _cluster_import(script_keys, args)
            else:
                written, messages = yield Eval("import", script_keys, args)
            done.written += int(written)
            done.messages += int(messages)
        if progress is not None:
            progress(done)
    return done


def _cluster_import(
    script_keys: list[str], args: list[Any]
) -> Operation[tuple[int, int]]:
    """import.lua's batch on Redis Cluster, where its keys span many slots.

    The same writes as plain commands in one pipeline (each routed to its
    key's slot): each session's keys, then the index entries. Not atomic per
    session, as the import as a whole is not; a rerun repairs a cut one.
    """
    replace = args[0] == "replace"
    sessions: list[tuple[list[str], list[Any], list[Any]]] = []
    i, k = 1, 2
    while i < len(args):
        fields = args[i : i + 10]
        count = int(fields[9])
        sessions.append((script_keys[k : k + 3], fields, args[i + 10 : i + 10 + count]))
        i += 10 + count
        k += 3
    if not replace:
        exists = yield Batch([("EXISTS", names[1]) for names, _, _ in sessions])
        sessions = [s for s, there in zip(sessions, exists, strict=True) if not there]
    commands: list[tuple[Any, ...]] = []
    adds: list[_IndexEntry] = []
    messages = 0
    for (mkey, hkey, okey), fields, records in sessions:
        sid, created, updated, title, owner, left, tin, tout, tall, _ = fields
        commands.append(("DEL", mkey, hkey))
        for start in range(0, len(records), 1000):
            commands.append(("RPUSH", mkey, *records[start : start + 1000]))
        meta: list[Any] = ["created", created, "updated", updated]
        meta += ["count", len(records), "title", title]
        if owner:
            meta += ["owner", owner]
        if tin or tout or tall:
            meta += ["input_tokens", tin, "output_tokens", tout, "total_tokens", tall]
        commands.append(("HSET", hkey, *meta))
        if left:
            if records:
                commands.append(("PEXPIRE", mkey, left))
            commands.append(("PEXPIRE", hkey, left))
        ttl = int(left)
        adds += (
            (keys.sessions_key(), "", updated, sid, ttl),
            (keys.ids_key(), "", 0, sid, ttl),
            (okey, "", updated, sid, ttl),
        )
        messages += len(records)
    commands += _index_adds(adds)
    if commands:
        yield Batch(commands)
    return len(sessions), messages


def existing_sessions_op(session_ids: Sequence[str]) -> Operation[list[bool]]:
    """Whether each session exists, in one round trip."""
    if not session_ids:
        return []
    replies = yield Batch([("EXISTS", keys.meta_key(sid)) for sid in session_ids])
    return [bool(reply) for reply in replies]


def delete_owner_sessions_op(
    owner: str,
    before: datetime | None = None,
    batch: int = 200,
    progress: Callable[[int], None] | None = None,
) -> Operation[int]:
    """Delete one owner's sessions (last active before ``before``, if given).

    Each session goes as :func:`~.operations.delete_session_op` deletes it;
    returns how many existed. Safe to rerun: what is gone stays gone.
    ``progress`` (if any) is called with the count so far after each batch.
    """
    index = keys.owner_key(owner)
    high: int | str = "+inf" if before is None else f"({ms(before)}"
    deleted = 0
    while True:
        ids = yield Command(("ZRANGEBYSCORE", index, "-inf", high, "LIMIT", 0, batch))
        if not ids:
            return deleted
        for raw in ids:
            deleted += bool((yield from delete_session_op(raw.decode())))
        # A session whose metadata vanished keeps its owner entry: drop it here.
        yield Command(("ZREM", index, *ids))
        if progress is not None:
            progress(deleted)


def owners_op(batch: int = 1000) -> Operation[list[str]]:
    """Every owner id that has an owner index (SCAN: proportional to the keys)."""
    # Scan, not a SCAN command: on Redis Cluster each primary has its keys.
    found = yield Scan(keys.scan_pattern("owner"), batch)
    owners = {keys.owner_from_key(key.decode()) for key in found}
    return sorted(owner for owner in owners if owner is not None)


def rename_owner_op(old: str, new: str, batch: int = 200) -> Operation[int]:
    """Move every session of owner ``old`` to owner ``new``; return how many.

    Per session: the metadata first (a script: only if it still names
    ``old``), then the two owner indexes. Safe to rerun after an interruption.
    """
    old_index, new_index = keys.owner_key(old), keys.owner_key(new)
    moved = 0
    while True:
        pairs = yield Command(("ZRANGE", old_index, 0, batch - 1, "WITHSCORES"))
        if not pairs:
            return moved
        for raw, score in pairs:
            session_id = raw.decode()
            ttl = yield Eval("reown", [keys.meta_key(session_id)], [old, new])
            if ttl >= 0:
                moved += 1
                yield Eval("index_add", [new_index], [ttl, 0, score, session_id])
            yield Command(("ZREM", old_index, session_id))
