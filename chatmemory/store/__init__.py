"""All of chatmemory's Redis I/O: keys, (de)serialisation, writes, reads, indexes.

Nothing else in chatmemory talks to Redis. ``from chatmemory import store`` is
the public face; the package's modules are:

- :mod:`.keys`: every key name (the data model is documented there);
- :mod:`.codec`: a record's stored bytes;
- ``lua/*.lua`` and :mod:`.scripts`: the Lua scripts, every key they touch
  declared in KEYS;
- :mod:`.client`: the sync and async clients of the CACHES alias;
- :mod:`.operations`: each operation written once, run by :func:`run` (sync)
  and :func:`arun` (async); the functions below are those two entry points;
- :mod:`.maintenance`: reindex and import;
- :mod:`.diagnostics`: server facts, permission probes, the consistency check;
- :mod:`.turns`: rewriting a session's last turn, and a stopped reply cut to
  what its page showed.

Every write is one Lua script, so it is atomic and one round trip (on Redis
Cluster the index updates, which live in other slots, follow in the same
call as a second, idempotent step). Messages cross this package as plain
``dict`` records, so it does not import LangChain.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime

from . import locks as _locks
from . import operations as _ops
from .client import aclose_clients
from .client import reset_async_clients as _reset_async_clients
from .codec import (
    TITLE_LENGTH,
    EncodedRecord,
    Record,
    UnreadableEntry,
    decode_records,
    encode_exact,
    encode_exact_record,
    encode_record,
    shorten,
    title_from_records,
)
from .diagnostics import (
    PROBLEMS,
    ConsistencyReport,
    Finding,
    ServerFacts,
    check_consistency_op,
    findings,
    server_facts_op,
)
from .keys import (
    ids_key,
    messages_key,
    meta_key,
    no_owner_key,
    owner_key,
    owner_key_prefix,
    sessions_key,
    turn_lock_key,
    validate_session_id,
    write_ids_key,
)
from .maintenance import (
    ImportedSession,
    ImportProgress,
    ReindexProgress,
    delete_owner_sessions_op,
    existing_sessions_op,
    import_sessions_op,
    owners_op,
    rebuild_indexes_op,
    rename_owner_op,
)
from .operations import SessionInfo, SessionPage, Usage, arun, day_of, new_write_id, run
from .quota import (
    Admission,
    Limits,
    admit_turn_op,
    get_session_and_admit_op,
    release_turn_op,
)
from .search import TitleMatches, search_titles_op, title_matches, title_words
from .turns import (
    TURN_FIELD,
    Snapshot,
    StopResult,
    apply_stop_op,
    note_stop_op,
    read_snapshot_op,
    stop_note_op,
    validate_turn_id,
)
from .usage import (
    BY_DAY,
    BY_TOTAL,
    UsageCursor,
    UsagePage,
    delete_owner_usage_op,
    usage_page_op,
)


def read_records(session_id: str) -> list[Record | UnreadableEntry]:
    """Every message record of the session, oldest first. One round trip."""
    return run(_ops.read_records_op(session_id))


async def aread_records(session_id: str) -> list[Record | UnreadableEntry]:
    """Async :func:`read_records`."""
    return await arun(_ops.read_records_op(session_id))


def read_tail(
    session_id: str, count: int
) -> tuple[list[Record | UnreadableEntry], int]:
    """The session's last ``count`` records, oldest first, and its length.

    One round trip whose cost follows ``count``, not the session's length
    (a chat turn reads only what its prompt can use).
    """
    return run(_ops.read_tail_op(session_id, count))


async def aread_tail(
    session_id: str, count: int
) -> tuple[list[Record | UnreadableEntry], int]:
    """Async :func:`read_tail`."""
    return await arun(_ops.read_tail_op(session_id, count))


def append_records(
    session_id: str,
    records: Sequence[Record],
    *,
    owner: str | None = None,
    write_id: str | None = None,
    must_exist: bool = False,
) -> int:
    """Append records atomically, in one round trip; return the session's count.

    Also trims to ``CHATMEMORY_MAX_MESSAGES`` (never leaving a history that
    starts inside a turn), sets the metadata (the title and owner only if not
    set yet), restarts the TTL and updates the indexes.

    A write is applied at most once per ``write_id`` (see :func:`new_write_id`):
    after a :class:`~chatmemory.exceptions.StoreTimeout` the same call, with
    the same id, is safe to repeat. Raises
    :class:`~chatmemory.exceptions.OwnerMismatch` (writing nothing) when
    ``owner`` is given and the session belongs to another owner, and
    :class:`~chatmemory.exceptions.SessionNotFound` (writing nothing) when
    ``must_exist`` and the session does not exist (deleted meanwhile).
    """
    return run(_ops.append_records_op(session_id, records, owner, write_id, must_exist))


async def aappend_records(
    session_id: str,
    records: Sequence[Record],
    *,
    owner: str | None = None,
    write_id: str | None = None,
    must_exist: bool = False,
) -> int:
    """Async :func:`append_records`."""
    return await arun(
        _ops.append_records_op(session_id, records, owner, write_id, must_exist)
    )


def read_snapshot(session_id: str, count: int = 0) -> Snapshot:
    """The session's last ``count`` entries (0: all), decoded and as stored,
    with its length (to rewrite its last turn)."""
    return run(read_snapshot_op(session_id, count))


async def aread_snapshot(session_id: str, count: int = 0) -> Snapshot:
    """Async :func:`read_snapshot`."""
    return await arun(read_snapshot_op(session_id, count))


def replace_last_records(
    session_id: str,
    snapshot: Snapshot,
    count: int,
    records: Sequence[Record],
    *,
    owner: str | None = None,
    write_id: str | None = None,
) -> int:
    """Replace the last ``count`` entries of ``snapshot`` with ``records``.

    One script, so atomic and one round trip: it takes the old entries off and
    appends the new ones (with the metadata, TTL and indexes of
    :func:`append_records`) only if the session is still as ``snapshot`` read
    it; else it writes nothing and raises
    :class:`~chatmemory.exceptions.SessionChanged`. Returns the session's count.
    Applied at most once per ``write_id``, like :func:`append_records`.
    """
    return run(
        _ops.append_records_op(
            session_id, records, owner, write_id, replace=snapshot.tail(count)
        )
    )


async def areplace_last_records(
    session_id: str,
    snapshot: Snapshot,
    count: int,
    records: Sequence[Record],
    *,
    owner: str | None = None,
    write_id: str | None = None,
) -> int:
    """Async :func:`replace_last_records`."""
    return await arun(
        _ops.append_records_op(
            session_id, records, owner, write_id, replace=snapshot.tail(count)
        )
    )


def note_stop(session_id: str, turn: str, shown: str) -> StopResult:
    """The page stopped turn ``turn`` showing ``shown``: save the reply as that.

    Cuts the saved reply now if it is there ("cut", or "kept" when it is no
    longer than ``shown``), and leaves the text for :func:`apply_stop`
    otherwise ("missing").
    """
    return run(note_stop_op(session_id, turn, shown))


async def anote_stop(session_id: str, turn: str, shown: str) -> StopResult:
    """Async :func:`note_stop`."""
    return await arun(note_stop_op(session_id, turn, shown))


def stop_note(session_id: str, turn: str) -> str | None:
    """The text the page showed when it stopped turn ``turn``, if it said."""
    return run(stop_note_op(session_id, turn))


async def astop_note(session_id: str, turn: str) -> str | None:
    """Async :func:`stop_note`."""
    return await arun(stop_note_op(session_id, turn))


def apply_stop(session_id: str, turn: str) -> StopResult:
    """After saving turn ``turn``'s stopped reply: cut it to what the page showed."""
    return run(apply_stop_op(session_id, turn))


async def aapply_stop(session_id: str, turn: str) -> StopResult:
    """Async :func:`apply_stop`."""
    return await arun(apply_stop_op(session_id, turn))


def create_session(
    session_id: str, *, owner: str | None = None, title: str = ""
) -> bool:
    """Create an empty session; False if it exists already."""
    return run(_ops.create_session_op(session_id, owner, title))


async def acreate_session(
    session_id: str, *, owner: str | None = None, title: str = ""
) -> bool:
    """Async :func:`create_session`."""
    return await arun(_ops.create_session_op(session_id, owner, title))


def set_title(session_id: str, title: str) -> bool:
    """Rename a session; False if it does not exist."""
    return run(_ops.set_title_op(session_id, title))


async def aset_title(session_id: str, title: str) -> bool:
    """Async :func:`set_title`."""
    return await arun(_ops.set_title_op(session_id, title))


def lock_turn(session_id: str, token: str, *, seconds: float) -> bool:
    """Take the session's turn lock for ``seconds``; False if a turn holds it."""
    return run(_locks.lock_turn_op(session_id, token, seconds))


async def alock_turn(session_id: str, token: str, *, seconds: float) -> bool:
    """Async :func:`lock_turn`."""
    return await arun(_locks.lock_turn_op(session_id, token, seconds))


def _releasing(admission: Admission | None) -> tuple[str, str] | None:
    if admission is None or not admission.holds_stream:
        return None
    return admission.owner, admission.turn_id


def unlock_turn(
    session_id: str, token: str, *, release: Admission | None = None
) -> bool:
    """Release the turn lock ``token`` holds; False if it had expired.

    With ``release``, the admission's stream slot is given back in the same
    round trip (see :func:`release_turn`).
    """
    return run(_locks.unlock_turn_op(session_id, token, _releasing(release)))


async def aunlock_turn(
    session_id: str, token: str, *, release: Admission | None = None
) -> bool:
    """Async :func:`unlock_turn`."""
    return await arun(_locks.unlock_turn_op(session_id, token, _releasing(release)))


def delete_session(session_id: str) -> bool:
    """Delete the session's messages, metadata and index entries; False if none."""
    return run(_ops.delete_session_op(session_id))


async def adelete_session(session_id: str) -> bool:
    """Async :func:`delete_session`."""
    return await arun(_ops.delete_session_op(session_id))


def get_session(session_id: str) -> SessionInfo | None:
    """The session's metadata, or None when it does not exist."""
    return run(_ops.get_session_op(session_id))


async def aget_session(session_id: str) -> SessionInfo | None:
    """Async :func:`get_session`."""
    return await arun(_ops.get_session_op(session_id))


def get_sessions(session_ids: Sequence[str]) -> list[SessionInfo]:
    """The metadata of existing sessions among ``session_ids``, in that order.

    One round trip. Ids whose metadata vanished (expired, deleted behind our
    back) are dropped here and removed from the indexes.
    """
    return run(_ops.get_sessions_op(session_ids))


async def aget_sessions(session_ids: Sequence[str]) -> list[SessionInfo]:
    """Async :func:`get_sessions`."""
    return await arun(_ops.get_sessions_op(session_ids))


def list_sessions(
    *,
    owner: str | None = None,
    offset: int = 0,
    limit: int = 25,
    active_since: datetime | None = None,
    ownerless: bool = False,
) -> SessionPage:
    """Sessions by last activity, newest first: all of them, one owner's, or
    with ``ownerless=True`` those without an owner (from their own index).

    Costs two round trips and work proportional to ``limit``, whatever the
    number of sessions (plus removing entries that expired since last time).
    """
    return run(_ops.list_sessions_op(owner, offset, limit, active_since, ownerless))


async def alist_sessions(
    *,
    owner: str | None = None,
    offset: int = 0,
    limit: int = 25,
    active_since: datetime | None = None,
    ownerless: bool = False,
) -> SessionPage:
    """Async :func:`list_sessions`."""
    return await arun(
        _ops.list_sessions_op(owner, offset, limit, active_since, ownerless)
    )


def search_session_ids(prefix: str, *, offset: int = 0, limit: int = 25) -> SessionPage:
    """Sessions whose id starts with ``prefix``, in id order.

    Uses the lexicographic index: one round trip for the page and its count
    (ZLEXCOUNT), O(log N + limit). ``total`` counts every session with that
    prefix, less the expired ones met on this page.
    """
    return run(_ops.search_session_ids_op(prefix, offset, limit))


async def asearch_session_ids(
    prefix: str, *, offset: int = 0, limit: int = 25
) -> SessionPage:
    """Async :func:`search_session_ids`."""
    return await arun(_ops.search_session_ids_op(prefix, offset, limit))


def read_session(
    session_id: str,
) -> tuple[SessionInfo | None, list[Record | UnreadableEntry]]:
    """The session's metadata and every record, in one round trip.

    Unlike :func:`read_records` it never restarts the TTL: looking at a
    session in the admin must not keep it alive. The metadata is None when the
    session does not exist.
    """
    return run(_ops.read_session_op(session_id))


async def aread_session(
    session_id: str,
) -> tuple[SessionInfo | None, list[Record | UnreadableEntry]]:
    """Async :func:`read_session`."""
    return await arun(_ops.read_session_op(session_id))


def read_session_range(
    session_id: str, offset: int, limit: int
) -> tuple[SessionInfo | None, int, list[Record | UnreadableEntry]]:
    """The session's metadata, its message list's length, and up to ``limit``
    records from position ``offset``, in one round trip.

    A page of a long session costs what the page holds, whatever the
    session's length. It never restarts the TTL. The metadata is None when the
    session does not exist.
    """
    return run(_ops.read_session_range_op(session_id, offset, limit))


async def aread_session_range(
    session_id: str, offset: int, limit: int
) -> tuple[SessionInfo | None, int, list[Record | UnreadableEntry]]:
    """Async :func:`read_session_range`."""
    return await arun(_ops.read_session_range_op(session_id, offset, limit))


def count_owner_sessions(owners: Sequence[str]) -> dict[str, int]:
    """How many sessions each owner's index holds, in one round trip.

    The counts may include sessions that expired since their owner's listing
    last ran; owners with none are left out.
    """
    return run(_ops.count_owner_sessions_op(owners))


async def acount_owner_sessions(owners: Sequence[str]) -> dict[str, int]:
    """Async :func:`count_owner_sessions`."""
    return await arun(_ops.count_owner_sessions_op(owners))


def add_usage(owner: str, usage: tuple[int, int, int], write_id: str) -> None:
    """Count ``(input, output, total)`` tokens spent outside a history write (an
    agent turn's, saved in a LangGraph thread) in the owner's usage today, at
    most once per write id."""
    run(_ops.add_usage_op(owner, usage, write_id))


async def aadd_usage(owner: str, usage: tuple[int, int, int], write_id: str) -> None:
    """Async :func:`add_usage`."""
    await arun(_ops.add_usage_op(owner, usage, write_id))


def owner_usage(owner: str, days: Sequence[str]) -> list[Usage]:
    """One owner's token usage on each UTC day of ``days`` (``YYYY-MM-DD``)."""
    return run(_ops.owner_usage_op(owner, days))


async def aowner_usage(owner: str, days: Sequence[str]) -> list[Usage]:
    """Async :func:`owner_usage`."""
    return await arun(_ops.owner_usage_op(owner, days))


def day_usage(day: str, *, offset: int = 0, limit: int = 25) -> tuple[list[Usage], int]:
    """Owners' token usage on one UTC day, most first: a page and the owner count.

    Costs work proportional to ``limit``. Usage is counted for sessions with
    an owner; it is kept ``CHATMEMORY_USAGE_DAYS`` days.
    """
    return run(_ops.day_usage_op(day, offset, limit))


async def aday_usage(
    day: str, *, offset: int = 0, limit: int = 25
) -> tuple[list[Usage], int]:
    """Async :func:`day_usage`."""
    return await arun(_ops.day_usage_op(day, offset, limit))


def search_titles(
    words: list[str],
    *,
    owner: str | None = None,
    ownerless: bool = False,
    active_since: datetime | None = None,
    start: int = 0,
    size: int = 5000,
) -> TitleMatches:
    """The sessions whose titles hold every word (see :func:`title_words`),
    among ``size`` of an activity index's entries from ``start``, most recent
    first: a bounded search whose result says what it covered
    (see :mod:`chatmemory.store.search`).
    """
    return run(
        search_titles_op(
            words,
            owner=owner,
            ownerless=ownerless,
            active_since=active_since,
            start=start,
            size=size,
        )
    )


def usage_page(
    days: Sequence[str],
    *,
    by: str = BY_TOTAL,
    after: UsageCursor | None = None,
    limit: int = 50,
) -> UsagePage:
    """One page of (owner, day) token usage rows over ``days``, most tokens
    first (``by=BY_TOTAL``) or newest day first (``BY_DAY``), after ``after``.

    Costs O(days x limit), whatever the number of owners and the page's depth;
    the count is exact (see :mod:`chatmemory.store.usage`).
    """
    return run(usage_page_op(days, by=by, after=after, limit=limit))


async def ausage_page(
    days: Sequence[str],
    *,
    by: str = BY_TOTAL,
    after: UsageCursor | None = None,
    limit: int = 50,
) -> UsagePage:
    """Async :func:`usage_page`."""
    return await arun(usage_page_op(days, by=by, after=after, limit=limit))


def admit_turn(owner: str, limits: Limits | None = None) -> Admission:
    """Check the owner's turn limits and count the turn if they allow it.

    One atomic script: turns per minute, open streams, tokens today
    (``limits`` defaults to the settings). An admitted turn holds a stream
    slot: :func:`release_turn` it when the reply ends.
    """
    return run(
        admit_turn_op(owner, Limits.from_settings() if limits is None else limits)
    )


async def aadmit_turn(owner: str, limits: Limits | None = None) -> Admission:
    """Async :func:`admit_turn`."""
    return await arun(
        admit_turn_op(owner, Limits.from_settings() if limits is None else limits)
    )


def get_session_and_admit(
    session_id: str, owner: str, limits: Limits | None = None
) -> tuple[SessionInfo | None, Admission]:
    """:func:`get_session` and :func:`admit_turn` in one round trip.

    The turn is counted (when the limits allow it) whatever the session turns
    out to be: :func:`release_turn` it when it does not run.
    """
    return run(
        get_session_and_admit_op(
            session_id, owner, Limits.from_settings() if limits is None else limits
        )
    )


async def aget_session_and_admit(
    session_id: str, owner: str, limits: Limits | None = None
) -> tuple[SessionInfo | None, Admission]:
    """Async :func:`get_session_and_admit`."""
    return await arun(
        get_session_and_admit_op(
            session_id, owner, Limits.from_settings() if limits is None else limits
        )
    )


def release_turn(owner: str, admission: Admission) -> None:
    """Give back the stream slot of an admitted turn."""
    if admission.holds_stream:
        run(release_turn_op(owner, admission.turn_id))


async def arelease_turn(owner: str, admission: Admission) -> None:
    """Async :func:`release_turn`."""
    if admission.holds_stream:
        await arun(release_turn_op(owner, admission.turn_id))


def check_connection() -> None:
    """Ping the alias's Redis; raise StoreUnavailable when it does not answer."""
    run(_ops.ping_op())


async def acheck_connection() -> None:
    """Async :func:`check_connection`."""
    await arun(_ops.ping_op())


def rebuild_indexes(
    *, batch: int = 1000, progress: ReindexProgress | None = None
) -> int:
    """Rebuild every index from the sessions' metadata; return the sessions found.

    The indexes are derived data; use this after restoring a backup, or if
    something wrote session keys without going through chatmemory. It scans the
    whole database, so its cost is proportional to the number of keys, but it
    is safe while writers are active (no session ever leaves an index it
    belongs in) and runs in steps of a few hundred sessions, so Redis is never
    blocked for more than a few milliseconds (see
    :func:`~chatmemory.store.maintenance.rebuild_indexes_op`). ``progress``
    (if any) is told how far it is (:data:`.maintenance.ReindexProgress`).
    """
    return run(rebuild_indexes_op(batch, progress))


async def arebuild_indexes(*, batch: int = 1000) -> int:
    """Async :func:`rebuild_indexes`."""
    return await arun(rebuild_indexes_op(batch))


def import_sessions(
    sessions: Iterable[ImportedSession],
    *,
    batch_size: int = 1000,
    replace: bool = True,
    progress: Callable[[ImportProgress], None] | None = None,
) -> int:
    """Write whole sessions in batches; return how many were written.

    See :func:`chatmemory.store.maintenance.import_sessions_op`;
    :func:`import_sessions_report` returns the whole report.
    """
    return import_sessions_report(
        sessions, batch_size=batch_size, replace=replace, progress=progress
    ).written


def import_sessions_report(
    sessions: Iterable[ImportedSession],
    *,
    batch_size: int = 1000,
    replace: bool = True,
    progress: Callable[[ImportProgress], None] | None = None,
) -> ImportProgress:
    """:func:`import_sessions`, returning what was read, written and skipped."""
    return run(
        import_sessions_op(sessions, batch_size, replace=replace, progress=progress)
    )


async def aimport_sessions(
    sessions: Iterable[ImportedSession],
    *,
    batch_size: int = 1000,
    replace: bool = True,
) -> int:
    """Async :func:`import_sessions`."""
    done = await arun(import_sessions_op(sessions, batch_size, replace=replace))
    return done.written


def delete_owner_sessions(
    owner: str,
    *,
    before: datetime | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Delete one owner's sessions (only those last active before ``before``).

    Returns how many were deleted; safe to rerun. ``progress`` (if any) is
    called with the count so far after each batch.
    """
    return run(delete_owner_sessions_op(owner, before, progress=progress))


async def adelete_owner_sessions(owner: str, *, before: datetime | None = None) -> int:
    """Async :func:`delete_owner_sessions`."""
    return await arun(delete_owner_sessions_op(owner, before))


def delete_owner_usage(owner: str) -> int:
    """Delete one owner's token usage and limit state (turns, streams).

    For a deleted user; returns the keys deleted (see
    :func:`.usage.delete_owner_usage_op`).
    """
    return run(delete_owner_usage_op(owner))


def rename_owner(old: str, new: str) -> int:
    """Move every session of owner ``old`` to owner ``new``; return how many."""
    return run(rename_owner_op(old, new))


def owners() -> list[str]:
    """Every owner id that has sessions in the index (scans the key space)."""
    return run(owners_op())


def existing_sessions(session_ids: Sequence[str]) -> list[bool]:
    """Whether each of the sessions exists, in one round trip."""
    return run(existing_sessions_op(session_ids))


def server_facts() -> ServerFacts:
    """What the server says about itself (INFO) and which needed commands it refuses.

    Writes and deletes one scratch key (see :func:`.keys.probe_key`).
    """
    return run(server_facts_op())


async def aserver_facts() -> ServerFacts:
    """Async :func:`server_facts`."""
    return await arun(server_facts_op())


def check_consistency(
    *,
    batch: int = 1000,
    sample: int = 20,
    progress: Callable[[int, int], None] | None = None,
) -> ConsistencyReport:
    """Compare the indexes, the metadata and the message lists of every session.

    Proportional to the number of keys; no single command reads more than
    ``batch`` entries. ``progress`` (if any) is called with the sessions read
    so far and their total.
    """
    return run(check_consistency_op(batch, sample, progress))


async def acheck_consistency(
    *, batch: int = 1000, sample: int = 20
) -> ConsistencyReport:
    """Async :func:`check_consistency`."""
    return await arun(check_consistency_op(batch, sample))


__all__ = [
    "PROBLEMS",
    "TITLE_LENGTH",
    "ConsistencyReport",
    "Finding",
    "ServerFacts",
    "acheck_consistency",
    "aserver_facts",
    "check_consistency",
    "findings",
    "server_facts",
    "EncodedRecord",
    "Admission",
    "Limits",
    "aadmit_turn",
    "aget_session_and_admit",
    "get_session_and_admit",
    "adelete_owner_sessions",
    "delete_owner_sessions",
    "delete_owner_usage",
    "owners",
    "rename_owner",
    "admit_turn",
    "arelease_turn",
    "release_turn",
    "ImportProgress",
    "ReindexProgress",
    "TURN_FIELD",
    "ImportedSession",
    "Record",
    "SessionInfo",
    "SessionPage",
    "Snapshot",
    "StopResult",
    "UnreadableEntry",
    "Usage",
    "TitleMatches",
    "search_titles",
    "title_matches",
    "title_words",
    "BY_DAY",
    "BY_TOTAL",
    "UsageCursor",
    "UsagePage",
    "ausage_page",
    "usage_page",
    "aappend_records",
    "aday_usage",
    "aowner_usage",
    "aapply_stop",
    "aappend_records",
    "anote_stop",
    "astop_note",
    "apply_stop",
    "areplace_last_records",
    "aread_snapshot",
    "note_stop",
    "stop_note",
    "read_snapshot",
    "replace_last_records",
    "validate_turn_id",
    "acheck_connection",
    "aclose_clients",
    "acount_owner_sessions",
    "acreate_session",
    "adelete_session",
    "aget_session",
    "aget_sessions",
    "aimport_sessions",
    "alock_turn",
    "alist_sessions",
    "append_records",
    "aread_records",
    "aread_session",
    "aread_tail",
    "aread_session_range",
    "arebuild_indexes",
    "asearch_session_ids",
    "aset_title",
    "aunlock_turn",
    "check_connection",
    "count_owner_sessions",
    "create_session",
    "day_of",
    "day_usage",
    "decode_records",
    "delete_session",
    "encode_exact",
    "encode_exact_record",
    "encode_record",
    "existing_sessions",
    "get_session",
    "get_sessions",
    "ids_key",
    "import_sessions",
    "import_sessions_report",
    "list_sessions",
    "lock_turn",
    "messages_key",
    "meta_key",
    "new_write_id",
    "no_owner_key",
    "owner_key",
    "owner_key_prefix",
    "add_usage",
    "aadd_usage",
    "owner_usage",
    "read_records",
    "read_session",
    "read_tail",
    "read_session_range",
    "rebuild_indexes",
    "search_session_ids",
    "sessions_key",
    "turn_lock_key",
    "unlock_turn",
    "set_title",
    "shorten",
    "title_from_records",
    "validate_session_id",
    "write_ids_key",
    "_reset_async_clients",
]
